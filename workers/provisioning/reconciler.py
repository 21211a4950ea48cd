"""The deployment reconciler: level-triggered, idempotent, keyed by id.

One pass: take the deployment's lock, load its frozen spec, build the desired objects (pure), apply only
those whose rendered content changed (a content hash annotation makes an unchanged deployment cost reads,
never writes), prune owned objects no longer desired, read status back and record it guarded by generation.
A deployment marked for deletion has every owned object removed before its row is finalized.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import json
import logging
import re
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import redis
from django.conf import settings
from django.utils import timezone

from portal.clusters import selectors as cluster_selectors
from portal.clusters.contracts import KUEUE, AcceleratorPoolContract, ClusterContract
from portal.deployments import selectors as deployment_selectors
from portal.deployments import services as deployment_services
from portal.deployments.contracts import LLMD_MODE, STANDARD_MODE, DeploymentSpec, ObservedStatus
from portal.gateway import selectors as gateway_selectors
from portal.tenancy import selectors as tenancy_selectors
from portal.tenancy.contracts import TeamQuotaContract
from workers.kube.client import Cluster, ListedObject, connect
from workers.kube.errors import TerminalClusterError
from workers.provisioning.manifests.deployment import (
    GPU_QUOTA_NAME,
    build_deployment_objects,
    build_namespace,
    build_team_objects,
    namespace_of,
)
from workers.provisioning.manifests.kueue import (
    COHORT_NAME,
    QUEUE_NAME_LABEL,
    build_kueue_cluster_objects,
    build_kueue_quota_objects,
    build_kueue_team_objects,
)
from workers.provisioning.manifests.labels import DEPLOYMENT_ID_KEY, MANAGED_BY, MANAGED_BY_KEY, deployment_selector
from workers.provisioning.manifests.llmd import (
    INFERENCE_POOL_GROUP,
    INFERENCE_POOL_KIND,
    build_deployment_objects_llmd,
    inference_pool_name,
    kserve_child_name,
)
from workers.provisioning.manifests.upstream import (
    AIGW_API_VERSION,
    CACHE_API_VERSION,
    EG_API_VERSION,
    GPU_RESOURCE,
    ISVC_API_VERSION,
    KUEUE_API_VERSION,
    LLMD_API_VERSION,
    LLMISVC_API_VERSION,
    REFERENCE_GRANT_API_VERSION,
)
from workers.provisioning.status import (
    derive_llmd_status,
    derive_status,
    llmd_serving_ready,
    queued_by_kueue,
    standard_serving_ready,
)

logger = logging.getLogger(__name__)

HASH_ANNOTATION = "portal.genai.io/content-hash"
PREDICTOR_POD_LABEL = "serving.kserve.io/inferenceservice"
# KServe labels an LLMInferenceService's decode pods (and, with `-prefill`, its prefill pods) so (kserve v0.20.0
# pkg/controller/v1alpha2/llmisvc/workload_single_node.go expectedSingleNodeMainDeployment, expectedPrefillMainDeployment).
LLMD_POD_PART_OF = "app.kubernetes.io/part-of=llminferenceservice"
LLMD_POD_NAME_LABEL = "app.kubernetes.io/name"
LLMD_POD_COMPONENT_LABEL = "app.kubernetes.io/component"
LLMD_DECODE_COMPONENT = "llminferenceservice-workload"
LLMD_PREFILL_COMPONENT = "llminferenceservice-workload-prefill"
INFERENCE_POOL_API_VERSION = f"{INFERENCE_POOL_GROUP}/v1"
# Kinds a deployment can own, where to look for them (team namespace, gateway namespace, cluster-scoped).
OWNED_KINDS = (
    (CACHE_API_VERSION, "LocalModelCache", "cluster"),
    (ISVC_API_VERSION, "InferenceService", "team"),
    (EG_API_VERSION, "Backend", "gateway"),
    (AIGW_API_VERSION, "AIServiceBackend", "gateway"),
    (AIGW_API_VERSION, "AIGatewayRoute", "gateway"),
)
# And on a cluster that runs llm-d (only there are these kinds served, so only there are they listed).
LLMD_OWNED_KINDS = (
    (LLMISVC_API_VERSION, "LLMInferenceService", "team"),
    (LLMD_API_VERSION, "InferenceObjective", "team"),
    (LLMD_API_VERSION, "InferenceModelRewrite", "team"),
    (REFERENCE_GRANT_API_VERSION, "ReferenceGrant", "team"),
)
# The object that serves in each mode: while the other mode's is still owned, the deployment is switching.
SERVING_KIND = {LLMD_MODE: "LLMInferenceService"}
STANDARD_SERVING_KIND = "InferenceService"


# On a Kueue cluster: the queues every deployment's team needs, shared (never pruned with a deployment).
KUEUE_KINDS = (
    (KUEUE_API_VERSION, "Cohort"),
    (KUEUE_API_VERSION, "ResourceFlavor"),
    (KUEUE_API_VERSION, "ClusterQueue"),
    (KUEUE_API_VERSION, "LocalQueue"),
)
# The portal's Cohort is made first on a Kueue cluster and deleted last when it leaves Kueue (drop_kueue_objects): one
# list of it tells whether anything of a Kueue past is left.
KUEUE_COHORT = (KUEUE_API_VERSION, "Cohort")
WORKLOAD_TYPE = (KUEUE_API_VERSION, "Workload")
WORKLOAD_POD_LABEL = "kueue.x-k8s.io/job-uid"


@dataclass(frozen=True)
class TeamInputs:
    """What a team's shared objects on a cluster are built from: its GPU total (the ResourceQuota's cap) or, on a
    Kueue cluster, its quota (nominal and borrowing per type) and the cluster's pools (a flavor each)."""

    gpu_total: int
    quota: TeamQuotaContract | None = None
    pools: tuple[AcceleratorPoolContract, ...] = ()


def team_inputs(spec: DeploymentSpec) -> TeamInputs:
    if spec.cluster.gpu_quota != KUEUE:
        return TeamInputs(tenancy_selectors.team_gpu_total(team_slug=spec.team_slug))
    return TeamInputs(
        0,
        tenancy_selectors.team_quota_contract(team_slug=spec.team_slug),
        tuple(cluster_selectors.pool_contracts(cluster_id=spec.cluster.cluster_id)),
    )


def team_objects(spec: DeploymentSpec, inputs: TeamInputs) -> list[dict[str, Any]]:
    """The team's namespace and its GPU cap on this cluster: a ResourceQuota, or on a Kueue cluster the cohort, a
    flavor per pool, the team's ClusterQueue and its namespace's LocalQueue (in apply order)."""
    if inputs.quota is None:
        return build_team_objects(spec, inputs.gpu_total)
    return [
        build_namespace(spec),
        *build_kueue_cluster_objects(inputs.pools),
        *build_kueue_team_objects(spec.cluster, inputs.pools, inputs.quota),
    ]


def owned_kinds(cluster: ClusterContract) -> tuple[tuple[str, str, str], ...]:
    return OWNED_KINDS + (LLMD_OWNED_KINDS if cluster.runs_llmd else ())


def desired_objects(spec: DeploymentSpec) -> list[dict[str, Any]]:
    """The objects the deployment owns in its serving mode, in apply order."""
    if spec.serving_mode == LLMD_MODE:
        return build_deployment_objects_llmd(spec)
    return build_deployment_objects(spec)


def serving_kind(serving_mode: str) -> str:
    return SERVING_KIND.get(serving_mode, STANDARD_SERVING_KIND)


class DeploymentBusy(Exception):
    """Another worker holds this deployment's lock; the task retries shortly."""


@dataclass(frozen=True)
class ReconcileResult:
    deployment_id: int
    outcome: str  # "applied", "unchanged", "deleted", "deleting", "gone", "stale"
    writes: int
    phase: str = ""


@functools.cache
def redis_client() -> redis.Redis:
    """One client (and connection pool) per process: a lock costs one round trip, not a new connection."""
    return redis.Redis.from_url(settings.RESOLVED_REDIS_URL)


def lock_seconds() -> int:
    """A reconcile holds its lock at most as long as its task may run (Celery's hard time limit kills it then),
    plus a margin (half the limit, at most 30 s): a killed worker frees the subject then, and a long run never loses
    its lock midway."""
    limit = int(settings.CELERY_TASK_TIME_LIMIT)
    return limit + min(30, limit // 2)


@contextmanager
def reconcile_lock(subject: str, busy: Exception) -> Iterator[None]:
    """One reconcile of `subject` at a time across workers: `busy` is raised (the task retries) when another
    holds it; a worker that dies holding it blocks the subject for lock_seconds() at most."""
    lock = redis_client().lock(f"portal:lock:{subject}", timeout=lock_seconds(), blocking=False)
    if not lock.acquire(blocking=False):
        raise busy
    try:
        yield
    finally:
        try:
            lock.release()
        except redis.exceptions.LockError:
            logger.warning("lock of %s expired before release", subject)


def deployment_lock(deployment_id: int) -> AbstractContextManager[None]:
    return reconcile_lock(
        f"deployment:{deployment_id}", DeploymentBusy(f"deployment {deployment_id} is being reconciled elsewhere")
    )


def content_hash(manifest: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:32]


def with_hash(manifest: dict[str, Any]) -> dict[str, Any]:
    stamped = copy.deepcopy(manifest)
    annotations = stamped["metadata"].setdefault("annotations", {})
    annotations[HASH_ANNOTATION] = content_hash(manifest)
    return stamped


def _live_hash(live: dict[str, Any] | None) -> str | None:
    if live is None:
        return None
    return str(((live.get("metadata") or {}).get("annotations") or {}).get(HASH_ANNOTATION) or "") or None


_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(m|k|M|G|T|P|Ki|Mi|Gi|Ti|Pi)?$")
_QUANTITY_SCALE = {
    None: Decimal(1), "m": Decimal("0.001"), "k": Decimal(10**3), "M": Decimal(10**6), "G": Decimal(10**9),
    "T": Decimal(10**12), "P": Decimal(10**15), "Ki": Decimal(2**10), "Mi": Decimal(2**20), "Gi": Decimal(2**30),
    "Ti": Decimal(2**40), "Pi": Decimal(2**50),
}  # fmt: skip


def _quantity(value: Any) -> Decimal | None:
    match = _QUANTITY.match(value) if isinstance(value, str) else None
    return Decimal(match.group(1)) * _QUANTITY_SCALE[match.group(2)] if match else None


def holds(live: Any, desired: Any) -> bool:
    """The live value holds the desired one: every field the portal sets, with its value (what the server or
    other managers add beside them is not the portal's). Quantities compare by amount: the API server writes
    "0.5" back as "500m"."""
    if isinstance(desired, dict):
        return isinstance(live, dict) and all(holds(live.get(key), value) for key, value in desired.items())
    if isinstance(desired, list):
        return (
            isinstance(live, list)
            and len(live) == len(desired)
            and all(holds(item, wanted) for item, wanted in zip(live, desired, strict=True))
        )
    if live == desired:
        return True
    amount = _quantity(desired)
    return amount is not None and amount == _quantity(live)


def in_sync(live: dict[str, Any] | None, manifest: dict[str, Any]) -> bool:
    """The live object is this manifest as last applied and nobody changed what the portal owns since: the content
    hash says which version was applied; the content itself catches a `kubectl edit` that kept the annotation."""
    # What an object is comes from what was listed: a real API server's list items of built-in kinds lack both.
    owned = {key: value for key, value in manifest.items() if key not in ("apiVersion", "kind")}
    return live is not None and _live_hash(live) == content_hash(manifest) and holds(live, owned)


def converge(cluster: Cluster, manifests: list[dict[str, Any]]) -> tuple[int, dict[tuple[str, str], dict[str, Any]]]:
    """Apply each manifest whose live copy is missing, carries another content hash, or no longer holds what the
    portal set (edited by someone else); returns (writes, live)."""
    writes = 0
    live_objects: dict[tuple[str, str], dict[str, Any]] = {}
    for manifest in manifests:
        stamped = with_hash(manifest)
        metadata = manifest["metadata"]
        live = cluster.get(manifest["apiVersion"], manifest["kind"], metadata["name"], metadata.get("namespace"))
        if not in_sync(live, manifest):
            live = cluster.apply(stamped)
            writes += 1
        live_objects[(manifest["kind"], metadata["name"])] = live or {}
    return writes, live_objects


def _owned(cluster: Cluster, spec: DeploymentSpec) -> list[ListedObject]:
    selector = deployment_selector(spec.deployment_id)
    found: list[ListedObject] = []
    for api_version, kind, where in owned_kinds(spec.cluster):
        namespace = {"team": namespace_of(spec), "gateway": spec.cluster.gateway_namespace}.get(where)
        found.extend(cluster.list(api_version, kind, label_selector=selector, namespace=namespace))
    return found


def prune(cluster: Cluster, owned: list[ListedObject], desired: list[dict[str, Any]]) -> int:
    """Delete the owned objects (as listed by ownership labels) that are no longer desired; returns deletes.

    A listed object is known by the kind that was listed, not by its own fields: a real API server leaves `kind`
    and `apiVersion` off the items of a built-in kind's list (ListedObject)."""
    wanted = {(item["kind"], item["metadata"]["name"]) for item in desired}
    deletes = 0
    for live in owned:
        if (live.kind, live.name) not in wanted and cluster.delete(
            live.api_version, live.kind, live.name, live.namespace
        ):
            deletes += 1
    return deletes


def _endpoint_base(spec: DeploymentSpec, serving: dict[str, Any]) -> str:
    if spec.cluster.gateway_url:
        return spec.cluster.gateway_url
    status = serving.get("status") or {}
    url = str(status.get("url") or "")
    if spec.serving_mode == LLMD_MODE:
        # vLLM itself answers under /v1. With no KServe-managed route there is no status.url, only the workload
        # Service's in-cluster address (KServe v0.20.0 router.go updateRoutingStatus).
        addresses = [item.get("url") for item in status.get("addresses") or [] if isinstance(item, dict)]
        return url or str(next((address for address in addresses if address), ""))
    return f"{url.rstrip('/')}/openai" if url else ""


def _serving_pods(cluster: Cluster, spec: DeploymentSpec) -> list[ListedObject]:
    """The deployment's model server pods: KServe labels an InferenceService's predictor pods with its name
    (Standard mode), and an LLMInferenceService's decode and prefill pods with theirs."""
    if spec.serving_mode == LLMD_MODE:
        selector = f"{LLMD_POD_PART_OF},{LLMD_POD_NAME_LABEL}={spec.name}"
    else:
        selector = f"{PREDICTOR_POD_LABEL}={spec.name}"
    return cluster.list("v1", "Pod", label_selector=selector, namespace=namespace_of(spec))


def _is_replica(spec: DeploymentSpec, pod: ListedObject) -> bool:
    """A serving replica: any predictor pod; of llm-d's, the decode ones (prefill pods are counted apart)."""
    if spec.serving_mode != LLMD_MODE:
        return True
    return (pod.metadata.get("labels") or {}).get(LLMD_POD_COMPONENT_LABEL) == LLMD_DECODE_COMPONENT


def _ready_replicas(cluster: Cluster, spec: DeploymentSpec, pods: list[ListedObject] | None = None) -> int:
    pods = _serving_pods(cluster, spec) if pods is None else pods
    return sum(1 for pod in pods if _is_replica(spec, pod) and _is_ready_pod(pod.manifest))


def _is_prefill_pod(labels: dict[str, Any]) -> bool:
    """An llm-d prefill replica: KServe labels the prefill Deployment's pods with component
    `llminferenceservice-workload-prefill` (kserve v0.20.0 pkg/controller/v1alpha2/llmisvc/workload_single_node.go
    expectedPrefillMainDeployment); they hold GPUs of their own, charged beside the decode replicas'."""
    return labels.get(LLMD_POD_COMPONENT_LABEL) == LLMD_PREFILL_COMPONENT


def _ready_prefill_replicas(spec: DeploymentSpec, pods: list[ListedObject]) -> int:
    if spec.serving_mode != LLMD_MODE:
        return 0
    return sum(1 for pod in pods if _is_prefill_pod(pod.metadata.get("labels") or {}) and _is_ready_pod(pod.manifest))


def _with_prefill(status: ObservedStatus, prefill_replicas: int) -> ObservedStatus:
    return dataclasses.replace(status, observed_prefill_replicas=prefill_replicas)


def _owner_pod(workload: dict[str, Any]) -> str:
    for reference in (workload.get("metadata") or {}).get("ownerReferences") or []:
        if reference.get("kind") == "Pod":
            return str(reference.get("name") or "")
    return ""


def _workloads(cluster: Cluster, spec: DeploymentSpec, pods: list[ListedObject]) -> list[dict[str, Any]]:
    """Kueue's Workloads for the deployment's pods (Kueue's pod integration: one per pod, owned by it, labelled
    with its uid; Kueue v0.19.2 pkg/controller/jobs/pod). None off Kueue clusters."""
    if spec.cluster.gpu_quota != KUEUE or not pods:
        return []
    names = {pod.name for pod in pods}
    listed = cluster.list(*WORKLOAD_TYPE, label_selector=WORKLOAD_POD_LABEL, namespace=namespace_of(spec))
    return [item.manifest for item in listed if _owner_pod(item.manifest) in names]


def _observe(
    spec: DeploymentSpec,
    *,
    serving: dict[str, Any] | None,
    pool: dict[str, Any] | None,
    route: dict[str, Any] | None,
    ready_replicas: int,
) -> ObservedStatus:
    """The deployment's status in its mode, from its serving object (and pool) and its route."""
    if spec.serving_mode == LLMD_MODE:
        return derive_llmd_status(
            llm_inference_service=serving,
            inference_pool=pool,
            route=route,
            endpoint_base=_endpoint_base(spec, serving or {}),
            served_model_name=spec.served_model_name,
            ready_replicas=ready_replicas,
        )
    return derive_status(
        inference_service=serving,
        route=route,
        endpoint_base=_endpoint_base(spec, serving or {}),
        served_model_name=spec.served_model_name,
        ready_replicas=ready_replicas,
    )


def redacted(manifests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What `.../manifests` shows: Secret values replaced, everything else as applied."""
    shown = []
    for manifest in manifests:
        copied = copy.deepcopy(manifest)
        if copied.get("kind") == "Secret":
            for field in ("data", "stringData"):
                if field in copied:
                    copied[field] = dict.fromkeys(copied[field], "[redacted]")
        shown.append(copied)
    return shown


def deployment_spec(deployment_id: int) -> DeploymentSpec | None:
    """A deployment's desired state with its route's key allow-list: keys are the gateway's, deployments and gateway
    are independent siblings, and the reconciler, above both, composes them."""
    return deployment_selectors.deployment_spec(
        deployment_id=deployment_id, allowed_key_ids=gateway_selectors.deployment_allowed_key_ids
    )


def deployment_specs(deployment_ids: list[int]) -> list[DeploymentSpec]:
    """The desired state of many deployments (a resync), with their routes' key allow-lists (deployment_spec)."""
    return deployment_selectors.deployment_specs(
        deployment_ids=deployment_ids, allowed_key_ids=gateway_selectors.deployment_allowed_key_ids
    )


def reconcile_deployment(deployment_id: int) -> ReconcileResult:
    with deployment_lock(deployment_id):
        spec = deployment_spec(deployment_id)
        if spec is None:
            return ReconcileResult(deployment_id, "gone", 0)
        cluster = connect(cluster_selectors.cluster_connection(cluster_id=spec.cluster.cluster_id))
        if spec.deleting:
            return _delete(cluster, spec)
        desired = desired_objects(spec)
        inputs = team_inputs(spec)
        # Nothing can be left over from an earlier spec before the first one was ever applied whole (a half-applied
        # first generation only made objects that are still desired); the resync's snapshot catches anything else.
        owned = _owned(cluster, spec) if spec.observed_generation or spec.generation > 1 else []
        leaving = [item for item in owned if item.kind == serving_kind(_other_mode(spec))]
        if leaving and inputs.quota is None:
            inputs = _with_switch_headroom(cluster, spec, inputs)
        # The model server's pods, listed before the team's objects converge: a queue move's room comes from them.
        pods = [] if leaving else _serving_pods(cluster, spec)
        if not leaving and inputs.quota is None:
            inputs = _with_queue_move_headroom(spec, desired, pods, inputs)
        try:
            team_writes, _ = converge(cluster, team_objects(spec, inputs))
            if inputs.quota is not None:
                dropped = _drop_resource_quota(cluster, spec)
                if dropped:  # the cluster just moved to Kueue: every team's queues now, not at the next resync
                    team_writes += dropped + converge_cluster_quota(cluster, spec.cluster, None)
            elif team_writes and _kueue_left_behind(cluster):
                # The team's ResourceQuota had to be (re)made: as when the cluster just left Kueue, whose queues go
                # now rather than at the next resync (a steady cluster never pays this GET).
                team_writes += drop_kueue_objects(cluster)
            if leaving:
                return _switch_modes(cluster, spec, desired, owned, team_writes, inputs)
            writes, live = converge(cluster, desired)
        except TerminalClusterError as error:
            deployment_services.deployment_failure_record(
                deployment_id=spec.deployment_id,
                generation=spec.generation,
                reason=error.reason or "Invalid",
                message=f"the cluster refused the deployment: {error.message}",
            )
            return ReconcileResult(deployment_id, "failed", 0, "Failed")
        writes += prune(cluster, owned, desired) + team_writes
        if spec.switch_held_gpus:  # a switch whose old objects an earlier pass pruned: their GPUs are free now
            deployment_services.deployment_switch_completed(
                deployment_id=spec.deployment_id, generation=spec.generation
            )
        route = next((item for (kind, _), item in live.items() if kind == "AIGatewayRoute"), None)
        status = _observe(
            spec,
            serving=live.get((serving_kind(spec.serving_mode), spec.name)) or None,
            pool=_live_pool(cluster, spec),
            route=route,
            ready_replicas=_ready_replicas(cluster, spec, pods),
        )
        status = _with_prefill(status, _ready_prefill_replicas(spec, pods))
        status = queued_by_kueue(status, _workloads(cluster, spec, pods))
        status, moved = _move_model_server_queue(cluster, spec, desired, pods, status)
        writes += moved
        deployment_services.deployment_status_record(
            deployment_id=spec.deployment_id,
            generation=spec.generation,
            status=status,
            reconciled_at=timezone.now(),
            applied_manifests=redacted([with_hash(item) for item in desired]),
        )
        return ReconcileResult(deployment_id, "applied" if writes else "unchanged", writes, status.phase)


MODEL_SERVER_QUEUE_CONDITION = "ModelServerQueueMove"


def _wanted_queue(spec: DeploymentSpec, desired: list[dict[str, Any]]) -> str:
    """The queue-name label the deployment's serving object carries ("" off Kueue): KServe copies it onto the
    Deployments of the model server (the predictor; llm-d's decode and prefill) and their pod templates."""
    serving = next((item for item in desired if item["kind"] == serving_kind(spec.serving_mode)), None)
    return str(((serving or {}).get("metadata") or {}).get("labels", {}).get(QUEUE_NAME_LABEL) or "")


def _queue_of(labels: dict[str, Any] | None) -> str:
    return str((labels or {}).get(QUEUE_NAME_LABEL) or "")


def _model_server_deployments(spec: DeploymentSpec) -> list[str]:
    """KServe's Deployments of the model server, which carry the queue-name label: the raw-mode predictor
    (constants.PredictorServiceName), or llm-d's decode and prefill workloads (kserve v0.20.0
    pkg/controller/v1alpha2/llmisvc/workload_single_node.go; its endpoint picker's gets no Kueue label)."""
    if spec.serving_mode != LLMD_MODE:
        return [f"{spec.name}-predictor"]
    names = [kserve_child_name(spec.name, "-kserve")]
    if spec.prefill_replicas:
        names.append(kserve_child_name(spec.name, "-kserve-prefill"))
    return names


def _is_model_server_pod(spec: DeploymentSpec, pod: ListedObject) -> bool:
    return _is_replica(spec, pod) or _is_prefill_pod(pod.metadata.get("labels") or {})


def _with_queue_move_headroom(
    spec: DeploymentSpec, desired: list[dict[str, Any]], pods: list[ListedObject], inputs: TeamInputs
) -> TeamInputs:
    """A cluster moved back to ResourceQuotas: the model server's pods still on Kueue's queue are replaced surge
    first (_move_model_server_queue), so while they remain the namespace's cap is raised by the GPUs they request, as
    for a mode switch: a team at its cap would otherwise have its new pods refused and the move wait forever. Nothing
    changes once no pod is left on another queue."""
    wanted = _wanted_queue(spec, desired)
    stale = sum(
        (
            _pod_gpus(pod.manifest)
            for pod in pods
            if _is_model_server_pod(spec, pod) and _queue_of(pod.metadata.get("labels")) != wanted
        ),
        Decimal(0),
    )
    return dataclasses.replace(inputs, gpu_total=inputs.gpu_total + int(stale)) if stale else inputs


def _move_model_server_queue(
    cluster: Cluster,
    spec: DeploymentSpec,
    desired: list[dict[str, Any]],
    pods: list[ListedObject],
    status: ObservedStatus,
) -> tuple[ObservedStatus, int]:
    """A live deployment on a cluster moved onto or off Kueue: its serving object's queue-name label changed, and
    KServe copies it onto the model server's Deployments (the predictor with the whole object, kserve v0.20.0
    reconcilers/deployment/deployment_reconciler.go: a dry-run Update, then a two-way merge patch; llm-d's decode
    and prefill Deployments, workload_single_node.go propagateDeploymentMetadata). Kueue's
    validating webhook refuses that while the Deployment has a ready replica, and always when the label goes
    (Kueue v0.19.2 pkg/controller/jobs/deployment/deployment_webhook.go ValidateUpdate), so KServe's reconcile fails
    and, a label change bumping no generation, the InferenceService still reads Ready: the pods would stay outside
    Kueue (or, back on ResourceQuotas, name a queue that is gone). The webhook checks the Deployment, not its pods:
    new pods are judged as new (the pod webhook gates a labelled one until Kueue admits it). So a model server
    Deployment whose label is not the wanted one is deleted with propagationPolicy Orphan: its pods keep serving,
    KServe creates the Deployment anew with the label (a create, which the webhook allows), and the new Deployment
    adopts the running pods through its selector and replaces them by a rolling update, new pods Ready before old
    ones go. Costs nothing while every model server pod has the wanted label (the pods are listed anyway); until
    then a GET per Deployment, and one delete the first time. Returns the status (saying what is under way) and the
    writes."""
    wanted = _wanted_queue(spec, desired)
    stale = [pod for pod in pods if _is_model_server_pod(spec, pod) and _queue_of(pod.metadata.get("labels")) != wanted]
    if not stale:
        return status, 0
    namespace = namespace_of(spec)
    writes = 0
    for name in _model_server_deployments(spec):
        live = cluster.get("apps/v1", "Deployment", name, namespace)
        if live is not None and _queue_of(live["metadata"].get("labels")) != wanted:
            writes += int(cluster.delete("apps/v1", "Deployment", name, namespace, orphan=True))
    where = f"into Kueue's queue '{wanted}'" if wanted else "off Kueue's queue, under the namespace's ResourceQuota"
    message = (
        f"moving the model server {where}: Kueue's webhook refuses a queue-name change on a Deployment with ready "
        f"pods, so its Deployment is re-created and its {len(stale)} pod(s) from before are replaced one by one, "
        f"each serving until its successor is ready"
    )
    condition = {"type": MODEL_SERVER_QUEUE_CONDITION, "status": "True", "reason": "ReplacingPods", "message": message}
    moving = dataclasses.replace(
        status,
        phase="Provisioning",
        conditions=(*status.conditions, condition),
        message=message,
        endpoint=status.endpoint if status.phase == "Ready" else "",
    )
    return moving, writes


def cluster_quota_objects(contract: ClusterContract) -> list[dict[str, Any]]:
    """A Kueue cluster's cohort, flavors and every GPU-holding team's namespace and queues; nothing elsewhere."""
    if contract.gpu_quota != KUEUE:
        return []
    pools = cluster_selectors.pool_contracts(cluster_id=contract.cluster_id)
    quotas = tenancy_selectors.team_quota_contracts(accelerator_types=[pool.accelerator_type for pool in pools])
    return build_kueue_quota_objects(contract, pools, quotas)


def drop_kueue_objects(cluster: Cluster) -> int:
    """A cluster moved back from Kueue to ResourceQuotas: the queues, flavors and cohort the portal made (known by its
    managed-by label; LocalQueues first, the Cohort last, so an interrupted pass is resumed by the cohort's presence)
    are deleted. Deployments stay: their namespace's ResourceQuota caps them again (build_team_objects). Kueue's own
    objects and any the platform team made without the portal's label are left alone. Returns the deletes."""
    managed = f"{MANAGED_BY_KEY}={MANAGED_BY}"
    deletes = 0
    for api_version, kind in reversed(KUEUE_KINDS):
        for listed in cluster.list(api_version, kind, label_selector=managed, all_namespaces=True):
            deletes += int(cluster.delete(api_version, kind, listed.name, listed.namespace))
    return deletes


def _kueue_left_behind(cluster: Cluster) -> bool:
    """One GET: the portal's Cohort is made first on a Kueue cluster and deleted last when it leaves Kueue."""
    cohort = cluster.get(KUEUE_API_VERSION, "Cohort", COHORT_NAME)
    return cohort is not None and (cohort["metadata"].get("labels") or {}).get(MANAGED_BY_KEY) == MANAGED_BY


def converge_cluster_quota(cluster: Cluster, contract: ClusterContract, snapshot: ClusterSnapshot | None) -> int:
    """Apply the cluster's Kueue objects that are missing or changed (compared with the snapshot when there is one,
    so an unchanged cluster costs no request); returns the writes. Off Kueue, the portal's Kueue objects left from
    when the cluster used it are deleted: always on a direct call (no snapshot); in the resync only when the
    snapshot's list of the portal's Cohort found one, so a steady cluster's resync costs that one list, no write."""
    if contract.gpu_quota != KUEUE:
        if snapshot is None or any(key[0] == KUEUE_COHORT[1] for key in snapshot.objects):
            return drop_kueue_objects(cluster)
        return 0
    manifests = cluster_quota_objects(contract)
    if snapshot is None:
        return converge(cluster, manifests)[0]
    writes = 0
    for manifest in manifests:
        if not in_sync(snapshot.live(_key_of(manifest)), manifest):
            cluster.apply(with_hash(manifest))
            writes += 1
    return writes


def resync_cluster_quota(cluster_id: int) -> int:
    """The resync's look at a cluster none of whose deployments it checks (it may have none at all): off Kueue, one
    list of the portal's Cohort and, when one is left from a Kueue past, every queue, flavor and cohort the portal
    made goes (drop_kueue_objects); on Kueue, nothing (its queues are converged when a deployment or a quota changes).
    Returns the deletes."""
    contract = cluster_selectors.cluster_contract(cluster_id=cluster_id)
    if contract.gpu_quota == KUEUE:
        return 0
    cluster = connect(cluster_selectors.cluster_connection(cluster_id=cluster_id))
    managed = f"{MANAGED_BY_KEY}={MANAGED_BY}"
    if not cluster.list(*KUEUE_COHORT, label_selector=managed):
        return 0
    return drop_kueue_objects(cluster)


def reconcile_cluster_quota(cluster_id: int) -> int:
    """Converge a cluster's GPU queues now (a cluster moved to Kueue, a team's quota changed): the writes made."""
    contract = cluster_selectors.cluster_contract(cluster_id=cluster_id)
    cluster = connect(cluster_selectors.cluster_connection(cluster_id=cluster_id))
    return converge_cluster_quota(cluster, contract, None)


def _drop_resource_quota(cluster: Cluster, spec: DeploymentSpec) -> int:
    """A cluster moved to Kueue: the namespace's ResourceQuota from before would still cap the team below what Kueue
    lends it, so it goes (deployments stay; Kueue admits their pods from now on)."""
    namespace = namespace_of(spec)
    if cluster.get("v1", "ResourceQuota", GPU_QUOTA_NAME, namespace) is None:
        return 0
    return int(cluster.delete("v1", "ResourceQuota", GPU_QUOTA_NAME, namespace))


def _other_mode(spec: DeploymentSpec) -> str:
    return STANDARD_MODE if spec.serving_mode == LLMD_MODE else LLMD_MODE


def _live_pool(cluster: Cluster, spec: DeploymentSpec) -> dict[str, Any] | None:
    """The InferencePool KServe made for an llm-d deployment (it is KServe's, not the portal's: read, never applied)."""
    if spec.serving_mode != LLMD_MODE:
        return None
    return cluster.get(INFERENCE_POOL_API_VERSION, INFERENCE_POOL_KIND, inference_pool_name(spec), namespace_of(spec))


def _switch_modes(
    cluster: Cluster,
    spec: DeploymentSpec,
    desired: list[dict[str, Any]],
    owned: list[ListedObject],
    team_writes: int,
    inputs: TeamInputs,
) -> ReconcileResult:
    """A live deployment changes serving mode without a moment where its route points at nothing: the new mode's
    objects are applied beside the old ones while the route keeps sending to the old; once the new serving object is
    Ready (and, for llm-d, its pool exists), the route is rewritten in one apply (the gateway swaps a route's
    backends atomically); the old objects are pruned on a later pass, once the live route already is the new one,
    so no request the gateway still routes by the old route finds its backend gone."""
    route = next(item for item in desired if item["kind"] == "AIGatewayRoute")
    serving_objects = [item for item in desired if item["kind"] != "AIGatewayRoute"]
    writes, live = converge(cluster, serving_objects)
    serving = live.get((serving_kind(spec.serving_mode), spec.name)) or None
    pool = _live_pool(cluster, spec)
    pods = _serving_pods(cluster, spec)
    ready_replicas = _ready_replicas(cluster, spec, pods)
    if spec.serving_mode == LLMD_MODE:
        ready = llmd_serving_ready(serving, pool)
    else:
        ready = standard_serving_ready(serving)
    route_live = cluster.get(
        route["apiVersion"], route["kind"], route["metadata"]["name"], route["metadata"]["namespace"]
    )
    route_switched = in_sync(route_live, route)
    finished = False
    if ready and route_switched:
        writes += prune(cluster, owned, desired)
        finished = True
        deployment_services.deployment_switch_completed(deployment_id=spec.deployment_id, generation=spec.generation)
    elif ready:
        route_live = cluster.apply(with_hash(route))
        writes += 1
    status = _observe(spec, serving=serving, pool=pool, route=route_live, ready_replicas=ready_replicas)
    status = _with_prefill(status, _ready_prefill_replicas(spec, pods))
    if not finished:
        step = (
            "the route now sends to them; the old objects go next"
            if ready
            else "the route keeps serving from the old ones until they are ready"
        )
        conditions = status.conditions
        held = None if ready else _switch_held_by_gpu_cap(cluster, spec, inputs)
        if held is not None:
            conditions = (*conditions, held)
            step = f"{step}; {held['message']}"
        gateway = spec.cluster.gateway_url
        status = ObservedStatus(
            phase="Provisioning",
            conditions=conditions,
            message=f"switching to the {spec.serving_mode} serving mode: {step}",
            endpoint=f"{gateway.rstrip('/')}/v1" if gateway else "",  # the gateway keeps serving it throughout
            observed_replicas=status.observed_replicas,
            observed_prefill_replicas=status.observed_prefill_replicas,
        )
    deployment_services.deployment_status_record(
        deployment_id=spec.deployment_id,
        generation=spec.generation,
        status=status,
        reconciled_at=timezone.now(),
        applied_manifests=redacted([with_hash(item) for item in desired]),
    )
    return ReconcileResult(
        spec.deployment_id, "applied" if writes + team_writes else "unchanged", writes + team_writes, status.phase
    )


SWITCH_HELD_CONDITION = "GpuQuotaHoldsSwitch"


def _with_switch_headroom(cluster: Cluster, spec: DeploymentSpec, inputs: TeamInputs) -> TeamInputs:
    """During a mode switch on a ResourceQuota cluster the team's cap is raised by the GPUs the old mode's pods still
    request: the new pods must start before the old go (the route moves only to Ready replicas), so a team at its cap
    would otherwise wait forever. The portal's admission counts the old mode's GPUs as held while the switch is in
    flight (Deployment.switch_held_gpus), so no other deployment is admitted into this room; it lasts only until the
    old objects are pruned (the next reconcile renders the cap, and deployment_switch_completed releases them)."""
    old_pods = _serving_pods(cluster, dataclasses.replace(spec, serving_mode=_other_mode(spec)))
    old_gpus = sum((_pod_gpus(pod.manifest) for pod in old_pods), Decimal(0))
    return dataclasses.replace(inputs, gpu_total=inputs.gpu_total + int(old_gpus))


def _pod_gpus(pod: dict[str, Any]) -> Decimal:
    """The GPUs a pod's containers request (an extended resource's request defaults to its limit)."""
    total = Decimal(0)
    for container in (pod.get("spec") or {}).get("containers") or []:
        resources = container.get("resources") or {}
        value = (resources.get("requests") or {}).get(GPU_RESOURCE, (resources.get("limits") or {}).get(GPU_RESOURCE))
        total += _quantity(value) or Decimal(0)
    return total


def _switch_held_by_gpu_cap(cluster: Cluster, spec: DeploymentSpec, inputs: TeamInputs) -> dict[str, str] | None:
    """A mode switch on a ResourceQuota cluster starts the new mode's pods beside the old ones, which go only once the
    new are Ready: when the team's pods already hold its whole GPU cap, the quota refuses the new pods and the switch
    waits for GPUs to free up. Said as a condition naming the cap, or None (a Kueue cluster queues them instead, and
    says so itself). One list of the namespace's pods, only while a switch is not yet Ready."""
    if spec.cluster.gpu_quota == KUEUE:
        return None
    pods = cluster.list("v1", "Pod", label_selector="", namespace=namespace_of(spec))
    used = sum(
        (_pod_gpus(pod.manifest) for pod in pods if (pod.manifest.get("status") or {}).get("phase") not in FINISHED),
        Decimal(0),
    )
    if used + spec.gpus_per_replica <= inputs.gpu_total:
        return None
    message = (
        f"held at the team's GPU cap on this cluster: ResourceQuota {GPU_QUOTA_NAME} allows "
        f"{inputs.gpu_total} {GPU_RESOURCE}, its pods (the old mode's included) request {used:f}, and a new replica "
        f"needs {spec.gpus_per_replica}; lower another deployment's replicas or raise the team's GPU quota"
    )
    return {"type": SWITCH_HELD_CONDITION, "status": "True", "reason": "GpuQuotaExhausted", "message": message}


FINISHED = ("Succeeded", "Failed")


def _delete(cluster: Cluster, spec: DeploymentSpec) -> ReconcileResult:
    """Delete every owned object; finalize the row only once none is left (the next pass checks again)."""
    remaining = _owned(cluster, spec)
    deletes = 0
    for live in remaining:
        if cluster.delete(live.api_version, live.kind, live.name, live.namespace):
            deletes += 1
    if remaining and _owned(cluster, spec):
        return ReconcileResult(spec.deployment_id, "deleting", deletes, "Deleting")
    deployment_services.deployment_finalize(deployment_id=spec.deployment_id, generation=spec.generation)
    return ReconcileResult(spec.deployment_id, "deleted", deletes, "Deleting")


# ---------------------------------------------------------------------------------------------------- resync


@dataclass(frozen=True)
class ClusterSnapshot:
    """What an informer cache holds: every portal-owned object and predictor pod of one cluster, read with one
    list request per kind, so checking a thousand unchanged deployments costs a handful of requests."""

    objects: dict[tuple[str, str, str], ListedObject]  # (kind listed, namespace, name) -> live object
    owned_by_deployment: dict[str, set[tuple[str, str, str]]]  # deployment id label -> keys it owns
    ready_pods: dict[tuple[str, str], int]  # (namespace, InferenceService name) -> ready predictor pods
    # llm-d: (namespace, LLMInferenceService name) -> its ready decode pods; (namespace, name) -> InferencePool
    ready_llmd_pods: dict[tuple[str, str], int] = dataclasses.field(default_factory=dict)
    ready_prefill_pods: dict[tuple[str, str], int] = dataclasses.field(default_factory=dict)  # and its prefill pods
    pools: dict[tuple[str, str], dict[str, Any]] = dataclasses.field(default_factory=dict)
    # (serving mode, namespace, serving object name) -> its pods' names; (namespace, pod name) -> Kueue's Workload
    pods_by_owner: dict[tuple[str, str, str], list[str]] = dataclasses.field(default_factory=dict)
    # (serving mode, namespace, serving object name) -> the queue-name labels its model server pods carry ("": none)
    server_queues: dict[tuple[str, str, str], set[str]] = dataclasses.field(default_factory=dict)
    workloads_by_pod: dict[tuple[str, str], dict[str, Any]] = dataclasses.field(default_factory=dict)

    def workloads_of(self, serving_mode: str, namespace: str, name: str) -> list[dict[str, Any]]:
        pods = self.pods_by_owner.get((serving_mode, namespace, name), [])
        return [found for pod in pods if (found := self.workloads_by_pod.get((namespace, pod))) is not None]

    def live(self, key: tuple[str, str, str]) -> dict[str, Any] | None:
        listed = self.objects.get(key)
        return listed.manifest if listed is not None else None


def _is_ready_pod(pod: dict[str, Any]) -> bool:
    status = pod.get("status") or {}
    return status.get("phase") == "Running" and any(
        condition.get("type") == "Ready" and condition.get("status") == "True"
        for condition in status.get("conditions") or []
    )


def cluster_snapshot(cluster: Cluster, contract: ClusterContract | None = None) -> ClusterSnapshot:
    """One list per kind: the portal's own objects by its label, and the serving pods; on an llm-d cluster also the
    llm-d serving pods and the InferencePools KServe made, on a Kueue cluster the queues and Kueue's Workloads."""
    managed = f"{MANAGED_BY_KEY}={MANAGED_BY}"
    objects: dict[tuple[str, str, str], ListedObject] = {}
    owned: dict[str, set[tuple[str, str, str]]] = {}
    kinds_owned = owned_kinds(contract) if contract is not None else OWNED_KINDS
    kinds = [("v1", "Namespace"), ("v1", "ResourceQuota")] + [(version, kind) for version, kind, _ in kinds_owned]
    kueue = contract is not None and contract.gpu_quota == KUEUE
    if kueue:
        kinds += list(KUEUE_KINDS)
    elif contract is not None:
        kinds.append(KUEUE_COHORT)  # leftovers of a Kueue past (converge_cluster_quota prunes them)
    for api_version, kind in kinds:
        for listed in cluster.list(api_version, kind, label_selector=managed, all_namespaces=True):
            key = (listed.kind, listed.namespace or "", listed.name)
            objects[key] = listed
            deployment_id = (listed.metadata.get("labels") or {}).get(DEPLOYMENT_ID_KEY)
            if deployment_id:
                owned.setdefault(deployment_id, set()).add(key)
    ready: dict[tuple[str, str], int] = {}
    pods_by_owner: dict[tuple[str, str, str], list[str]] = {}
    server_queues: dict[tuple[str, str, str], set[str]] = {}
    for pod in cluster.list("v1", "Pod", label_selector=PREDICTOR_POD_LABEL, all_namespaces=True):
        owner = (pod.namespace or "", str((pod.metadata.get("labels") or {})[PREDICTOR_POD_LABEL]))
        pods_by_owner.setdefault((STANDARD_MODE, *owner), []).append(pod.name)
        server_queues.setdefault((STANDARD_MODE, *owner), set()).add(_queue_of(pod.metadata.get("labels")))
        if _is_ready_pod(pod.manifest):
            ready[owner] = ready.get(owner, 0) + 1
    ready_llmd: dict[tuple[str, str], int] = {}
    ready_prefill: dict[tuple[str, str], int] = {}
    pools: dict[tuple[str, str], dict[str, Any]] = {}
    if contract is not None and contract.runs_llmd:
        for pod in cluster.list("v1", "Pod", label_selector=LLMD_POD_PART_OF, all_namespaces=True):
            labels = pod.metadata.get("labels") or {}
            owner = (pod.namespace or "", str(labels.get(LLMD_POD_NAME_LABEL) or ""))
            pods_by_owner.setdefault((LLMD_MODE, *owner), []).append(pod.name)
            if labels.get(LLMD_POD_COMPONENT_LABEL) == LLMD_DECODE_COMPONENT or _is_prefill_pod(labels):
                server_queues.setdefault((LLMD_MODE, *owner), set()).add(_queue_of(labels))
            if labels.get(LLMD_POD_COMPONENT_LABEL) == LLMD_DECODE_COMPONENT and _is_ready_pod(pod.manifest):
                ready_llmd[owner] = ready_llmd.get(owner, 0) + 1
            elif _is_prefill_pod(labels) and _is_ready_pod(pod.manifest):
                ready_prefill[owner] = ready_prefill.get(owner, 0) + 1
        # KServe's pools carry no portal label; listing them all is still one request.
        pools = {
            (listed.namespace or "", listed.name): listed.manifest
            for listed in cluster.list(
                INFERENCE_POOL_API_VERSION, INFERENCE_POOL_KIND, label_selector="", all_namespaces=True
            )
        }
    workloads: dict[tuple[str, str], dict[str, Any]] = {}
    if kueue:
        for listed in cluster.list(*WORKLOAD_TYPE, label_selector=WORKLOAD_POD_LABEL, all_namespaces=True):
            workloads[(listed.namespace or "", _owner_pod(listed.manifest))] = listed.manifest
    return ClusterSnapshot(
        objects, owned, ready, ready_llmd, ready_prefill, pools, pods_by_owner, server_queues, workloads
    )


def _key_of(manifest: dict[str, Any]) -> tuple[str, str, str]:
    metadata = manifest["metadata"]
    return (manifest["kind"], str(metadata.get("namespace") or ""), str(metadata["name"]))


def status_if_in_sync(
    spec: DeploymentSpec, snapshot: ClusterSnapshot, team_gpu_limit: int | TeamInputs
) -> ObservedStatus | None:
    """The deployment's status as the snapshot shows it when every desired object is live with the desired
    content and nothing else is owned by it; None when it needs a real reconcile (drift, missing, extra)."""
    if spec.deleting:
        return None
    desired = desired_objects(spec)
    inputs = team_gpu_limit if isinstance(team_gpu_limit, TeamInputs) else TeamInputs(team_gpu_limit)
    for manifest in [*team_objects(spec, inputs), *desired]:
        if not in_sync(snapshot.live(_key_of(manifest)), manifest):
            return None
    if inputs.quota is not None and ("ResourceQuota", namespace_of(spec), GPU_QUOTA_NAME) in snapshot.objects:
        return None  # moved to Kueue: the old ResourceQuota is still there
    if snapshot.owned_by_deployment.get(str(spec.deployment_id), set()) != {_key_of(item) for item in desired}:
        return None
    namespace = namespace_of(spec)
    if snapshot.server_queues.get((spec.serving_mode, namespace, spec.name), set()) - {_wanted_queue(spec, desired)}:
        return None  # model server pods on another queue than wanted: a reconcile moves them (_move_model_server_queue)
    serving = snapshot.live((serving_kind(spec.serving_mode), namespace, spec.name)) or {}
    route = next((snapshot.live(_key_of(item)) for item in desired if item["kind"] == "AIGatewayRoute"), None)
    if spec.serving_mode == LLMD_MODE:
        status = _observe(
            spec,
            serving=serving,
            pool=snapshot.pools.get((namespace, inference_pool_name(spec))),
            route=route,
            ready_replicas=snapshot.ready_llmd_pods.get((namespace, spec.name), 0),
        )
        status = _with_prefill(status, snapshot.ready_prefill_pods.get((namespace, spec.name), 0))
    else:
        status = _observe(
            spec,
            serving=serving,
            pool=None,
            route=route,
            ready_replicas=snapshot.ready_pods.get((namespace, spec.name), 0),
        )
    return queued_by_kueue(status, snapshot.workloads_of(spec.serving_mode, namespace, spec.name))


@dataclass(frozen=True)
class ResyncResult:
    checked: int  # deployments compared with the snapshot
    recorded: int  # of those, whose status changed and was recorded
    stale: tuple[int, ...]  # deployments that need a full reconcile


def resync_cluster(cluster_id: int, deployment_ids: list[int]) -> ResyncResult:
    """Compare deployments on one cluster with one snapshot of it: record the status of those in sync whose
    status changed (under their lock, skipped when busy), and return the ones that drifted, for a full
    reconcile. Unchanged deployments cost no cluster write and no database write."""
    cluster = connect(cluster_selectors.cluster_connection(cluster_id=cluster_id))
    contract = cluster_selectors.cluster_contract(cluster_id=cluster_id)
    snapshot = cluster_snapshot(cluster, contract)
    converge_cluster_quota(cluster, contract, snapshot)
    recorded_before = deployment_selectors.deployment_observed_statuses(deployment_ids=deployment_ids)
    stale: list[int] = []
    specs_of_stale: dict[int, DeploymentSpec] = {}
    checked = recorded = 0
    team_limits: dict[str, TeamInputs] = {}
    for spec in deployment_specs(deployment_ids):
        if spec.team_slug not in team_limits:
            team_limits[spec.team_slug] = team_inputs(spec)
        status = status_if_in_sync(spec, snapshot, team_limits[spec.team_slug])
        if status is None:
            stale.append(spec.deployment_id)
            specs_of_stale[spec.deployment_id] = spec
            continue
        checked += 1
        if recorded_before.get(spec.deployment_id) == status:
            continue
        try:
            with deployment_lock(spec.deployment_id):
                if deployment_services.deployment_status_record(
                    deployment_id=spec.deployment_id,
                    generation=spec.generation,
                    status=status,
                    reconciled_at=timezone.now(),
                ):
                    recorded += 1
        except DeploymentBusy:
            continue  # a reconcile of it is running and will record what it sees
    _mark_inputs_changed_elsewhere(specs_of_stale)
    return ResyncResult(checked, recorded, tuple(stale))


def _mark_inputs_changed_elsewhere(specs: dict[int, DeploymentSpec]) -> list[int]:
    """Of the drifted deployments that were in sync with their spec, those whose desired objects are no longer what
    was last applied: something they are built from changed where no service saw it (a restricted key expired, so
    the route's key list changed). They are marked dirty as the services mark theirs (generation, event), the
    gateway resync's way for policies: one notion of dirty. A drift the reconcile reverts (an edit on the cluster)
    leaves the desired objects as applied, and bumps nothing."""
    current = {
        deployment_id: spec for deployment_id, spec in specs.items() if spec.observed_generation == spec.generation
    }
    if not current:
        return []
    applied = deployment_selectors.deployment_applied_hashes(deployment_ids=list(current), annotation=HASH_ANNOTATION)
    changed = [
        deployment_id
        for deployment_id, spec in current.items()
        if applied.get(deployment_id)
        and applied[deployment_id]
        != {f"{item['kind']}/{item['metadata']['name']}": content_hash(item) for item in desired_objects(spec)}
    ]
    if not changed:
        return []
    return deployment_services.deployments_inputs_changed(
        deployment_ids=changed, reason="what it is built from changed (found by the resync)"
    )
