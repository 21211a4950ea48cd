"""Simulated Kueue (v0.19.2, kubernetes-sigs/kueue 8eab68778fc1b52affe165fdf5af29d1e9b4f3cb): GPU quota admission of
the serving pods a LocalQueue holds, with borrowing inside a cohort.

What it does, each fact from Kueue's source at that tag:
- Pod webhook: a pod labelled `kueue.x-k8s.io/queue-name` (a Deployment's pods: Kueue's deployment webhook copies the
  label into the pod template) is gated with `kueue.x-k8s.io/admission` and labelled `kueue.x-k8s.io/managed: "true"`
  (pkg/controller/jobs/pod/constants, pkg/controller/constants). A Deployment's pods are admitted one by one, each as
  its own Workload (the pod integration).
- The Workload: named `pod-<pod name>-<hash>` (pkg/controller/jobframework/workload_names.go: the first 5 hex digits
  of SHA-1 over "Pod\\n\\n<name>\\n<uid>"), owned by the pod (so it goes when the pod goes), one pod set `main`.
- The scheduler, BestEffortFIFO (oldest first; one that does not fit does not hold back the next): the pod set gets
  the first flavor of its ClusterQueue, in the order listed, whose node labels the pod's node selector does not
  contradict ("flavor %s doesn't match node affinity") and whose quota fits. The quota a ClusterQueue can use of a
  flavor is its unused nominal quota plus what it may borrow: the cohort's unused nominal quota, within its
  `borrowingLimit` (absent: no limit). pkg/scheduler/flavorassigner/flavorassigner.go fitsResourceQuota: beyond what
  the ClusterQueue could ever get, "insufficient quota for <resource> in flavor <f>, previously considered podsets
  requests (0) + current podset request (<n>) > maximum capacity (<m>)", reason ExceedsMaxQuota; otherwise
  "insufficient unused quota for <resource> in flavor <f>, <k> more needed", reason WaitingForQuota; prefixed by
  "couldn't assign flavors to pod set main: " (Assignment.Message).
- The condition written on a workload that does not fit (pkg/scheduler/scheduler.go requeueAndUpdate): QuotaReserved
  False with the message above and the reason `UnadmittedWorkloadReasonWithFallback(reason, "Pending")`, which is the
  granular reason only with the UnadmittedWorkloadsObservability feature gate, off by default in v0.19
  (pkg/features/kube_features.go) -- so "Pending" by default. With the gate, `Admitted` False, reason NoReservation,
  "The workload has no reservation" is written too (pkg/workload/admissionchecks.go SyncAdmittedCondition).
  A missing LocalQueue or ClusterQueue, or a namespace outside the ClusterQueue's selector: QuotaReserved False,
  reason Inadmissible (Misconfigured with the gate), "LocalQueue <q> doesn't exist" / "ClusterQueue <q> doesn't
  exist" / "workload namespace doesn't match ClusterQueue selector" (pkg/controller/core/workload_controller.go).
- Admitted: `status.admission` (the ClusterQueue, the flavor and the usage of pod set main), QuotaReserved True
  "QuotaReserved" "Quota reserved in ClusterQueue <cq>" (pkg/workload/workload.go SetQuotaReservation) and Admitted
  True "Admitted" "The workload is admitted"; the pod gets the flavor's node labels and tolerations and its gate is
  removed, so it starts.
- The queues' status: Active, pending/reserving/admitted workload counts, GPUs reserved (and borrowed) per flavor.
- Level-triggered: every change to a pod, Workload or queue object re-runs admission, so a deleted deployment's
  GPUs admit the next queued pod.

- Reclaim (`preemption.reclaimWithinCohort: Any`, `borrowWithinCohort: Never`): a workload that would fit within its
  ClusterQueue's nominal quota preempts workloads of other ClusterQueues in the cohort while they borrow, newest
  reservation first, as few as make it fit (pkg/scheduler/preemption); it waits with "... . Pending the preemption of
  <n> workload(s)" (scheduler.go markPreemptionOutcome), each victim gets Evicted (reason Preempted) and Preempted
  (reason InCohortReclamation, "Preempted to accommodate a workload (UID: <u>, JobUID: <j>) due to reclamation within
  the cohort; preemptor path: /<cohort>/<cq>; preemptee path: /<cohort>/<cq>") and its pod is deleted; the preemptor
  is admitted on the next pass. The reason the preemptor's condition carries while it waits is taken as "Pending".

Not modelled: priorities (all workloads at one priority), preemption within a ClusterQueue, lendingLimit,
fair sharing, a Cohort's own quota, the pods' `kueue.x-k8s.io/managed` finalizer, resources other than GPUs (the
portal runs Kueue with quotaCheckStrategy IgnoreUndeclared).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import math
import threading
from dataclasses import dataclass, field
from typing import Any

from workers.sandbox.controllers_apps import owner_reference, without_times
from workers.sandbox.store import ApiError, Kind, Store, now_rfc3339

Obj = dict[str, Any]
GROUP = "kueue.x-k8s.io"
VERSION = "v1beta2"
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
MANAGED_LABEL = "kueue.x-k8s.io/managed"
JOB_UID_LABEL = "kueue.x-k8s.io/job-uid"
ADMISSION_GATE = "kueue.x-k8s.io/admission"
POD_SET = "main"
GPU = "nvidia.com/gpu"
KUEUE_MANAGER = "kueue-admission"
DEPLOYMENT_WEBHOOK = "vdeployment.kb.io"  # Kueue's validating webhook for Deployments (deployment_webhook.go marker)
WATCHED = frozenset({"Pod", "Namespace", "Workload", "ClusterQueue", "LocalQueue", "Cohort", "ResourceFlavor"})


@dataclass
class KueueSettings:
    # The UnadmittedWorkloadsObservability feature gate (off by default in v0.19): granular QuotaReserved reasons.
    unadmitted_observability: bool = False


def workload_name_for_pod(pod_name: str, pod_uid: str) -> str:
    digest = hashlib.sha1(f"Pod\n\n{pod_name}\n{pod_uid}".encode(), usedforsecurity=False).hexdigest()
    return f"pod-{pod_name}"[:247] + "-" + digest[:5]


def quantity(value: object) -> int:
    """A whole-number quantity (GPUs); anything else counts as 0."""
    try:
        return math.ceil(float(str(value)))
    except ValueError:
        return 0


def gpus_requested(pod_spec: Obj) -> int:
    total = 0
    for container in pod_spec.get("containers") or []:
        resources = container.get("resources") or {}
        requested = (resources.get("requests") or {}).get(GPU, (resources.get("limits") or {}).get(GPU, 0))
        total += quantity(requested)
    return total


def _condition(kind: str, state: str, reason: str, message: str, generation: int) -> Obj:
    return {
        "type": kind,
        "status": state,
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
        "lastTransitionTime": now_rfc3339(),
    }


@dataclass(frozen=True)
class _Admitted:
    workload: Obj
    cluster_queue: str
    flavor: str
    amount: int
    order: tuple[str, float]  # when its quota was reserved (then creation order): newest preempted first


@dataclass(frozen=True)
class _Decision:
    cluster_queue: str
    flavor: str | None  # None: not admitted
    reason: str = ""
    message: str = ""
    legacy_reason: str = "Pending"
    victims: tuple[_Admitted, ...] = ()  # to preempt so that it fits (reclaimWithinCohort)


@dataclass
class KueueControllers:
    store: Store
    settings: KueueSettings = field(default_factory=KueueSettings)
    _dirty: threading.Event = field(default_factory=threading.Event)
    _order: dict[str, int] = field(default_factory=dict)  # workload uid -> creation order (FIFO ties)

    def __post_init__(self) -> None:
        self.store.listeners.append(self._on_event)
        self.store.update_webhooks.append(self.deployment_update_webhook)
        self._dirty.set()

    def _on_event(self, event: str, kind: Kind, obj: Obj) -> None:
        if kind.kind in WATCHED:
            self._dirty.set()

    def forget(self) -> None:
        self._order.clear()
        self._dirty.set()

    def _kind(self, plural: str) -> Kind | None:
        return self.store.kinds.get((GROUP, VERSION, plural))

    # ------------------------------------------------------------------ the pod webhook

    def pod_webhook(self, pod: Obj) -> None:
        labels = pod["metadata"].setdefault("labels", {})
        if not labels.get(QUEUE_LABEL):
            return
        labels[MANAGED_LABEL] = "true"
        gates = pod["spec"].setdefault("schedulingGates", [])
        if not any(gate.get("name") == ADMISSION_GATE for gate in gates):
            gates.append({"name": ADMISSION_GATE})

    # ------------------------------------------------------------------ the deployment webhook

    def deployment_update_webhook(self, kind: Kind, old: Obj, new: Obj) -> None:
        """Kueue's validating webhook for Deployments (vdeployment.kb.io), on update: the queue-name label may not
        change while the Deployment has a ready replica, and may never be removed -- not even with none ready (the
        quirk: "or if the queue-name has been deleted"). Kueue v0.19.2 pkg/controller/jobs/deployment/
        deployment_webhook.go ValidateUpdate: `isSuspended := oldDeployment.Status.ReadyReplicas == 0; if
        !isSuspended || newQueueName == "" { ValidateImmutableField(newQueueName, oldQueueName, queueNameLabelPath) }`
        (its deployment_webhook_test.go: "without queue" refused, "with queue" from none allowed, "with queue (ready
        replicas)" refused). apimachinery's ValidateImmutableField gives `field.Invalid(path, new, "field is
        immutable")`; controller-runtime denies with 403 Forbidden (webhook/admission/response.go
        ValidationResponse), and the API server prefixes `admission webhook "<name>" denied the request: `
        (k8s.io/apiserver pkg/admission/plugin/webhook/errors ToStatusErr). The Deployment's own label is checked,
        not its pod template's: a template change rolls out new pods, which the pod webhook treats as new pods."""
        if kind.group != "apps" or kind.kind != "Deployment":
            return
        old_queue = str((old["metadata"].get("labels") or {}).get(QUEUE_LABEL) or "")
        new_queue = str((new["metadata"].get("labels") or {}).get(QUEUE_LABEL) or "")
        suspended = int((old.get("status") or {}).get("readyReplicas") or 0) == 0
        if (not suspended or not new_queue) and new_queue != old_queue:
            raise ApiError(
                403,
                "Forbidden",
                f'admission webhook "{DEPLOYMENT_WEBHOOK}" denied the request: '
                f'metadata.labels[{QUEUE_LABEL}]: Invalid value: "{new_queue}": field is immutable',
            )

    # ------------------------------------------------------------------ the loop

    def step(self) -> None:
        if not self._dirty.is_set():
            return
        self._dirty.clear()
        workload_kind = self._kind("workloads")
        if workload_kind is None:
            return
        try:
            self._ensure_workloads(workload_kind)
            self._admit(workload_kind)
        except ApiError:  # something changed under us: its event marks us dirty again
            self._dirty.set()

    def _queued_pods(self) -> list[Obj]:
        pod_kind = self.store.kinds[("", "v1", "pods")]
        return list(self.store.list(pod_kind, None, label_selector=QUEUE_LABEL)["items"])

    def _ensure_workloads(self, workload_kind: Kind) -> None:
        for pod in self._queued_pods():
            metadata = pod["metadata"]
            if metadata.get("deletionTimestamp"):
                continue
            name = workload_name_for_pod(metadata["name"], metadata["uid"])
            with contextlib.suppress(ApiError):
                self.store.get(workload_kind, metadata["namespace"], name)
                continue
            spec = copy.deepcopy(pod["spec"])
            spec.pop("schedulingGates", None)
            workload = {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "Workload",
                "metadata": {
                    "name": name,
                    "labels": {JOB_UID_LABEL: metadata["uid"]},
                    "ownerReferences": [owner_reference(pod, "v1", "Pod")],
                },
                "spec": {
                    "queueName": metadata["labels"][QUEUE_LABEL],
                    "podSets": [{"name": POD_SET, "count": 1, "template": {"spec": spec}}],
                },
            }
            created = self.store.create(workload_kind, metadata["namespace"], workload, manager=KUEUE_MANAGER)
            self._order[created["metadata"]["uid"]] = len(self._order)

    # ------------------------------------------------------------------ admission

    def _objects(self, plural: str) -> dict[str, Obj]:
        kind = self._kind(plural)
        if kind is None:
            return {}
        return {obj["metadata"]["name"]: obj for obj in self.store.iter_objects(kind)}

    def _admit(self, workload_kind: Kind) -> None:
        workloads = list(self.store.iter_objects(workload_kind))
        queues = self._objects("clusterqueues")
        flavors = self._objects("resourceflavors")
        usage: dict[tuple[str, str], int] = {}
        admitted: list[_Admitted] = []
        pending = []
        for workload in workloads:
            admission = (workload.get("status") or {}).get("admission")
            if admission:
                reserved_at = next(
                    (
                        str(c.get("lastTransitionTime", ""))
                        for c in workload["status"].get("conditions") or []
                        if c.get("type") == "QuotaReserved"
                    ),
                    "",
                )
                for assignment in admission.get("podSetAssignments") or []:
                    for resource, flavor in (assignment.get("flavors") or {}).items():
                        amount = quantity((assignment.get("resourceUsage") or {}).get(resource, 0))
                        key = (str(admission.get("clusterQueue")), str(flavor))
                        usage[key] = usage.get(key, 0) + amount
                        order = (reserved_at, self._order.get(workload["metadata"]["uid"], -1.0))
                        admitted.append(_Admitted(workload, key[0], key[1], amount, order))
                self._ungate(workload, flavors, admission)
            else:
                pending.append(workload)
        pending.sort(
            key=lambda w: (
                w["metadata"].get("creationTimestamp", ""),
                self._order.get(w["metadata"]["uid"], math.inf),
                w["metadata"]["name"],
            )
        )
        waiting: dict[tuple[str, str], int] = {}  # (namespace, local queue) -> pending workloads
        for workload in pending:
            decision = self._decide(workload, queues, flavors, usage, admitted)
            if decision.victims:
                for victim in decision.victims:
                    self._preempt(workload_kind, victim, workload, decision.cluster_queue, queues)
                    key = (victim.cluster_queue, victim.flavor)
                    usage[key] = usage.get(key, 0) - victim.amount
                    admitted.remove(victim)
            if decision.flavor is None:
                key = (workload["metadata"]["namespace"], str((workload.get("spec") or {}).get("queueName", "")))
                waiting[key] = waiting.get(key, 0) + 1
            if decision.flavor is not None:
                request = self._request(workload)
                key = (decision.cluster_queue, decision.flavor)
                usage[key] = usage.get(key, 0) + request
                admission = {
                    "clusterQueue": decision.cluster_queue,
                    "podSetAssignments": [
                        {
                            "name": POD_SET,
                            "flavors": {GPU: decision.flavor} if request else {},
                            "resourceUsage": {GPU: str(request)} if request else {},
                            "count": 1,
                        }
                    ],
                }
                self._write_admitted(workload_kind, workload, admission)
                self._ungate(workload, flavors, admission)
            else:
                self._write_pending(workload_kind, workload, decision)
        self._queue_status(queues, usage, waiting)

    @staticmethod
    def _request(workload: Obj) -> int:
        pod_sets = (workload.get("spec") or {}).get("podSets") or []
        return sum(
            gpus_requested((pod_set.get("template") or {}).get("spec") or {}) * int(pod_set.get("count", 1))
            for pod_set in pod_sets
        )

    def _decide(
        self,
        workload: Obj,
        queues: dict[str, Obj],
        flavors: dict[str, Obj],
        usage: dict[tuple[str, str], int],
        admitted: list[_Admitted],
    ) -> _Decision:
        namespace = workload["metadata"]["namespace"]
        queue_name = str((workload.get("spec") or {}).get("queueName", ""))
        local_kind = self._kind("localqueues")
        local = None
        if local_kind is not None:
            with contextlib.suppress(ApiError):
                local = self.store.get(local_kind, namespace, queue_name)
        if local is None:
            return self._inadmissible("", f"LocalQueue {queue_name} doesn't exist")
        cq_name = str((local.get("spec") or {}).get("clusterQueue", ""))
        queue = queues.get(cq_name)
        if queue is None:
            return self._inadmissible(cq_name, f"ClusterQueue {cq_name} doesn't exist")
        spec = queue.get("spec") or {}
        if not self._namespace_selected(namespace, spec.get("namespaceSelector")):
            return self._inadmissible(cq_name, "workload namespace doesn't match ClusterQueue selector")
        request = self._request(workload)
        pod_spec = ((workload["spec"]["podSets"][0].get("template") or {}).get("spec")) or {}
        node_selector = pod_spec.get("nodeSelector") or {}
        groups = [g for g in spec.get("resourceGroups") or [] if GPU in (g.get("coveredResources") or [])]
        if request == 0:
            return _Decision(cq_name, "")
        if not groups:
            message = f"couldn't assign flavors to pod set {POD_SET}: resource {GPU} unavailable in ClusterQueue"
            return self._no_fit(cq_name, "NoMatchingFlavor", message)
        reasons: list[str] = []
        best_reason = ""
        for flavor_spec in groups[0].get("flavors") or []:
            flavor_name = str(flavor_spec.get("name", ""))
            flavor = flavors.get(flavor_name)
            if flavor is None:
                reasons.append(f"flavor {flavor_name} not found")
                continue
            node_labels = (flavor.get("spec") or {}).get("nodeLabels") or {}
            if any(key in node_selector and node_selector[key] != value for key, value in node_labels.items()):
                reasons.append(f"flavor {flavor_name} doesn't match node affinity")
                best_reason = best_reason or "NoMatchingFlavor"
                continue
            available, potential = self._capacity(cq_name, queues, flavor_name, usage)
            if request > potential:
                reasons.append(
                    f"insufficient quota for {GPU} in flavor {flavor_name}, previously considered podsets requests "
                    f"(0) + current podset request ({request}) > maximum capacity ({potential})"
                )
                best_reason = "ExceedsMaxQuota" if best_reason in ("", "NoMatchingFlavor") else best_reason
                continue
            if request <= available:
                return _Decision(cq_name, flavor_name)
            reasons.append(
                f"insufficient unused quota for {GPU} in flavor {flavor_name}, {request - available} more needed"
            )
            best_reason = "WaitingForQuota"  # the least severe (flavorassigner.go reasonSeverity)
            victims = self._reclaimable(cq_name, queues, flavor_name, usage, admitted, request)
            if victims:
                message = f"couldn't assign flavors to pod set {POD_SET}: {', '.join(reasons)}"
                message += f". Pending the preemption of {len(victims)} workload(s)"  # scheduler.go
                return _Decision(cq_name, None, "Pending", message, "Pending", victims)
        message = f"couldn't assign flavors to pod set {POD_SET}: {', '.join(reasons)}"
        return self._no_fit(cq_name, best_reason or "NoMatchingFlavor", message)

    def _reclaimable(
        self,
        cq_name: str,
        queues: dict[str, Obj],
        flavor_name: str,
        usage: dict[tuple[str, str], int],
        admitted: list[_Admitted],
        request: int,
    ) -> tuple[_Admitted, ...]:
        """The workloads to preempt so the request fits within its ClusterQueue's nominal quota, taken from other
        ClusterQueues of the cohort while they borrow (`reclaimWithinCohort: Any`; no preemption while borrowing,
        `borrowWithinCohort: Never`): newest reservation first (preemption/common/ordering.go CandidatesOrdering,
        all at one priority). Empty when that cannot make it fit."""
        queue = queues[cq_name]
        spec = queue.get("spec") or {}
        if (spec.get("preemption") or {}).get("reclaimWithinCohort", "Never") != "Any" or not spec.get("cohortName"):
            return ()
        nominal, _ = self._quota(queue, flavor_name)
        if usage.get((cq_name, flavor_name), 0) + request > nominal:
            return ()
        cohort = spec["cohortName"]
        simulated = dict(usage)
        chosen: list[_Admitted] = []
        candidates = [
            entry
            for entry in admitted
            if entry.flavor == flavor_name
            and entry.cluster_queue != cq_name
            and ((queues.get(entry.cluster_queue) or {}).get("spec") or {}).get("cohortName") == cohort
        ]
        for entry in sorted(candidates, key=lambda item: item.order, reverse=True):
            key = (entry.cluster_queue, flavor_name)
            if simulated.get(key, 0) <= self._quota(queues[entry.cluster_queue], flavor_name)[0]:
                continue  # that queue is within its own quota now: nothing of it can be reclaimed
            simulated[key] = simulated.get(key, 0) - entry.amount
            chosen.append(entry)
            if request <= self._capacity(cq_name, queues, flavor_name, simulated)[0]:
                return tuple(chosen)
        return ()

    def _preempt(
        self, kind: Kind, victim: _Admitted, preemptor: Obj, preemptor_queue: str, queues: dict[str, Obj]
    ) -> None:
        """Evict the victim (Evicted and Preempted conditions, its quota released) and stop its pod: the pod
        integration deletes it (pkg/controller/jobs/pod/pod_controller.go Stop), and its Deployment makes a new one,
        which queues again."""
        cohort = ((queues.get(preemptor_queue) or {}).get("spec") or {}).get("cohortName", "")
        message = (
            f"Preempted to accommodate a workload (UID: {preemptor['metadata']['uid']}, JobUID: "
            f"{(preemptor['metadata'].get('labels') or {}).get(JOB_UID_LABEL, 'UNKNOWN')}) due to reclamation within "
            f"the cohort; preemptor path: /{cohort}/{preemptor_queue}; preemptee path: /{cohort}/{victim.cluster_queue}"
        )  # preemption.go preemptionMessage, buildCQPath
        workload = victim.workload
        generation = int(workload["metadata"].get("generation") or 1)
        status = {
            "conditions": [
                _condition("QuotaReserved", "False", "Preempted", message, generation),
                _condition("Evicted", "True", "Preempted", message, generation),
                _condition("Preempted", "True", "InCohortReclamation", message, generation),
            ]
        }
        with contextlib.suppress(ApiError):
            self.store.update_status(
                kind, workload["metadata"]["namespace"], workload["metadata"]["name"], status, manager=KUEUE_MANAGER
            )
        owner = next(
            (ref for ref in workload["metadata"].get("ownerReferences") or [] if ref.get("kind") == "Pod"), None
        )
        if owner is not None:
            with contextlib.suppress(ApiError):
                self.store.delete(
                    self.store.kinds[("", "v1", "pods")], workload["metadata"]["namespace"], owner["name"]
                )

    def _no_fit(self, cq_name: str, reason: str, message: str) -> _Decision:
        return _Decision(cq_name, None, reason, message, "Pending")

    def _inadmissible(self, cq_name: str, message: str) -> _Decision:
        return _Decision(cq_name, None, "Misconfigured", message, "Inadmissible")

    def _namespace_selected(self, namespace: str, selector: Obj | None) -> bool:
        if selector is None:
            return True
        namespace_kind = self.store.kinds[("", "v1", "namespaces")]
        try:
            labels = self.store.get(namespace_kind, None, namespace)["metadata"].get("labels") or {}
        except ApiError:
            return False
        return all(labels.get(key) == value for key, value in (selector.get("matchLabels") or {}).items())

    @staticmethod
    def _quota(queue: Obj, flavor_name: str) -> tuple[int, int | None]:
        """(nominal quota, borrowing limit or None for no limit) of GPUs of a flavor in a ClusterQueue."""
        for group in (queue.get("spec") or {}).get("resourceGroups") or []:
            for flavor in group.get("flavors") or []:
                if flavor.get("name") != flavor_name:
                    continue
                for resource in flavor.get("resources") or []:
                    if resource.get("name") == GPU:
                        limit = resource.get("borrowingLimit")
                        return quantity(resource.get("nominalQuota", 0)), None if limit is None else quantity(limit)
        return 0, 0

    def _capacity(
        self, cq_name: str, queues: dict[str, Obj], flavor_name: str, usage: dict[tuple[str, str], int]
    ) -> tuple[float, float]:
        """(GPUs the ClusterQueue may take now, GPUs it could ever take) of a flavor."""
        queue = queues[cq_name]
        nominal, limit = self._quota(queue, flavor_name)
        used = usage.get((cq_name, flavor_name), 0)
        cohort = (queue.get("spec") or {}).get("cohortName")
        if not cohort:
            return max(nominal - used, 0), nominal
        members = [name for name, item in queues.items() if (item.get("spec") or {}).get("cohortName") == cohort]
        cohort_nominal = sum(self._quota(queues[name], flavor_name)[0] for name in members)
        cohort_used = sum(usage.get((name, flavor_name), 0) for name in members)
        ceiling: float = math.inf if limit is None else nominal + limit
        return max(min(ceiling - used, cohort_nominal - cohort_used), 0), min(ceiling, cohort_nominal)

    # ------------------------------------------------------------------ queue status

    def _queue_status(
        self, queues: dict[str, Obj], usage: dict[tuple[str, str], int], waiting: dict[tuple[str, str], int]
    ) -> None:
        """What Kueue's cache reports on the queues: Active (pkg/cache/scheduler/clusterqueue.go "Ready", "Can admit
        new workloads"; localqueue_controller.go "Can submit new workloads to localQueue"), the workloads waiting and
        admitted, and per flavor the GPUs reserved and how many of them are borrowed."""
        workload_kind = self._kind("workloads")
        local_kind = self._kind("localqueues")
        queue_kind = self._kind("clusterqueues")
        if workload_kind is None or local_kind is None or queue_kind is None:
            return
        locals_by_key = {
            (item["metadata"]["namespace"], item["metadata"]["name"]): item
            for item in self.store.iter_objects(local_kind)
        }
        admitted_local: dict[tuple[str, str], int] = {}
        local_usage: dict[tuple[str, str], dict[str, int]] = {}
        admitted_queue: dict[str, int] = {}
        for workload in self.store.iter_objects(workload_kind):
            admission = (workload.get("status") or {}).get("admission")
            if not admission:
                continue
            key = (workload["metadata"]["namespace"], str((workload.get("spec") or {}).get("queueName", "")))
            admitted_local[key] = admitted_local.get(key, 0) + 1
            queue_name = str(admission.get("clusterQueue"))
            admitted_queue[queue_name] = admitted_queue.get(queue_name, 0) + 1
            for assignment in admission.get("podSetAssignments") or []:
                for flavor in (assignment.get("flavors") or {}).values():
                    amount = quantity((assignment.get("resourceUsage") or {}).get(GPU, 0))
                    per_flavor = local_usage.setdefault(key, {})
                    per_flavor[str(flavor)] = per_flavor.get(str(flavor), 0) + amount
        pending_queue: dict[str, int] = {}
        for key, count in waiting.items():
            local = locals_by_key.get(key)
            if local is not None:
                queue_name = str((local.get("spec") or {}).get("clusterQueue", ""))
                pending_queue[queue_name] = pending_queue.get(queue_name, 0) + count
        for name, queue in queues.items():
            flavor_names = [
                str(flavor.get("name"))
                for group in (queue.get("spec") or {}).get("resourceGroups") or []
                for flavor in group.get("flavors") or []
            ]
            reserved = [
                {
                    "name": flavor,
                    "resources": [
                        {
                            "name": GPU,
                            "total": str(usage.get((name, flavor), 0)),
                            "borrowed": str(max(usage.get((name, flavor), 0) - self._quota(queue, flavor)[0], 0)),
                        }
                    ],
                }
                for flavor in flavor_names
            ]
            self._write_queue_status(
                queue_kind,
                queue,
                "Can admit new workloads",
                {
                    "pendingWorkloads": pending_queue.get(name, 0),
                    "reservingWorkloads": admitted_queue.get(name, 0),
                    "admittedWorkloads": admitted_queue.get(name, 0),
                    "flavorsReservation": reserved,
                    "flavorsUsage": copy.deepcopy(reserved),
                },
            )
        for key, local in locals_by_key.items():
            used = [
                {"name": flavor, "resources": [{"name": GPU, "total": str(amount)}]}
                for flavor, amount in sorted(local_usage.get(key, {}).items())
            ]
            self._write_queue_status(
                local_kind,
                local,
                "Can submit new workloads to localQueue",
                {
                    "pendingWorkloads": waiting.get(key, 0),
                    "reservingWorkloads": admitted_local.get(key, 0),
                    "admittedWorkloads": admitted_local.get(key, 0),
                    "flavorsReservation": used,
                    "flavorsUsage": copy.deepcopy(used),
                },
            )

    def _write_queue_status(self, kind: Kind, queue: Obj, message: str, counts: Obj) -> None:
        current = queue.get("status") or {}
        active = _condition("Active", "True", "Ready", message, int(queue["metadata"].get("generation") or 1))
        earlier = next((c for c in current.get("conditions") or [] if c.get("type") == "Active"), None)
        if earlier is not None and earlier.get("status") == "True":
            active["lastTransitionTime"] = earlier.get("lastTransitionTime", active["lastTransitionTime"])
        desired = {"conditions": [active], **counts}
        if without_times(desired) != without_times(current):
            with contextlib.suppress(ApiError):
                self.store.update_status(
                    kind, queue["metadata"].get("namespace"), queue["metadata"]["name"], desired, manager=KUEUE_MANAGER
                )

    # ------------------------------------------------------------------ writes

    def _write_admitted(self, kind: Kind, workload: Obj, admission: Obj) -> None:
        generation = int(workload["metadata"].get("generation") or 1)
        cq_name = admission["clusterQueue"]
        status = {
            "admission": admission,
            "conditions": [
                _condition(
                    "QuotaReserved", "True", "QuotaReserved", f"Quota reserved in ClusterQueue {cq_name}", generation
                ),
                _condition("Admitted", "True", "Admitted", "The workload is admitted", generation),
            ],
        }
        self.store.update_status(
            kind, workload["metadata"]["namespace"], workload["metadata"]["name"], status, manager=KUEUE_MANAGER
        )

    def _write_pending(self, kind: Kind, workload: Obj, decision: _Decision) -> None:
        generation = int(workload["metadata"].get("generation") or 1)
        granular = self.settings.unadmitted_observability
        conditions = [
            _condition(
                "QuotaReserved",
                "False",
                decision.reason if granular else decision.legacy_reason,
                decision.message,
                generation,
            )
        ]
        if granular:
            conditions.append(
                _condition("Admitted", "False", "NoReservation", "The workload has no reservation", generation)
            )
        current = workload.get("status") or {}
        before = {c.get("type"): c for c in current.get("conditions") or []}
        for item in conditions:
            earlier = before.get(item["type"])
            if earlier is not None and earlier.get("status") == item["status"]:
                item["lastTransitionTime"] = earlier.get("lastTransitionTime", item["lastTransitionTime"])
        status = {"conditions": conditions}
        if without_times(status) != without_times(current):
            self.store.update_status(
                kind, workload["metadata"]["namespace"], workload["metadata"]["name"], status, manager=KUEUE_MANAGER
            )

    def _ungate(self, workload: Obj, flavors: dict[str, Obj], admission: Obj) -> None:
        """Start the admitted pod: the flavor's node labels and tolerations, then the gate removed."""
        pod_kind = self.store.kinds[("", "v1", "pods")]
        owner = next(
            (ref for ref in workload["metadata"].get("ownerReferences") or [] if ref.get("kind") == "Pod"), None
        )
        if owner is None:
            return
        try:
            pod = self.store.get(pod_kind, workload["metadata"]["namespace"], owner["name"])
        except ApiError:
            return
        gates = pod["spec"].get("schedulingGates") or []
        if not any(gate.get("name") == ADMISSION_GATE for gate in gates):
            return
        pod["spec"]["schedulingGates"] = [gate for gate in gates if gate.get("name") != ADMISSION_GATE]
        if not pod["spec"]["schedulingGates"]:
            del pod["spec"]["schedulingGates"]
        for assignment in admission.get("podSetAssignments") or []:
            for flavor_name in (assignment.get("flavors") or {}).values():
                flavor_spec = (flavors.get(str(flavor_name)) or {}).get("spec") or {}
                pod["spec"].setdefault("nodeSelector", {}).update(flavor_spec.get("nodeLabels") or {})
                tolerations = pod["spec"].setdefault("tolerations", [])
                tolerations.extend(t for t in flavor_spec.get("tolerations") or [] if t not in tolerations)
                if not tolerations:
                    del pod["spec"]["tolerations"]
        self.store.replace(pod_kind, pod["metadata"]["namespace"], pod["metadata"]["name"], pod, manager=KUEUE_MANAGER)
