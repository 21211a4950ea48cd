"""Status derivation: the serving object's conditions (InferenceService, or LLMInferenceService and its pool) and the
route's Accepted condition become a phase.

Pure: dicts in (as read from the cluster), an ObservedStatus out. No Django, no kubernetes.
"""

from __future__ import annotations

import dataclasses
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


# ------------------------------------------------------------------------------------------------ llm-d mode

_LLMD_KEPT_CONDITIONS = (
    "Ready",
    "WorkloadsReady",
    "MainWorkloadReady",
    "PrefillWorkloadReady",
    "SchedulerWorkloadReady",
    "RouterReady",
    "PresetsCombined",
)


def standard_serving_ready(inference_service: dict[str, Any] | None) -> bool:
    """The InferenceService serves its current spec."""
    return _conditions(inference_service).get("Ready", {}).get("status") == "True" and _acted_on_latest(
        inference_service
    )


def _acted_on_latest(obj: dict[str, Any] | None) -> bool:
    generation = int(((obj or {}).get("metadata") or {}).get("generation") or 0)
    observed = int(((obj or {}).get("status") or {}).get("observedGeneration") or 0)
    return not (generation and observed and observed < generation)


def llmd_serving_ready(llm_inference_service: dict[str, Any] | None, inference_pool: dict[str, Any] | None) -> bool:
    """The LLMInferenceService's workloads and endpoint picker serve its current spec and its pool exists.

    Not its `Ready`: that rolls up InferencePoolReady, which KServe v0.20.0 sets True only for pools accepted by the
    gateways of HTTPRoutes it manages or references (router.go EvaluateInferencePoolConditions); the portal routes
    through an AIGatewayRoute only, so `Ready` can stay False ("WaitingForGateway") while the model serves. `Ready`
    True is taken as ready too (a controller that does account for the AI gateway)."""
    conditions = _conditions(llm_inference_service)
    if llm_inference_service is None or inference_pool is None or not _acted_on_latest(llm_inference_service):
        return False
    if conditions.get("Ready", {}).get("status") == "True":
        return True
    scheduler = conditions.get("SchedulerWorkloadReady", {}).get("status", "True")
    return conditions.get("WorkloadsReady", {}).get("status") == "True" and scheduler == "True"


def _pool_acceptance(inference_pool: dict[str, Any] | None) -> dict[str, Any] | None:
    """The pool's Accepted condition from its parents (the gateways that route to it): a refusal by any wins."""
    found: dict[str, Any] | None = None
    for parent in ((inference_pool or {}).get("status") or {}).get("parents") or []:
        for condition in parent.get("conditions") or []:
            if condition.get("type") == "Accepted" and (found is None or condition.get("status") == "False"):
                found = condition
    return found


def derive_llmd_status(
    *,
    llm_inference_service: dict[str, Any] | None,
    inference_pool: dict[str, Any] | None,
    route: dict[str, Any] | None,
    endpoint_base: str,
    served_model_name: str,
    ready_replicas: int = 0,
) -> ObservedStatus:
    """The llm-d mode's phase: Ready when the workloads serve, the pool exists (and no gateway refused it) and the
    AI gateway accepted the route; Failed when KServe cannot combine the service's presets (its spec is invalid);
    Degraded when it serves but a gateway refused the route or the pool."""
    service_conditions = _conditions(llm_inference_service)
    route_conditions = _conditions(route)
    conditions = [
        _condition_view("", service_conditions[name]) for name in _LLMD_KEPT_CONDITIONS if name in service_conditions
    ]
    pool_accepted = _pool_acceptance(inference_pool)
    if pool_accepted is not None:
        conditions.append(_condition_view("Pool", pool_accepted))
    accepted = route_conditions.get("Accepted")
    if accepted is not None:
        conditions.append(_condition_view("Route", accepted))
    kept = tuple(conditions)
    endpoint = f"{endpoint_base.rstrip('/')}/v1" if endpoint_base else ""
    if llm_inference_service is None:
        return ObservedStatus("Pending", kept, "waiting for the LLMInferenceService", "", 0)
    presets = service_conditions.get("PresetsCombined", {})
    if presets.get("status") == "False":
        message = f"{presets.get('reason', '')}: {presets.get('message', '')}".strip(": ")
        return ObservedStatus("Failed", kept, message or "KServe could not combine its presets", "", ready_replicas)
    if not _acted_on_latest(llm_inference_service):
        generation = (llm_inference_service.get("metadata") or {}).get("generation")
        return ObservedStatus(
            "Provisioning", kept, f"rolling out generation {generation} of the LLMInferenceService", "", ready_replicas
        )
    serving = llmd_serving_ready(llm_inference_service, inference_pool)
    refused = next(
        (item for item in (accepted, pool_accepted) if item is not None and item.get("status") == "False"), None
    )
    if serving and refused is not None:
        return ObservedStatus(
            "Degraded", kept, f"the gateway did not accept the route: {refused.get('message', '')}", "", ready_replicas
        )
    if serving and accepted is not None and accepted.get("status") == "True":
        message = f"serving '{served_model_name}' through the gateway (llm-d)"
        return ObservedStatus("Ready", kept, message, endpoint, ready_replicas)
    if serving:
        return ObservedStatus("Provisioning", kept, "waiting for the gateway route", "", ready_replicas)
    if inference_pool is None and service_conditions.get("WorkloadsReady", {}).get("status") == "True":
        return ObservedStatus("Provisioning", kept, "waiting for the InferencePool", "", ready_replicas)
    waiting = next(
        (
            service_conditions[name]
            for name in ("MainWorkloadReady", "PrefillWorkloadReady", "SchedulerWorkloadReady", "WorkloadsReady")
            if service_conditions.get(name, {}).get("status") == "False"
        ),
        {},
    )
    message = str(waiting.get("message") or waiting.get("reason") or "starting the model server")
    return ObservedStatus("Provisioning", kept, message, "", ready_replicas)


# ------------------------------------------------------------------------------------------------ Kueue

KUEUE_QUEUED_CONDITION = "KueueQuotaReserved"


def queued_by_kueue(status: ObservedStatus, workloads: list[dict[str, Any]]) -> ObservedStatus:
    """The status with what Kueue says of the deployment's pods: a Workload whose QuotaReserved is False is queued
    (Kueue v0.19.2 pkg/scheduler/scheduler.go requeueAndUpdate: reason Pending by default, the message names the
    flavor and the GPUs missing). A deployment that serves stays in its phase with the condition added; one that
    does not yet is Provisioning with Kueue's reason as its message."""
    queued = [
        condition
        for workload in workloads
        if (condition := _conditions(workload).get("QuotaReserved")) is not None and condition.get("status") == "False"
    ]
    if not queued:
        return status
    first = queued[0]
    view = _condition_view("", first) | {"type": KUEUE_QUEUED_CONDITION}
    waiting = f"{len(queued)} replica(s) queued by Kueue ({view['reason'] or 'Pending'}): {view['message']}".rstrip(
        ": "
    )
    conditions = (*status.conditions, view)
    if status.phase in ("Ready", "Degraded"):
        return dataclasses.replace(status, conditions=conditions, message=f"{status.message}; {waiting}")
    if status.phase == "Failed":
        return dataclasses.replace(status, conditions=conditions)
    return dataclasses.replace(status, phase="Provisioning", conditions=conditions, message=waiting)
