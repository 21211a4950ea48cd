"""Simulated controllers: just enough life for the demo and the tests to watch deployments become Ready.

- KServe: an InferenceService gets its predictor Deployment (Standard/raw mode), whose pods pass ResourceQuota
  admission (a team over its GPU quota stays not-Ready with the API server's message) and Kueue's webhooks, and
  turn Ready `ready_delay` seconds after they start (the model's load); then `Ready` with a URL. A storage URI containing `fail-load` ends in `BlockedByFailedLoad`, as a model that
  cannot load does. The annotation `serving.kserve.io/stop: "true"` removes the pods and reports `Stopped`.
- Envoy AI Gateway: an AIGatewayRoute gets `Accepted` for its generation; one naming an InferencePool in another
  namespace without a ReferenceGrant there is refused (`NotAccepted`, the AI Gateway's message).
- Garbage collection: predictor Pods whose InferenceService is gone are deleted.
- Namespaces being deleted are emptied, then removed.
- The llm-d mode, Kueue and the built-in controllers they need: workers.sandbox.controllers_llmd,
  controllers_kueue and controllers_apps (Deployments, pod start, the owner-reference garbage collector).

Status shapes follow shared/reference/serving-and-gateway.md sections 2 and 3.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from workers.sandbox.controllers_apps import AppsControllers, owner_reference, pod_ready
from workers.sandbox.controllers_kueue import KueueControllers, KueueSettings
from workers.sandbox.controllers_llmd import LlmdControllers
from workers.sandbox.gateway_config import StoreReader, pool_granted
from workers.sandbox.store import ApiError, Kind, Store, now_rfc3339

logger = logging.getLogger(__name__)

ISVC_GROUP = "serving.kserve.io"
ROUTE_GROUP = "aigateway.envoyproxy.io"
ISVC_LABEL = "serving.kserve.io/inferenceservice"
KSERVE_MANAGER = "kserve-controller"
GATEWAY_MANAGER = "envoy-ai-gateway-controller"
DOMAIN = "sandbox.local"


@dataclass
class ControllerSettings:
    ready_delay: float = 0.0  # seconds from a spec change until the model serves
    kueue: KueueSettings = field(default_factory=KueueSettings)


@dataclass
class _Seen:
    generation: int
    since: float


@dataclass
class Controllers:
    """Level-triggered like the real controllers, but an object already settled at its current resourceVersion
    (status as desired, pods as wanted) is skipped, as an informer would not requeue it: a step costs what changed.
    """

    store: Store
    settings: ControllerSettings = field(default_factory=ControllerSettings)
    _isvc_seen: dict[tuple[str, str], _Seen] = field(default_factory=dict)
    _settled: dict[tuple[str, str, str], str] = field(default_factory=dict)  # (plural, namespace, name) -> rv
    _live_isvcs: set[tuple[str, str]] = field(default_factory=set)
    apps: AppsControllers = field(init=False)
    llmd: LlmdControllers = field(init=False)
    kueue: KueueControllers = field(init=False)

    def __post_init__(self) -> None:
        self.store.listeners.append(self._on_event)
        self.apps = AppsControllers(self.store, ready_delay=self.settings.ready_delay)
        self.llmd = LlmdControllers(self.store)
        self.kueue = KueueControllers(self.store, self.settings.kueue)
        self.apps.pod_webhooks.append(self.kueue.pod_webhook)

    def _on_event(self, event: str, kind: Kind, obj: dict[str, Any]) -> None:
        # A pod coming or going unsettles the InferenceService that owns it (drift, deletions by hand).
        if kind.kind == "Pod":
            owner = (obj["metadata"].get("labels") or {}).get(ISVC_LABEL)
            if owner:
                self._settled.pop(("inferenceservices", obj["metadata"].get("namespace", ""), owner), None)

    def _kind(self, group: str, plural: str) -> Kind | None:
        return next((k for k in self.store.kinds.values() if k.group == group and k.plural == plural), None)

    def forget(self) -> None:
        self._isvc_seen.clear()
        self._settled.clear()
        self._live_isvcs.clear()
        self.apps.forget()
        self.llmd.forget()
        self.kueue.forget()

    def _changed(self, kind: Kind) -> tuple[set[tuple[str, str]], list[dict[str, Any]]]:
        """Every live (namespace, name) of a kind, and the objects not settled at their current version."""
        live: set[tuple[str, str]] = set()
        changed: list[dict[str, Any]] = []
        for namespace, name, version in self.store.versions(kind):
            live.add((namespace, name))
            if self._settled.get((kind.plural, namespace, name)) == version:
                continue
            with contextlib.suppress(ApiError):  # deleted since it was listed
                changed.append(self.store.get(kind, namespace, name))
        for key in list(self._settled):  # list() copies atomically; listeners run on the API server's threads
            if key[0] == kind.plural and (key[1], key[2]) not in live:
                self._settled.pop(key, None)
        return live, changed

    def _settle(self, kind: Kind, namespace: str, name: str) -> None:
        with contextlib.suppress(ApiError):
            version = self.store.get(kind, namespace, name)["metadata"]["resourceVersion"]
            self._settled[(kind.plural, namespace, name)] = version

    def step(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self.store.finish_namespace_deletions()
        isvc_kind = self._kind(ISVC_GROUP, "inferenceservices")
        if isvc_kind is not None:
            self._kserve_pass(isvc_kind, now)
            # The predictor Deployments' pods are the Deployment controller's; KServe reads them back in the same
            # step, as the real controllers, running side by side, would within moments.
            self.apps.step(now)
            live = self._kserve_pass(isvc_kind, now)
            self._collect_pods(self._live_isvcs - live)
            self._live_isvcs = live
            for key in [key for key in self._isvc_seen if key not in live]:
                del self._isvc_seen[key]
        route_kind = self._kind(ROUTE_GROUP, "aigatewayroutes")
        if route_kind is not None:
            _, routes = self._changed(route_kind)
            for route in routes:
                self._route(route_kind, route)
                if not _names_pool(route):  # a pool's grant can come later: such a route is re-checked each step
                    self._settle(route_kind, route["metadata"]["namespace"], route["metadata"]["name"])
        # KServe's llm-d controller, then Kueue admission, then the Deployments and pods (and the collector).
        self.llmd.step()
        self.kueue.step()
        self.apps.step(now)

    # ------------------------------------------------------------------ KServe

    def _kserve_pass(self, isvc_kind: Kind, now: float) -> set[tuple[str, str]]:
        live, changed = self._changed(isvc_kind)
        for isvc in changed:
            try:
                if self._inference_service(isvc_kind, isvc, now):
                    self._settle(isvc_kind, isvc["metadata"]["namespace"], isvc["metadata"]["name"])
            except ApiError as error:  # the object changed or vanished under us: next step sees it
                logger.debug("kserve step: %s", error.message)
        return live

    def _inference_service(self, kind: Kind, isvc: dict[str, Any], now: float) -> bool:
        """Drive one InferenceService a step; True when it has settled (nothing left to do until it changes)."""
        metadata = isvc["metadata"]
        namespace, name, generation = metadata["namespace"], metadata["name"], int(metadata.get("generation") or 1)
        seen = self._isvc_seen.get((namespace, name))
        if seen is None or seen.generation != generation:
            seen = self._isvc_seen[(namespace, name)] = _Seen(generation, now)
        predictor = (isvc.get("spec") or {}).get("predictor") or {}
        model = predictor.get("model") or {}
        stopped = str((metadata.get("annotations") or {}).get("serving.kserve.io/stop", "")).lower() == "true"
        status = isvc.get("status") or {}
        settled = True
        if str(model.get("storageUri", "")).find("fail-load") >= 0:
            desired = self._failed_status(generation, f"failed to load model from {model.get('storageUri')}")
        elif stopped:
            self._stop_predictor(namespace, name)
            desired = self._stopped_status(generation)
        else:
            replicas = max(int(predictor.get("minReplicas", 1) or 0), 1)
            try:
                error = self._predictor_deployment(isvc, predictor, replicas)
            except ApiError as refused:
                # KServe's update of the predictor Deployment was refused (Kueue's webhook on a queue-name change):
                # its reconcile fails with an InternalError event and the status stays as it was, observedGeneration
                # included (controller.go: "fails to reconcile component"), and it retries.
                logger.debug("kserve: predictor of %s/%s: %s", namespace, name, refused.message)
                return False
            ready = sum(1 for pod in self._pods(namespace, name) if pod_ready(pod))
            if error is not None:
                desired = self._progress_status(generation, status, "ReplicaFailure", error)
                settled = False  # quota may free up
            elif ready < replicas:
                # KServe propagates the predictor Deployment's Available condition (raw mode): pods Kueue still
                # holds (or still loading) leave it MinimumReplicasUnavailable.
                desired = self._progress_status(
                    generation, status, "MinimumReplicasUnavailable", "Deployment does not have minimum availability."
                )
                settled = False  # admission or the model's load moves it on
            else:
                desired = self._ready_status(generation, namespace, name, status)
        if _without_times(desired) != _without_times(status):
            self.store.update_status(kind, namespace, name, desired, manager=KSERVE_MANAGER)
        return settled

    def _pods(self, namespace: str, isvc_name: str) -> list[dict[str, Any]]:
        pod_kind = self.store.kinds[("", "v1", "pods")]
        listing = self.store.list(pod_kind, namespace, label_selector=f"{ISVC_LABEL}={isvc_name}")
        return list(listing["items"])

    def _predictor_deployment(self, isvc: dict[str, Any], predictor: dict[str, Any], replicas: int) -> str | None:
        """Create or update the predictor's Deployment, `<name>-predictor` (KServe Standard/raw mode: constants
        PredictorServiceName; reconcilers/deployment/deployment_reconciler.go createRawDefaultDeployment): its labels,
        and its pod template's, are the InferenceService's with KServe's own (components/predictor.go
        buildObjectMeta: Union of the runtime's, the InferenceService's and the predictor's labels, then its own),
        its selector `app: isvc.<name>-predictor`. An update sends the whole desired object (a dry-run update, then a
        two-way merge patch: checkDeploymentExist, Reconcile), so a label gone from the InferenceService goes from the
        Deployment too, and an admission webhook's refusal is raised (ApiError). The pods come from the Deployment
        (controllers_apps), through the pod webhooks (Kueue gates a pod with a queue name). Returns the pod
        creation failure the Deployment reports (ResourceQuota admission), or None."""
        metadata = isvc["metadata"]
        namespace, name = metadata["namespace"], metadata["name"]
        app = f"isvc.{name}-predictor"
        labels = {**(metadata.get("labels") or {}), ISVC_LABEL: name, "component": "predictor", "app": app}
        resources = ((predictor.get("model") or {}).get("resources")) or {}
        spec = {
            "containers": [{"name": "kserve-container", "image": "kserve/huggingfaceserver", "resources": resources}]
        }
        if predictor.get("nodeSelector"):
            spec["nodeSelector"] = predictor["nodeSelector"]
        if predictor.get("tolerations"):
            spec["tolerations"] = predictor["tolerations"]
        deployment_name = predictor_deployment_name(name)
        owners = [owner_reference(isvc, f"{ISVC_GROUP}/v1beta1", "InferenceService")]
        deployment_spec: dict[str, Any] = {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": app}},
            "template": {"metadata": {"labels": dict(labels)}, "spec": spec},
        }
        desired: dict[str, Any] = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": deployment_name,
                "labels": labels,
                "ownerReferences": owners,
            },
            "spec": deployment_spec,
        }
        kind = self.store.kinds[("apps", "v1", "deployments")]
        try:
            current = self.store.get(kind, namespace, deployment_name)
        except ApiError:
            self.store.create(kind, namespace, desired, manager=KSERVE_MANAGER)
            return None
        wanted = copy.deepcopy(current)
        wanted["metadata"]["labels"] = labels
        wanted["metadata"]["ownerReferences"] = owners
        wanted["spec"] = deployment_spec
        if wanted != current:
            current = self.store.replace(kind, namespace, deployment_name, wanted, manager=KSERVE_MANAGER)
        failure = next(
            (
                item
                for item in (current.get("status") or {}).get("conditions") or []
                if item.get("type") == "ReplicaFailure" and item.get("status") == "True"
            ),
            None,
        )
        return str(failure.get("message") or "") if failure is not None else None

    def _stop_predictor(self, namespace: str, name: str) -> None:
        """Stopped: KServe deletes the predictor's Deployment (checkDeploymentExist: CheckResultDelete); its pods go
        with it."""
        kind = self.store.kinds[("apps", "v1", "deployments")]
        with contextlib.suppress(ApiError):
            self.store.delete(kind, namespace, predictor_deployment_name(name))

    def _collect_pods(self, gone: set[tuple[str, str]]) -> None:
        """Delete the predictor pods of InferenceServices that are gone (what owner references do)."""
        pod_kind = self.store.kinds[("", "v1", "pods")]
        for namespace, isvc_name in gone:
            with contextlib.suppress(ApiError):  # the namespace itself went
                for pod in self._pods(namespace, isvc_name):
                    with contextlib.suppress(ApiError):
                        self.store.delete(pod_kind, namespace, pod["metadata"]["name"])

    @staticmethod
    def _condition(kind: str, state: str, reason: str = "", message: str = "") -> dict[str, str]:
        condition = {"type": kind, "status": state, "lastTransitionTime": now_rfc3339()}
        if reason:
            condition["reason"] = reason
        if message:
            condition["message"] = message
        return condition

    def _progress_status(self, generation: int, current: dict[str, Any], reason: str, message: str) -> dict[str, Any]:
        return {
            "observedGeneration": generation,
            "conditions": [
                self._condition("IngressReady", "False", reason, message),
                self._condition("PredictorReady", "False", reason, message),
                self._condition("Ready", "False", reason, message),
            ],
            "modelStatus": {
                "transitionStatus": "InProgress",
                "states": {"activeModelState": "Pending", "targetModelState": "Loading"},
            },
        }

    def _ready_status(self, generation: int, namespace: str, name: str, current: dict[str, Any]) -> dict[str, Any]:
        predictor_url = f"http://{name}-predictor.{namespace}.svc.cluster.local"
        return {
            "observedGeneration": generation,
            "url": f"http://{name}-{namespace}.{DOMAIN}",
            "address": {"url": predictor_url},
            "deploymentMode": "Standard",
            "components": {
                "predictor": {"url": f"http://{name}-predictor-{namespace}.{DOMAIN}", "restUrl": predictor_url}
            },
            "conditions": [
                self._condition("IngressReady", "True"),
                self._condition("PredictorReady", "True"),
                self._condition("Ready", "True"),
            ],
            "modelStatus": {
                "transitionStatus": "UpToDate",
                "states": {"activeModelState": "Loaded", "targetModelState": "Loaded"},
                "copies": {"totalCopies": 1, "failedCopies": 0},
            },
        }

    def _stopped_status(self, generation: int) -> dict[str, Any]:
        return {
            "observedGeneration": generation,
            "conditions": [
                self._condition("PredictorReady", "False", "Stopped", "the InferenceService is stopped"),
                self._condition("Ready", "False", "Stopped", "the InferenceService is stopped"),
                self._condition("Stopped", "True"),
            ],
            "modelStatus": {
                "transitionStatus": "UpToDate",
                "states": {"activeModelState": "Pending", "targetModelState": "Pending"},
            },
        }

    def _failed_status(self, generation: int, message: str) -> dict[str, Any]:
        return {
            "observedGeneration": generation,
            "conditions": [
                self._condition("PredictorReady", "False", "ModelLoadFailed", message),
                self._condition("Ready", "False", "ModelLoadFailed", message),
            ],
            "modelStatus": {
                "transitionStatus": "BlockedByFailedLoad",
                "states": {"activeModelState": "FailedToLoad", "targetModelState": "Loaded"},
                "copies": {"totalCopies": 1, "failedCopies": 1},
                "lastFailureInfo": {"reason": "ModelLoadFailed", "message": message},
            },
        }

    # ------------------------------------------------------------------ Envoy AI Gateway

    def _route(self, kind: Kind, route: dict[str, Any]) -> None:
        metadata = route["metadata"]
        generation = int(metadata.get("generation") or 1)
        conditions = (route.get("status") or {}).get("conditions") or []
        refused = self._pool_reference_refused(route)
        condition: dict[str, Any]
        if refused:
            # internal/controller/ai_gateway_route.go: a failed reconcile writes the single NotAccepted condition
            # (controller.go newConditions), reason ReconciliationFailed, the error as message.
            condition = {"type": "NotAccepted", "status": "False", "reason": "ReconciliationFailed", "message": refused}
        else:
            accepted = next((c for c in conditions if c.get("type") == "Accepted"), None)
            if accepted is not None and accepted.get("observedGeneration") == generation:
                return
            condition = {"type": "Accepted", "status": "True", "reason": "Accepted", "message": "Route accepted"}
        condition |= {"observedGeneration": generation, "lastTransitionTime": now_rfc3339()}
        if _without_times(conditions) == _without_times([condition]):
            return
        self.store.update_status(
            kind, metadata["namespace"], metadata["name"], {"conditions": [condition]}, manager=GATEWAY_MANAGER
        )

    def _pool_reference_refused(self, route: dict[str, Any]) -> str:
        """Why the AI Gateway refuses the route's InferencePool reference ("" when it does not): one in another
        namespace needs a ReferenceGrant there from AIGatewayRoutes of the route's namespace to InferencePools
        (internal/controller/referencegrant.go validateReference; the grant's `to` name is not checked there)."""
        route_namespace = route["metadata"]["namespace"]
        reader = StoreReader(self.store)
        for rule in (route.get("spec") or {}).get("rules") or []:
            for ref in rule.get("backendRefs") or []:
                if ref.get("kind") != "InferencePool":
                    continue
                pool_namespace = str(ref.get("namespace") or route_namespace)
                if pool_namespace == route_namespace:
                    continue
                if pool_granted(reader, route_namespace, pool_namespace):
                    continue
                return (
                    f"cross-namespace reference from AIGatewayRoute in namespace {route_namespace} to InferencePool "
                    f"{ref.get('name')} in namespace {pool_namespace} is not permitted: no valid ReferenceGrant found "
                    f"in namespace {pool_namespace}. A ReferenceGrant must allow AIGatewayRoute from namespace "
                    f"{route_namespace} to reference InferencePool in namespace {pool_namespace}"
                )
        return ""


def predictor_deployment_name(isvc_name: str) -> str:
    return f"{isvc_name}-predictor"


def _names_pool(route: dict[str, Any]) -> bool:
    return any(
        ref.get("kind") == "InferencePool"
        for rule in (route.get("spec") or {}).get("rules") or []
        for ref in rule.get("backendRefs") or []
    )


def _without_times(status: Any) -> Any:
    if isinstance(status, dict):
        return {k: _without_times(v) for k, v in status.items() if k != "lastTransitionTime"}
    if isinstance(status, list):
        return [_without_times(v) for v in status]
    return status
