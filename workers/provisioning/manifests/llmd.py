"""Everything one llm-d deployment needs on its cluster, in apply order: a KServe LLMInferenceService whose controller
creates the InferencePool and its endpoint picker, the InferenceObjective that gives the deployment's traffic its
team's priority, and the AIGatewayRoute that sends the served model name straight to the pool.

Facts, each read at the tag the CRDs in shared/crds come from (shared/crds/SOURCES.md):

KServe v0.20.0 (kserve/kserve 1fb781055dd1567164358233e1125142ca6ef1fe), LLMInferenceService v1alpha2:
- The controller merges its well-known presets without any `baseRefs`: `kserve-config-llm-template` (or the
  `-decode-template` + `-prefill-template` pair when `spec.prefill` is set) and, for `router.scheduler` without a
  pool ref, `kserve-config-llm-scheduler`; `router.route` adds the managed HTTPRoute preset
  (pkg/controller/v1alpha2/llmisvc/config_merge.go combineBaseRefsConfig). The portal leaves `route` and `gateway`
  out: the gateway's only way to the pool is the AIGatewayRoute, which meters tokens (reference section 2.3).
- Model server flags: the preset's `main` container runs `vllm serve /mnt/models --served-model-name
  <spec.model.name> ... --tensor-parallel-size <spec.parallelism.tensor> $@` and ends its command with "--", so the
  container's `args` are appended to vllm serve (config/llmisvcconfig/config-llm-template.yaml). Hence: the served
  name is `spec.model.name`, tensor parallelism is `spec.parallelism.tensor`, everything else is `args` in vLLM's
  spelling (vLLM's FlexibleArgumentParser accepts `_` and `-` alike, vllm/utils/argparse_utils.py; the portal writes
  dashes). KServe-runtime-only flags (`--model_name`, `--model_revision`) have no vLLM meaning and are left out; a
  pinned revision becomes vLLM's `--revision`.
- Only a data- or pipeline-parallel size is immutable (llm_inference_service_validation.go
  validateImmutableParallelism, ParallelismSpec.GetSize): changing `parallelism.tensor` is an ordinary update.
- `replicas` and `scaling` are mutually exclusive (CEL); `scaling.minReplicas` is at least 1 and autoscaling goes
  through the Workload Variant Autoscaler with exactly one actuator, `wva.hpa` or `wva.keda` (CEL); a missing WVA
  CRD fails the service (scaling.go reconcileScaling). So there is no scale to zero in this mode. A pod-template
  replica count another controller owns is never written: with an external autoscaler neither field is set, and the
  controller keeps the live Deployment's replicas (workload_single_node.go PreserveDeploymentReplicas).
- Names: the pool is `kmeta.ChildName(<name>, "-inference-pool")` (llm_inference_service_types_func.go
  InferencePoolName; the scheduler preset uses the same template), the endpoint picker Service
  `ChildName(<name>, "-epp-service")`, the decode Deployment `ChildName(<name>, "-kserve")`, the prefill one
  `ChildName(<name>, "-kserve-prefill")` (workload_single_node.go). knative.dev/pkg kmeta/names.go ChildName is
  ported below as `kserve_child_name`.
- Labels on the LLMInferenceService's metadata whose key starts with `kueue.x-k8s.io` are copied onto the decode and
  prefill Deployments and their pod templates (workload_single_node.go propagateDeploymentMetadata;
  workload_multi_node.go likewise for LeaderWorkerSets); the endpoint picker's Deployment does not get them, so it
  takes no GPU quota.
- Readiness: `Ready` rolls up `RouterReady`, which includes `InferencePoolReady`, and that is True only for pools
  accepted by the gateways of KServe-managed or referenced HTTPRoutes (router.go EvaluateInferencePoolConditions,
  router_discovery.go IsInferencePoolReadyForGateways returns false for no gateway). With the AIGatewayRoute as the
  only route, `Ready` stays False with InferencePoolReady "WaitingForGateway" even while it serves: the portal's
  status must read `WorkloadsReady` (and `SchedulerWorkloadReady`) plus the InferencePool's `status.parents`
  `Accepted` for the AI gateway, not `Ready`.

Envoy AI Gateway v1.1.0 (envoyproxy/ai-gateway, api/v1beta1/ai_gateway_route.go, internal/controller):
- A rule's backendRef to a pool carries `group: inference.networking.k8s.io, kind: InferencePool`; one pool per
  rule, never mixed with AIServiceBackends (CEL). `modelNameOverride`, `headerMutation`, `bodyMutation` and
  `priority` are ignored for pools. The pool is OpenAI-schema with prefix "v1" (gateway.go), which is where vLLM
  serves.
- A pool in another namespace needs a ReferenceGrant there from `aigateway.envoyproxy.io/AIGatewayRoute` in the
  route's namespace (referencegrant.go validateInferencePoolReference); the HTTPRoute the controller generates
  references the pool too (ai_gateway_route.go newHTTPRoute), and a route's cross-namespace backendRef needs a grant
  from `gateway.networking.k8s.io/HTTPRoute` (Gateway API GEP-709; AI Gateway's own cross-namespace e2e grants both
  kinds for its Backend, tests/e2e/testdata/cross_namespace.yaml; that Envoy Gateway applies it to pool refs the
  same way is inferred, not read in its code). One grant with both `from` entries, limited `to` the one pool.
- A pool's `status.parents` is written only from the AIGatewayRoutes and HTTPRoutes in the pool's own namespace
  (internal/controller/inference_pool.go gatewayReferencesInferencePool lists routes `InNamespace(pool namespace)`),
  so a pool reached from the gateway's namespace never gets a parent. That is status only, and the route stays in
  the gateway's namespace: routing is built from the route, the cross-namespace pool reference checked against the
  grant (ai_gateway_route.go newHTTPRoute, referencegrant.go), and the extension server's endpoint-picker cluster
  from the pool itself (internal/extensionserver/inferencepool.go), none reading the pool's status; the portal's
  status reads the pool's parents only to report a refusal (status.derive_llmd_status), and KServe's `Ready` waits
  for a gateway it manages either way (above). Moving the route beside the pool would need every team namespace
  admitted by the shared Gateway's `allowedRoutes` (Gateway API: a listener admits routes of its own namespace
  unless it says `from: All` or a selector), which would let anyone who can write a route in a team namespace
  attach it to the shared gateway, in front of its key checks and token metering. Tested in
  tests/workers/sandbox/test_llmd_kueue.py (the pool has no parent, and it serves and reads Ready).

llm-d-router v0.10.0 (llm-d/llm-d-router 71f4f0999f95b96c49a9d0c4afbd18dfdb943c26; KServe v0.20.0's scheduler
preset runs its endpoint picker v0.9.0, same `llm-d.ai` group and header):
- A request picks its InferenceObjective by header `x-llm-d-inference-objective: <objective name>` (old alias
  `x-gateway-inference-objective`); no header, or a name with no objective, gets priority 0
  (pkg/epp/metadata/consts.go, pkg/epp/requestcontrol/director.go getInferenceObjective). Since the AIGatewayRoute
  cannot set headers for a pool, the objective's priority applies to the requests that name it (the deployment's
  callers send the header); the rest run at 0. The pool is the deployment's own and only the team's keys reach it,
  so a header can only reorder the team's own traffic.
- An InferenceModelRewrite rewrites the request body's model for the pool (director.go modelRewriteIfNeeded): it is
  how a retired served name keeps working here, since the route's `modelNameOverride` does not apply to pools.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from catalog.sizing import flag_name, flag_value
from portal.deployments.contracts import DeploymentSpec
from portal.deployments.gpu_accounting import prefill_gpus_each
from workers.provisioning.manifests.deployment import build_route, namespace_of
from workers.provisioning.manifests.kueue import queue_labels
from workers.provisioning.manifests.labels import deployment_labels
from workers.provisioning.manifests.upstream import (
    GPU_RESOURCE,
    LLMD_API_VERSION,
    LLMISVC_API_VERSION,
    REFERENCE_GRANT_API_VERSION,
)

Manifest = dict[str, Any]
INFERENCE_POOL_GROUP = "inference.networking.k8s.io"
INFERENCE_POOL_KIND = "InferencePool"
OBJECTIVE_HEADER = "x-llm-d-inference-objective"
MAIN_CONTAINER = "main"  # the container name KServe's presets merge into
# Flags the LLMInferenceService sets itself (served name, port, tensor parallelism) or that only KServe's Hugging
# Face runtime understands.
SERVICE_OWNED_FLAGS = frozenset(
    {"model_name", "served_model_name", "port", "tensor_parallel_size", "model_revision", "model_id", "model_dir"}
)
_NAME_LIMIT = 63
_MD5_HEX = 32
_TRAILING = re.compile(r"[^a-zA-Z0-9]+$")


def kserve_child_name(parent: str, suffix: str) -> str:
    """knative.dev/pkg kmeta.ChildName, as KServe names what it creates: `parent + suffix` when it fits in 63
    characters, else the parent cut short with its MD5 in between."""
    if len(parent) <= _NAME_LIMIT - len(suffix):
        return parent + suffix
    head = _NAME_LIMIT - _MD5_HEX
    if head - len(suffix) <= 0:
        digest = hashlib.md5((parent + suffix).encode(), usedforsecurity=False).hexdigest()
        named = parent[:head] + digest
        if (room := _NAME_LIMIT - len(named)) > 0:
            named += suffix[:room]
        return _TRAILING.sub("", named)
    digest = hashlib.md5(parent.encode(), usedforsecurity=False).hexdigest()
    return parent[: head - len(suffix)] + digest + suffix


def inference_pool_name(spec: DeploymentSpec) -> str:
    """The InferencePool KServe's controller creates for the service (and the route must name)."""
    return kserve_child_name(spec.name, "-inference-pool")


def endpoint_picker_name(spec: DeploymentSpec) -> str:
    return kserve_child_name(spec.name, "-epp-service")


def objective_name(spec: DeploymentSpec) -> str:
    """What a caller puts in the x-llm-d-inference-objective header: the deployment's name, unique in its namespace."""
    return spec.name


def _dashed(argument: str) -> str:
    if not argument.startswith("--"):
        return argument
    name, separator, value = argument.removeprefix("--").partition("=")
    return f"--{name.replace('_', '-')}{separator}{value}"


def _layered_args(spec: DeploymentSpec) -> list[str]:
    """The catalog's defaults, replaced by the sizing plan's flags, replaced by the team's own (as the standard
    mode layers them)."""
    by_team = {flag_name(argument) for argument in spec.runtime_args}
    planned = [argument for argument in spec.plan_runtime_args if flag_name(argument) not in by_team]
    overridden = by_team | {flag_name(argument) for argument in planned}
    defaults = [argument for argument in spec.model.runtime_args if flag_name(argument) not in overridden]
    return [*defaults, *planned, *spec.runtime_args]


def vllm_args(spec: DeploymentSpec) -> list[str]:
    """Arguments appended to the preset's `vllm serve`: every layered flag but those the service sets itself."""
    args = [_dashed(argument) for argument in _layered_args(spec) if flag_name(argument) not in SERVICE_OWNED_FLAGS]
    if spec.model.revision and spec.model.revision != "main":
        args.insert(0, f"--revision={spec.model.revision}")
    return args


def tensor_parallel_size(spec: DeploymentSpec) -> int:
    """The layered --tensor_parallel_size when one is set, else one shard per GPU of a replica."""
    found = flag_value(_layered_args(spec), "tensor_parallel_size")
    if found is not None and found.isdigit() and int(found) > 0:
        return int(found)
    return max(spec.gpus_per_replica, 1)


def _resources(spec: DeploymentSpec, gpus: int) -> dict[str, dict[str, str]]:
    requests: dict[str, str] = {GPU_RESOURCE: str(gpus)}
    limits: dict[str, str] = {GPU_RESOURCE: str(gpus)}
    if spec.model.hardware.cpu:
        requests["cpu"] = spec.model.hardware.cpu
    if spec.model.hardware.memory:
        requests["memory"] = spec.model.hardware.memory
        limits["memory"] = spec.model.hardware.memory
    return {"requests": requests, "limits": limits}


def _pod_template(spec: DeploymentSpec, gpus: int) -> dict[str, Any]:
    """Merged by container name into the preset's pod template: the flags, the GPUs, the pool's nodes."""
    container: dict[str, Any] = {"name": MAIN_CONTAINER}
    args = vllm_args(spec)
    if args:
        container["args"] = args
    container["resources"] = _resources(spec, gpus)
    template: dict[str, Any] = {"containers": [container]}
    if spec.pool.node_selector:
        template["nodeSelector"] = dict(sorted(spec.pool.node_selector.items()))
    if spec.pool.tolerations:
        template["tolerations"] = [dict(toleration) for toleration in spec.pool.tolerations]
    return template


def _replicas_or_scaling(spec: DeploymentSpec) -> dict[str, Any]:
    """Decode replicas valid for the cluster's autoscaler; at least one (no scale to zero through the WVA)."""
    autoscaler = spec.cluster.autoscaler_class
    minimum = max(spec.min_replicas, 1)
    if autoscaler == "external":
        return {}
    if autoscaler == "none" or spec.max_replicas <= minimum:
        return {"replicas": minimum}
    # KEDA where the cluster scales with KEDA; HPA otherwise (also on a Knative cluster: the llm-d workloads are
    # plain Deployments, never Knative services).
    actuator = "keda" if autoscaler == "keda" else "hpa"
    return {"scaling": {"minReplicas": minimum, "maxReplicas": spec.max_replicas, "wva": {actuator: {}}}}


def build_llm_inference_service(spec: DeploymentSpec) -> Manifest:
    tensor = tensor_parallel_size(spec)
    service: dict[str, Any] = {
        "model": {"uri": spec.model.artifact_uri, "name": spec.served_model_name},
        **_replicas_or_scaling(spec),
    }
    if tensor > 1:
        service["parallelism"] = {"tensor": tensor}
    service["template"] = _pod_template(spec, spec.gpus_per_replica)
    if spec.prefill_replicas > 0:
        prefill_gpus = prefill_gpus_each(
            gpus_per_replica=spec.gpus_per_replica, prefill_gpus_per_replica=spec.prefill_gpus_per_replica
        )
        prefill: dict[str, Any] = {"replicas": spec.prefill_replicas}
        if prefill_gpus > 1:
            prefill["parallelism"] = {"tensor": prefill_gpus}
        prefill["template"] = _pod_template(spec, prefill_gpus)
        service["prefill"] = prefill
    # The scheduler alone: KServe creates the InferencePool and the endpoint picker, and no HTTPRoute of its own.
    service["router"] = {"scheduler": {}}
    return {
        "apiVersion": LLMISVC_API_VERSION,
        "kind": "LLMInferenceService",
        "metadata": {
            "name": spec.name,
            "namespace": namespace_of(spec),
            "labels": {
                **deployment_labels(spec.team_slug, spec.name, spec.deployment_id),
                **queue_labels(spec.cluster),
            },
        },
        "spec": service,
    }


def _pool_ref(spec: DeploymentSpec) -> dict[str, str]:
    return {"group": INFERENCE_POOL_GROUP, "kind": INFERENCE_POOL_KIND, "name": inference_pool_name(spec)}


def build_inference_objective(spec: DeploymentSpec) -> Manifest:
    return {
        "apiVersion": LLMD_API_VERSION,
        "kind": "InferenceObjective",
        "metadata": {
            "name": objective_name(spec),
            "namespace": namespace_of(spec),
            "labels": deployment_labels(spec.team_slug, spec.name, spec.deployment_id),
        },
        "spec": {"priority": spec.objective_priority, "poolRef": _pool_ref(spec)},
    }


def build_model_rewrite(spec: DeploymentSpec) -> Manifest:
    """Earlier served names, rewritten to the current one by the endpoint picker (the route cannot for a pool)."""
    return {
        "apiVersion": LLMD_API_VERSION,
        "kind": "InferenceModelRewrite",
        "metadata": {
            "name": spec.name,
            "namespace": namespace_of(spec),
            "labels": deployment_labels(spec.team_slug, spec.name, spec.deployment_id),
        },
        "spec": {
            "poolRef": _pool_ref(spec),
            "rules": [
                {
                    "matches": [{"model": {"type": "Exact", "value": alias}} for alias in spec.served_model_aliases],
                    "targets": [{"modelRewrite": spec.served_model_name}],
                }
            ],
        },
    }


def route_crosses_namespaces(spec: DeploymentSpec) -> bool:
    return spec.cluster.gateway_namespace != namespace_of(spec)


def build_pool_reference_grant(spec: DeploymentSpec) -> Manifest:
    """In the team's namespace: lets the route (and the HTTPRoute generated from it) in the gateway's namespace
    reach this deployment's pool, and nothing else."""
    gateway_namespace = spec.cluster.gateway_namespace
    return {
        "apiVersion": REFERENCE_GRANT_API_VERSION,
        "kind": "ReferenceGrant",
        "metadata": {
            "name": spec.name,
            "namespace": namespace_of(spec),
            "labels": deployment_labels(spec.team_slug, spec.name, spec.deployment_id),
        },
        "spec": {
            "from": [
                {"group": "aigateway.envoyproxy.io", "kind": "AIGatewayRoute", "namespace": gateway_namespace},
                {"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "namespace": gateway_namespace},
            ],
            "to": [{"group": INFERENCE_POOL_GROUP, "kind": INFERENCE_POOL_KIND, "name": inference_pool_name(spec)}],
        },
    }


def build_pool_route(spec: DeploymentSpec) -> Manifest:
    """Today's route (name, matches on the model and the team's client ids, timeouts, token cost keys), with its
    one rule sending to the deployment's InferencePool instead of an AIServiceBackend. It stays in the gateway's
    namespace, where the shared Gateway admits routes; the pool then has no `status.parents` (AI Gateway v1.1.0 looks
    for a pool's routes in the pool's namespace only), which is harmless (module docstring)."""
    route = build_route(spec)
    pool_ref: dict[str, Any] = {**_pool_ref(spec), "weight": 1}
    if route_crosses_namespaces(spec):
        pool_ref["namespace"] = namespace_of(spec)
    for rule in route["spec"]["rules"]:
        rule["backendRefs"] = [dict(pool_ref)]
    return route


def build_deployment_objects_llmd(spec: DeploymentSpec) -> list[Manifest]:
    """The objects one llm-d deployment owns, in apply order: the service (its pool follows from the controller),
    what the endpoint picker reads about it, then the gateway's view of it (grant before the route that needs it)."""
    objects = [build_llm_inference_service(spec), build_inference_objective(spec)]
    if spec.served_model_aliases:
        objects.append(build_model_rewrite(spec))
    if route_crosses_namespaces(spec):
        objects.append(build_pool_reference_grant(spec))
    objects.append(build_pool_route(spec))
    return objects
