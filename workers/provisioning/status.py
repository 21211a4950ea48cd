"""Status derivation: the InferenceService's conditions and the route's Accepted condition become a phase.

Pure: dicts in (as read from the cluster), an ObservedStatus out. No Django, no kubernetes.
"""

from __future__ import annotations

from typing import Any

from portal.deployments.contracts import ObservedStatus

_KEPT_CONDITIONS = ("Ready", "PredictorReady", "IngressReady", "Stopped")


def _conditions(obj: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    if not obj:
        return {}
    return {
        str(item.get("type")): item
        for item in (obj.get("status") or {}).get("conditions") or []
        if isinstance(item, dict)
    }


def _condition_view(kind: str, condition: dict[str, Any]) -> dict[str, str]:
    return {
        "type": f"{kind}{condition.get('type')}" if kind else str(condition.get("type")),
        "status": str(condition.get("status", "Unknown")),
        "reason": str(condition.get("reason") or ""),
        "message": str(condition.get("message") or ""),
    }


def derive_status(
    *,
    inference_service: dict[str, Any] | None,
    route: dict[str, Any] | None,
    endpoint_base: str,
    served_model_name: str,
    ready_replicas: int = 0,
) -> ObservedStatus:
    """Provisioning until both the model serves and the gateway accepted its route; Failed on a load failure;
    Degraded when it was serving and lost readiness."""
    isvc_conditions = _conditions(inference_service)
    route_conditions = _conditions(route)
    conditions = [_condition_view("", isvc_conditions[name]) for name in _KEPT_CONDITIONS if name in isvc_conditions]
    accepted = route_conditions.get("Accepted")
    if accepted is not None:
        conditions.append(_condition_view("Route", accepted))
    status = (inference_service or {}).get("status") or {}
    model_status = status.get("modelStatus") or {}
    failure = model_status.get("lastFailureInfo") or {}
    ready = isvc_conditions.get("Ready", {}).get("status") == "True"
    route_ok = accepted is not None and accepted.get("status") == "True"
    replicas = ready_replicas
    endpoint = f"{endpoint_base.rstrip('/')}/v1" if endpoint_base else ""
    if inference_service is None:
        return ObservedStatus(
            phase="Pending",
            conditions=tuple(conditions),
            message="waiting for the InferenceService",
            endpoint="",
            observed_replicas=0,
        )
    if model_status.get("transitionStatus") in ("BlockedByFailedLoad", "InvalidSpec") or failure.get("reason"):
        message = f"{failure.get('reason', model_status.get('transitionStatus'))}: {failure.get('message', '')}".strip(
            ": "
        )
        return ObservedStatus(
            phase="Failed", conditions=tuple(conditions), message=message, endpoint="", observed_replicas=replicas
        )
    generation = int(((inference_service or {}).get("metadata") or {}).get("generation") or 0)
    observed = int(status.get("observedGeneration") or 0)
    if generation and observed and observed < generation:
        # KServe has not acted on the latest spec yet: its conditions describe the previous one.
        return ObservedStatus(
            phase="Provisioning",
            conditions=tuple(conditions),
            message=f"rolling out generation {generation} of the InferenceService",
            endpoint="",
            observed_replicas=replicas,
        )
    if ready and route_ok:
        return ObservedStatus(
            phase="Ready",
            conditions=tuple(conditions),
            message=f"serving '{served_model_name}' through the gateway",
            endpoint=endpoint,
            observed_replicas=replicas,
        )
    if ready and accepted is not None and accepted.get("status") == "False":
        return ObservedStatus(
            phase="Degraded",
            conditions=tuple(conditions),
            message=f"the gateway did not accept the route: {accepted.get('message', '')}",
            endpoint="",
            observed_replicas=replicas,
        )
    waiting = isvc_conditions.get("Ready", {})
    message = str(
        waiting.get("message")
        or waiting.get("reason")
        or ("waiting for the gateway route" if ready else "starting the model server")
    )
    return ObservedStatus(
        phase="Provisioning", conditions=tuple(conditions), message=message, endpoint="", observed_replicas=replicas
    )
