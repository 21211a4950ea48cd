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
- Level-triggered: every change to a pod, Workload or queue object re-runs admission, so a deleted deployment's
  GPUs admit the next queued pod.

Not modelled: preemption (`reclaimWithinCohort`: a team taking back its nominal quota from a borrower), lendingLimit,
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
class _Decision:
    cluster_queue: str
    flavor: str | None  # None: not admitted
    reason: str = ""
    message: str = ""
    legacy_reason: str = "Pending"


@dataclass
class KueueControllers:
    store: Store
    settings: KueueSettings = field(default_factory=KueueSettings)
    _dirty: threading.Event = field(default_factory=threading.Event)
    _order: dict[str, int] = field(default_factory=dict)  # workload uid -> creation order (FIFO ties)

    def __post_init__(self) -> None:
        self.store.listeners.append(self._on_event)
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
        pending = []
        for workload in workloads:
            admission = (workload.get("status") or {}).get("admission")
            if admission:
                for assignment in admission.get("podSetAssignments") or []:
                    for resource, flavor in (assignment.get("flavors") or {}).items():
                        amount = quantity((assignment.get("resourceUsage") or {}).get(resource, 0))
                        key = (str(admission.get("clusterQueue")), str(flavor))
                        usage[key] = usage.get(key, 0) + amount
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
        for workload in pending:
            decision = self._decide(workload, queues, flavors, usage)
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

    @staticmethod
    def _request(workload: Obj) -> int:
        pod_sets = (workload.get("spec") or {}).get("podSets") or []
        return sum(
            gpus_requested((pod_set.get("template") or {}).get("spec") or {}) * int(pod_set.get("count", 1))
            for pod_set in pod_sets
        )

    def _decide(
        self, workload: Obj, queues: dict[str, Obj], flavors: dict[str, Obj], usage: dict[tuple[str, str], int]
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
        message = f"couldn't assign flavors to pod set {POD_SET}: {', '.join(reasons)}"
        return self._no_fit(cq_name, best_reason or "NoMatchingFlavor", message)

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
