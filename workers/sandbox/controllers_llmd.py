"""Simulated llm-d serving: KServe's LLMInferenceService controller and the Envoy AI Gateway's InferencePool
controller, answering as they do at the tags in shared/crds/SOURCES.md.

KServe v0.20.0 (kserve/kserve 1fb781055dd1567164358233e1125142ca6ef1fe, pkg/controller/v1alpha2/llmisvc), for an
LLMInferenceService in single-node mode with `router.scheduler` and no pool ref:
- Creates, each with a controller owner reference to the service (so deleting it deletes them):
  the decode Deployment `ChildName(name, "-kserve")` (workload_single_node.go mainDeploymentName; labels
  app.kubernetes.io/{component: llminferenceservice-workload, name, part-of: llminferenceservice},
  kserve.io/component: workload, llm-d.ai/role: both, or decode when `prefill` is set), the prefill Deployment
  `ChildName(name, "-kserve-prefill")` when `spec.prefill` is set (component llminferenceservice-workload-prefill,
  role prefill), the workload Service `ChildName(name, "-kserve-workload-svc")` (workload.go), the endpoint picker
  Deployment `ChildName(name, "-kserve-router-scheduler")` and Service `ChildName(name, "-epp-service")` (labels
  component llminferenceservice-router-scheduler, scheduler.go SchedulerLabels), and the InferencePool
  `ChildName(name, "-inference-pool")` with the preset's spec (config/llmisvcconfig/config-llm-scheduler.yaml:
  endpointPickerRef {Service <epp>, port 9002, FailOpen}, selector on name/part-of/kserve.io component workload,
  targetPorts 8000).
- Labels of the service whose key starts with `kueue.x-k8s.io` go onto the workload Deployments and their pod
  templates (workload_single_node.go propagateDeploymentMetadata), not onto the endpoint picker's.
- Replicas: `spec.replicas`, else (autoscaled through the WVA) the Deployment is created without replicas (1) and
  kept as it is (PreserveDeploymentReplicas); the sandbox has no autoscaler, so it stays at `scaling.minReplicas`.
- Status (knative conditions, sorted by type; sub-conditions carry severity Info): MainWorkloadReady /
  PrefillWorkloadReady from the Deployment's Available condition (its reason and message when False, "Progressing"
  while it has none: propagateDeploymentStatus), SchedulerWorkloadReady True once the picker has an available replica
  (propagateSchedulerDeploymentStatus), rolled up into WorkloadsReady and RouterReady; InferencePoolReady is True only
  for a pool the gateways of the service's managed routes accepted, so with no `router.route` it is False
  "WaitingForGateway", "Inference Pool <ns>/<pool> exists but no Gateway controller has accepted it yet"
  (router.go EvaluateInferencePoolConditions, evaluateInferencePoolCondition), and `Ready` (the rollup of
  WorkloadsReady and RouterReady, the router's evaluated last) stays False with that reason. With no route, no
  `status.url` is set; `status.addresses` holds the workload Service's cluster address (router.go
  updateRoutingStatus). `serving.kserve.io/stop: "true"` scales the workloads to zero and reports "Stopped",
  "Service is stopped".
- The model server pods get the storage-initializer init container (`<uri> /mnt/models`); a URI containing
  `fail-load` makes it fail in the sandbox's kubelet, so the pods never become ready, as a model that cannot be
  downloaded: MainWorkloadReady False with the Deployment's MinimumReplicasUnavailable.
- PresetsCombined True (the well-known presets always exist in the sandbox). ScalingReady (PrefillScalingReady) True
  when `scaling` is set: the sandbox has no Workload Variant Autoscaler, HPA or KEDA, and takes them as working.

Envoy AI Gateway v1.1.0 (internal/controller/inference_pool.go) writes an InferencePool's `status.parents`: one entry
per Gateway that an AIGatewayRoute *in the pool's namespace* attaches to while naming the pool in a backendRef
(gatewayReferencesInferencePool lists routes in the pool's namespace only, and compares the backendRef's name only),
with `Accepted` True, reason Accepted, "InferencePool has been Accepted by controller ai-gateway-controller:
InferencePool reconciled successfully" and `ResolvedRefs` True, "Reference resolution by controller
ai-gateway-controller: All references resolved successfully"; when the endpoint picker's Service is missing, Accepted
False, reason NotAccepted, "...: ExtensionReference service <s> not found in namespace <ns>", and ResolvedRefs False.
No route there: no parents. So a pool reached only from an AIGatewayRoute in another namespace (the portal's layout)
never gets a parent entry, although the gateway routes to it.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import re
import threading
from dataclasses import dataclass, field
from typing import Any

from workers.sandbox.controllers_apps import keep_transition_times, owner_reference, without_times
from workers.sandbox.store import ApiError, Kind, Store, now_rfc3339

Obj = dict[str, Any]
LLMISVC_KEY = ("serving.kserve.io", "v1alpha2", "llminferenceservices")
POOL_KEY = ("inference.networking.k8s.io", "v1", "inferencepools")
ROUTE_KEY = ("aigateway.envoyproxy.io", "v1beta1", "aigatewayroutes")
LLMISVC_API_VERSION = "serving.kserve.io/v1alpha2"
POOL_API_VERSION = "inference.networking.k8s.io/v1"
KSERVE_MANAGER = "llmisvc-controller"
AIGW_MANAGER = "envoy-ai-gateway-controller"
AIGW_CONTROLLER = "ai-gateway-controller"
STOP_ANNOTATION = "serving.kserve.io/stop"
KUEUE_PREFIX = "kueue.x-k8s.io"
MODEL_PORT = 8000
EPP_PORT = 9002
NAME_KEY = "app.kubernetes.io/name"
PART_OF_KEY = "app.kubernetes.io/part-of"
COMPONENT_KEY = "app.kubernetes.io/component"
KSERVE_COMPONENT_KEY = "kserve.io/component"
ROLE_KEY = "llm-d.ai/role"
PART_OF = "llminferenceservice"
_NAME_LIMIT = 63
_MD5_HEX = 32
WATCHED = frozenset({"LLMInferenceService", "Deployment", "InferencePool", "AIGatewayRoute", "Service", "Gateway"})


def kserve_child_name(parent: str, suffix: str) -> str:
    """knative.dev/pkg kmeta/names.go ChildName, as KServe names what it creates: `parent + suffix` when it fits in
    63 characters, else the parent cut short with its MD5 in between. The cluster's own port, so the sandbox needs
    nothing of the portal's builders (tests check the two agree)."""
    if len(parent) <= _NAME_LIMIT - len(suffix):
        return parent + suffix
    head = _NAME_LIMIT - _MD5_HEX
    if head - len(suffix) <= 0:
        digest = hashlib.md5((parent + suffix).encode(), usedforsecurity=False).hexdigest()
        named = parent[:head] + digest
        if (room := _NAME_LIMIT - len(named)) > 0:
            named += suffix[:room]
        return re.sub(r"[^a-zA-Z0-9]+$", "", named)
    digest = hashlib.md5(parent.encode(), usedforsecurity=False).hexdigest()
    return parent[: head - len(suffix)] + digest + suffix


def workload_selector(name: str) -> dict[str, str]:
    """GetWorkloadLabelSelector (workload.go), the pool's selector in the scheduler preset."""
    return {NAME_KEY: name, PART_OF_KEY: PART_OF, KSERVE_COMPONENT_KEY: "workload"}


def scheduler_labels(name: str) -> dict[str, str]:
    return {COMPONENT_KEY: "llminferenceservice-router-scheduler", NAME_KEY: name, PART_OF_KEY: PART_OF}


def served_model_name(service: Obj) -> str:
    """What vLLM serves: `--served-model-name <spec.model.name>` in the preset's command, else the service's name."""
    return str(((service.get("spec") or {}).get("model") or {}).get("name") or service["metadata"]["name"])


@dataclass
class LlmdControllers:
    store: Store
    _dirty: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.store.listeners.append(self._on_event)
        self._dirty.set()

    def _on_event(self, event: str, kind: Kind, obj: Obj) -> None:
        if kind.kind in WATCHED or event == "DELETED":
            self._dirty.set()

    def forget(self) -> None:
        self._dirty.set()

    def step(self) -> None:
        if not self._dirty.is_set():
            return
        self._dirty.clear()
        service_kind = self.store.kinds.get(LLMISVC_KEY)
        if service_kind is not None:
            for service in self.store.iter_objects(service_kind):
                try:
                    self._service(service_kind, service)
                except ApiError:  # changed or deleted under us: its event marks us dirty again
                    self._dirty.set()
        pool_kind = self.store.kinds.get(POOL_KEY)
        if pool_kind is not None:
            for pool in self.store.iter_objects(pool_kind):
                with contextlib.suppress(ApiError):
                    self._pool_status(pool_kind, pool)

    # ------------------------------------------------------------------ KServe's LLMInferenceService controller

    def _service(self, kind: Kind, service: Obj) -> None:
        metadata = service["metadata"]
        namespace, name = metadata["namespace"], metadata["name"]
        spec = service.get("spec") or {}
        stopped = str((metadata.get("annotations") or {}).get(STOP_ANNOTATION, "")).lower() == "true"
        owner = owner_reference(service, LLMISVC_API_VERSION, "LLMInferenceService")
        kueue_labels = {k: v for k, v in (metadata.get("labels") or {}).items() if k.startswith(KUEUE_PREFIX)}
        scheduler = (spec.get("router") or {}).get("scheduler")
        prefill = spec.get("prefill")

        main_labels = {
            COMPONENT_KEY: "llminferenceservice-workload",
            NAME_KEY: name,
            PART_OF_KEY: PART_OF,
            KSERVE_COMPONENT_KEY: "workload",
            ROLE_KEY: "decode" if prefill else "both",
        }
        main_name = kserve_child_name(name, "-kserve")
        self._apply_deployment(
            namespace, main_name, owner, main_labels, kueue_labels, service, spec, spec, stopped, serving=True
        )
        prefill_name = kserve_child_name(name, "-kserve-prefill")
        if prefill:
            prefill_labels = {
                COMPONENT_KEY: "llminferenceservice-workload-prefill",
                NAME_KEY: name,
                PART_OF_KEY: PART_OF,
                KSERVE_COMPONENT_KEY: "workload",
                ROLE_KEY: "prefill",
            }
            self._apply_deployment(
                namespace,
                prefill_name,
                owner,
                prefill_labels,
                kueue_labels,
                service,
                spec,
                prefill,
                stopped,
                serving=True,
            )
        else:
            self._delete_owned("apps", "deployments", namespace, prefill_name, owner["uid"])
        workload_service = kserve_child_name(name, "-kserve-workload-svc")
        self._apply(
            ("", "v1", "services"),
            namespace,
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": workload_service, "labels": dict(main_labels), "ownerReferences": [owner]},
                "spec": {
                    "selector": workload_selector(name),
                    "ports": [{"name": "https", "port": MODEL_PORT, "targetPort": MODEL_PORT, "protocol": "TCP"}],
                },
            },
        )
        scheduler_name = kserve_child_name(name, "-kserve-router-scheduler")
        epp_name = kserve_child_name(name, "-epp-service")
        pool_name = kserve_child_name(name, "-inference-pool")
        if scheduler is not None:
            labels = scheduler_labels(name)
            self._apply_deployment(
                namespace, scheduler_name, owner, labels, {}, service, spec, {"replicas": 1}, stopped, serving=False
            )
            self._apply(
                ("", "v1", "services"),
                namespace,
                {
                    "apiVersion": "v1",
                    "kind": "Service",
                    "metadata": {"name": epp_name, "labels": dict(labels), "ownerReferences": [owner]},
                    "spec": {
                        "selector": dict(labels),
                        "ports": [
                            {"name": "grpc", "port": EPP_PORT, "targetPort": "grpc", "protocol": "TCP"},
                            {"name": "grpc-health", "port": 9003, "targetPort": "grpc-health", "protocol": "TCP"},
                            {"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"},
                        ],
                    },
                },
            )
            self._apply(
                POOL_KEY,
                namespace,
                {
                    "apiVersion": POOL_API_VERSION,
                    "kind": "InferencePool",
                    "metadata": {"name": pool_name, "labels": dict(labels), "ownerReferences": [owner]},
                    "spec": {
                        "endpointPickerRef": {
                            "failureMode": "FailOpen",
                            "kind": "Service",
                            "name": epp_name,
                            "port": {"number": EPP_PORT},
                        },
                        "selector": {"matchLabels": workload_selector(name)},
                        "targetPorts": [{"number": MODEL_PORT}],
                    },
                },
            )
        else:
            self._delete_owned("apps", "deployments", namespace, scheduler_name, owner["uid"])
            self._delete_owned("", "services", namespace, epp_name, owner["uid"])
            self._delete_owned("inference.networking.k8s.io", "inferencepools", namespace, pool_name, owner["uid"])
        self._status(kind, service, main_name, prefill_name if prefill else None, scheduler_name, pool_name, stopped)

    def _apply_deployment(
        self,
        namespace: str,
        name: str,
        owner: Obj,
        labels: dict[str, str],
        kueue_labels: dict[str, str],
        service: Obj,
        service_spec: Obj,
        workload: Obj,
        stopped: bool,
        *,
        serving: bool,
    ) -> None:
        template_spec = copy.deepcopy(workload.get("template") or {}) if serving else {}
        containers = template_spec.setdefault("containers", [])
        main = next((c for c in containers if c.get("name") == "main"), None)
        if main is None:
            main = {"name": "main"}
            containers.insert(0, main)
        if serving:
            # The model is downloaded by the storage-initializer init container, `<uri> /mnt/models`
            # (workload_storage.go attachModelArtifacts).
            uri = str(((service_spec.get("model") or {}).get("uri")) or "")
            template_spec["initContainers"] = [
                *(c for c in template_spec.get("initContainers") or [] if c.get("name") != "storage-initializer"),
                {
                    "name": "storage-initializer",
                    "image": "kserve/storage-initializer:v0.20.0",
                    "args": [uri, "/mnt/models"],
                },
            ]
            tensor = int(((workload.get("parallelism") or {}).get("tensor")) or 1)
            main.setdefault("image", "ghcr.io/llm-d/llm-d-cuda:v0.4.0")
            main["command"] = [
                "vllm", "serve", "/mnt/models", "--served-model-name", served_model_name(service),
                "--port", str(MODEL_PORT), "--tensor-parallel-size", str(tensor), "--",
            ]  # fmt: skip
            main.setdefault("ports", [{"containerPort": MODEL_PORT, "name": "http", "protocol": "TCP"}])
        else:
            main.setdefault("image", "ghcr.io/llm-d/llm-d-inference-scheduler:v0.9.0")
            main.setdefault(
                "ports",
                [
                    {"containerPort": EPP_PORT, "name": "grpc", "protocol": "TCP"},
                    {"containerPort": 9003, "name": "grpc-health", "protocol": "TCP"},
                    {"containerPort": 9090, "name": "metrics", "protocol": "TCP"},
                ],
            )
        deployment_kind = self.store.kinds[("apps", "v1", "deployments")]
        existing = None
        with contextlib.suppress(ApiError):
            existing = self.store.get(deployment_kind, namespace, name)
        if stopped:
            replicas = 0
        elif workload.get("replicas") is not None:
            replicas = int(workload["replicas"])
        elif existing is not None and int((existing.get("spec") or {}).get("replicas") or 0) > 0:
            replicas = int(existing["spec"]["replicas"])  # PreserveDeploymentReplicas: the autoscaler's
        else:
            replicas = max(int(((workload.get("scaling") or {}).get("minReplicas")) or 1), 1)
        all_labels = {**labels, **kueue_labels}
        self._apply(
            ("apps", "v1", "deployments"),
            namespace,
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": name, "labels": all_labels, "ownerReferences": [owner]},
                "spec": {
                    "replicas": replicas,
                    "selector": {"matchLabels": dict(labels)},
                    "template": {"metadata": {"labels": dict(all_labels)}, "spec": template_spec},
                },
            },
        )

    def _apply(self, key: tuple[str, str, str], namespace: str, desired: Obj) -> None:
        """Create, or bring labels, owner and spec back to what is desired; nothing when already so."""
        kind = self.store.kinds[key]
        name = desired["metadata"]["name"]
        try:
            current = self.store.get(kind, namespace, name)
        except ApiError:
            self.store.create(kind, namespace, desired, manager=KSERVE_MANAGER)
            return
        merged = copy.deepcopy(current)
        merged["metadata"]["labels"] = {**(current["metadata"].get("labels") or {}), **desired["metadata"]["labels"]}
        merged["metadata"]["ownerReferences"] = desired["metadata"]["ownerReferences"]
        merged["spec"] = desired["spec"]
        if merged != current:
            self.store.replace(kind, namespace, name, merged, manager=KSERVE_MANAGER)

    def _delete_owned(self, group: str, plural: str, namespace: str, name: str, owner_uid: str) -> None:
        kind = next((k for k in self.store.kinds.values() if k.group == group and k.plural == plural), None)
        if kind is None:
            return
        with contextlib.suppress(ApiError):
            current = self.store.get(kind, namespace, name)
            if any(ref.get("uid") == owner_uid for ref in current["metadata"].get("ownerReferences") or []):
                self.store.delete(kind, namespace, name)

    def _deployment_condition(self, namespace: str, name: str) -> tuple[bool, str, str]:
        """(ready, reason, message) as propagateDeploymentStatus reads the Deployment."""
        deployment_kind = self.store.kinds[("apps", "v1", "deployments")]
        try:
            deployment = self.store.get(deployment_kind, namespace, name)
        except ApiError:
            return False, "Progressing", ""
        for item in (deployment.get("status") or {}).get("conditions") or []:
            if item.get("type") == "Available":
                if item.get("status") == "True":
                    return True, "", ""
                return False, str(item.get("reason", "")), str(item.get("message", ""))
        return False, "Progressing", ""

    def _status(
        self,
        kind: Kind,
        service: Obj,
        main_name: str,
        prefill_name: str | None,
        scheduler_name: str,
        pool_name: str,
        stopped: bool,
    ) -> None:
        metadata = service["metadata"]
        namespace, name = metadata["namespace"], metadata["name"]
        spec = service.get("spec") or {}
        has_scheduler = (spec.get("router") or {}).get("scheduler") is not None
        conditions: dict[str, Obj] = {"PresetsCombined": _knative("PresetsCombined", "True", info=True)}
        workload_parts = []
        if stopped:
            workload_parts.append(_knative("MainWorkloadReady", "False", "Stopped", "Service is stopped", info=True))
        else:
            ready, reason, message = self._deployment_condition(namespace, main_name)
            workload_parts.append(
                _knative("MainWorkloadReady", "True" if ready else "False", reason, message, info=True)
            )
            if prefill_name is not None:
                ready, reason, message = self._deployment_condition(namespace, prefill_name)
                workload_parts.append(
                    _knative("PrefillWorkloadReady", "True" if ready else "False", reason, message, info=True)
                )
            # Autoscaled through the WVA: the sandbox's HPA or ScaledObject counts as working (its Ready is what
            # scaling.go propagates); without `scaling` the condition is unset and does not count.
            if spec.get("scaling"):
                workload_parts.append(_knative("ScalingReady", "True", info=True))
            if prefill_name is not None and (spec.get("prefill") or {}).get("scaling"):
                workload_parts.append(_knative("PrefillScalingReady", "True", info=True))
        router_parts = []
        if has_scheduler:
            if stopped:
                router_parts.append(
                    _knative("SchedulerWorkloadReady", "False", "Stopped", "Service is stopped", info=True)
                )
                router_parts.append(_knative("InferencePoolReady", "False", "Stopped", "Service is stopped", info=True))
            else:
                ready, reason, message = self._deployment_condition(namespace, scheduler_name)
                if not ready and reason == "Progressing":
                    message = "Deployment rollout in progress"
                router_parts.append(
                    _knative("SchedulerWorkloadReady", "True" if ready else "False", reason, message, info=True)
                )
                # No managed route, so no gateway whose acceptance could make the pool ready.
                router_parts.append(
                    _knative(
                        "InferencePoolReady",
                        "False",
                        "WaitingForGateway",
                        f"Inference Pool {namespace}/{pool_name} exists but no Gateway controller has accepted it yet",
                        info=True,
                    )
                )
        for part in workload_parts + router_parts:
            conditions[part["type"]] = part
        conditions["WorkloadsReady"] = _rollup("WorkloadsReady", workload_parts)
        conditions["RouterReady"] = _rollup("RouterReady", router_parts)
        ready_from = conditions["RouterReady"] if conditions["RouterReady"]["status"] == "False" else None
        ready_from = ready_from or (
            conditions["WorkloadsReady"] if conditions["WorkloadsReady"]["status"] == "False" else None
        )
        conditions["Ready"] = (
            _knative("Ready", "False", ready_from.get("reason", ""), ready_from.get("message", ""))
            if ready_from is not None
            else _knative("Ready", "True")
        )
        current = service.get("status") or {}
        ordered = keep_transition_times(
            [conditions[key] for key in sorted(conditions)], current.get("conditions") or []
        )
        desired: Obj = {
            "observedGeneration": int(metadata.get("generation") or 1),
            "conditions": ordered,
        }
        if not stopped:
            address = f"http://{kserve_child_name(name, '-kserve-workload-svc')}.{namespace}.svc.cluster.local"
            desired["addresses"] = [{"url": address}]
        if without_times(desired) != without_times(current):
            self.store.update_status(kind, namespace, name, desired, manager=KSERVE_MANAGER)

    # ------------------------------------------------------------------ the AI Gateway's InferencePool controller

    def _pool_status(self, kind: Kind, pool: Obj) -> None:
        metadata = pool["metadata"]
        namespace, name = metadata["namespace"], metadata["name"]
        generation = int(metadata.get("generation") or 1)
        gateways: list[tuple[str, str]] = []
        route_kind = self.store.kinds.get(ROUTE_KEY)
        if route_kind is not None:
            for route in self.store.list(route_kind, namespace)["items"]:
                names_pool = any(
                    ref.get("kind") == "InferencePool" and ref.get("name") == name
                    for rule in (route.get("spec") or {}).get("rules") or []
                    for ref in rule.get("backendRefs") or []
                )
                if not names_pool:
                    continue
                for parent in (route.get("spec") or {}).get("parentRefs") or []:
                    gateway = (str(parent.get("namespace") or namespace), str(parent.get("name", "")))
                    if gateway not in gateways and self._gateway_exists(*gateway):
                        gateways.append(gateway)
        epp = str(((pool.get("spec") or {}).get("endpointPickerRef") or {}).get("name", ""))
        service_kind = self.store.kinds[("", "v1", "services")]
        epp_found = True
        try:
            self.store.get(service_kind, namespace, epp)
        except ApiError:
            epp_found = False
        parents = []
        for gateway_namespace, gateway_name in sorted(gateways):
            if epp_found:
                accepted = _metav1(
                    "Accepted",
                    "True",
                    "Accepted",
                    f"InferencePool has been Accepted by controller {AIGW_CONTROLLER}: InferencePool reconciled "
                    "successfully",
                    generation,
                )
                resolved = _metav1(
                    "ResolvedRefs",
                    "True",
                    "ResolvedRefs",
                    f"Reference resolution by controller {AIGW_CONTROLLER}: All references resolved successfully",
                    generation,
                )
            else:
                problem = f"ExtensionReference service {epp} not found in namespace {namespace}"
                accepted = _metav1(
                    "Accepted",
                    "False",
                    "NotAccepted",
                    f"InferencePool has been NotAccepted by controller {AIGW_CONTROLLER}: {problem}",
                    generation,
                )
                resolved = _metav1(
                    "ResolvedRefs",
                    "False",
                    "ResolvedRefs",
                    f"Reference resolution by controller {AIGW_CONTROLLER}: {problem}",
                    generation,
                )
            parents.append(
                {
                    "parentRef": {
                        "group": "gateway.networking.k8s.io",
                        "kind": "Gateway",
                        "name": gateway_name,
                        "namespace": gateway_namespace,
                    },
                    "conditions": [accepted, resolved],
                }
            )
        current = pool.get("status") or {}
        desired: Obj = {"parents": parents} if parents else {}
        if without_times(desired) != without_times(current):
            self.store.update_status(kind, namespace, name, desired, manager=AIGW_MANAGER)

    def _gateway_exists(self, namespace: str, name: str) -> bool:
        gateway_kind = next(
            (k for k in self.store.kinds.values() if k.group == "gateway.networking.k8s.io" and k.kind == "Gateway"),
            None,
        )
        if gateway_kind is None:
            return False
        try:
            self.store.get(gateway_kind, namespace, name)
        except ApiError:
            return False
        return True


def _knative(kind: str, state: str, reason: str = "", message: str = "", *, info: bool = False) -> Obj:
    """A knative apis.Condition: conditions outside the living set's dependents carry severity Info."""
    found: Obj = {"type": kind, "status": state, "lastTransitionTime": now_rfc3339()}
    if info:
        found["severity"] = "Info"
    if reason:
        found["reason"] = reason
    if message:
        found["message"] = message
    return found


def _rollup(kind: str, parts: list[Obj]) -> Obj:
    """DetermineWorkloadReadiness / DetermineRouterReadiness: the first False part's reason and message."""
    failed = next((part for part in parts if part["status"] == "False"), None)
    if failed is None:
        return _knative(kind, "True")
    return _knative(kind, "False", failed.get("reason", ""), failed.get("message", ""))


def _metav1(kind: str, state: str, reason: str, message: str, generation: int) -> Obj:
    return {
        "type": kind,
        "status": state,
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
        "lastTransitionTime": now_rfc3339(),
    }
