"""Simulated built-in controllers for what KServe creates (the predictor Deployment of an InferenceService, the
llm-d workloads): Deployments get their pods, pods start once nothing gates them, and the garbage collector deletes
what an owner reference ties to a deleted object.

- Deployment (kube-controller-manager's deployment + replicaset controllers, folded into one; no ReplicaSet object):
  `spec.replicas` (default 1) pods from the template, named `<deployment>-<template hash>-<suffix>` and owned by the
  Deployment. A pod the API server refuses (ResourceQuota admission) is reported as the `ReplicaFailure` condition
  with reason `FailedCreate` and the API server's message, as the ReplicaSet controller reports it. Status:
  `replicas`, `readyReplicas`, `availableReplicas`, `updatedReplicas`, and the `Available` condition
  (`MinimumReplicasAvailable` "Deployment has minimum availability." / `MinimumReplicasUnavailable` "Deployment
  does not have minimum availability.", kubernetes pkg/controller/deployment/util/deployment_util.go) with the
  default maxUnavailable of 25% rounded down. A template change is rolled out surge first: the older template's pods
  stay until as many of the current template's are Ready (the default RollingUpdate for a few replicas, whose
  maxUnavailable of 25% rounds down to none). Pods no controller owns whose labels match the selector are adopted
  (ControllerRefManager), as a Deployment re-created after an orphaning delete adopts what its predecessor left.
- Pods (the scheduler and kubelet): a pod with `spec.schedulingGates` stays `Pending` with `PodScheduled` False,
  reason `SchedulingGated` ("Scheduling is blocked due to non-empty scheduling gates", kubernetes
  pkg/scheduler/framework/plugins/schedulinggates); once its gates are gone it is `Running` and Ready with a pod IP,
  unless an init container's argument holds `fail-load`: then it stays `Pending`, that container in
  CrashLoopBackOff, not Ready. With `ready_delay` (the demo's model loading time) a started pod turns Ready that many
  seconds later.
- Garbage collector: when an object is deleted, the objects whose `ownerReferences` name its uid are deleted
  (background propagation), and so on down the chain; deleted with propagationPolicy Orphan, they stay and lose that
  owner reference instead.

Level-triggered, but only when something they watch changed (an informer's event), so an idle sandbox pays nothing.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from workers.sandbox.store import ApiError, Kind, Store, now_rfc3339

Obj = dict[str, Any]
DEPLOYMENT_MANAGER = "kube-controller-manager"
KUBELET_MANAGER = "kubelet"
GC_MANAGER = DEPLOYMENT_MANAGER  # the garbage collector runs in kube-controller-manager
GATED_MESSAGE = "Scheduling is blocked due to non-empty scheduling gates"
FAIL_MARKER = "fail-load"  # the sandbox's model that cannot be loaded (as for an InferenceService)
# Kinds whose objects the simulated controllers create with owner references: where the collector looks.
DEPENDENT_KINDS = (
    ("apps", "v1", "deployments"),
    ("", "v1", "services"),
    ("", "v1", "pods"),
    ("inference.networking.k8s.io", "v1", "inferencepools"),
    ("kueue.x-k8s.io", "v1beta2", "workloads"),
)


def owner_reference(owner: Obj, api_version: str, kind: str) -> Obj:
    """A controller reference, as metav1.NewControllerRef writes it."""
    return {
        "apiVersion": api_version,
        "kind": kind,
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def owned_by(obj: Obj, uid: str) -> bool:
    return any(ref.get("uid") == uid for ref in obj["metadata"].get("ownerReferences") or [])


def pod_ready(pod: Obj) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def condition(kind: str, state: str, reason: str = "", message: str = "") -> Obj:
    found: Obj = {"type": kind, "status": state, "lastTransitionTime": now_rfc3339()}
    if reason:
        found["reason"] = reason
    if message:
        found["message"] = message
    return found


def without_times(status: Any) -> Any:
    if isinstance(status, dict):
        return {k: without_times(v) for k, v in status.items() if k not in ("lastTransitionTime", "lastUpdateTime")}
    if isinstance(status, list):
        return [without_times(v) for v in status]
    return status


def keep_transition_times(desired: list[Obj], current: list[Obj]) -> list[Obj]:
    """A condition keeps its lastTransitionTime while its status does not change."""
    before = {c.get("type"): c for c in current}
    for item in desired:
        earlier = before.get(item.get("type"))
        if earlier is not None and earlier.get("status") == item.get("status") and earlier.get("lastTransitionTime"):
            item["lastTransitionTime"] = earlier["lastTransitionTime"]
    return desired


@dataclass
class AppsControllers:
    store: Store
    # The mutating admission webhooks a new pod passes through (Kueue's gates the pods a queue holds).
    pod_webhooks: list[Callable[[Obj], None]] = field(default_factory=list)
    ready_delay: float = 0.0  # seconds from a pod's start until it is Ready (the model loading)
    _ready_at: dict[tuple[str, str], float] = field(default_factory=dict)  # started pods not yet Ready
    _now: float = 0.0
    _dirty: threading.Event = field(default_factory=threading.Event)
    _deleted: set[str] = field(default_factory=set)  # uids deleted since the collector last ran
    _orphaned: set[str] = field(default_factory=set)  # of those, the ones deleted with propagationPolicy Orphan
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _pod_ips: int = 0
    _pods_made: int = 0

    def __post_init__(self) -> None:
        self.store.listeners.append(self._on_event)
        self._dirty.set()

    def _on_event(self, event: str, kind: Kind, obj: Obj) -> None:
        if event == "DELETED":
            with self._lock:
                self._deleted.add(str(obj["metadata"].get("uid", "")))
                if "orphan" in (obj["metadata"].get("finalizers") or []):
                    self._orphaned.add(str(obj["metadata"].get("uid", "")))
        if kind.kind in ("Deployment", "Pod", "ResourceQuota") or event == "DELETED":
            self._dirty.set()

    def forget(self) -> None:
        with self._lock:
            self._deleted.clear()
        self._ready_at.clear()
        self._dirty.set()

    def step(self, now: float | None = None) -> None:
        self._now = time.monotonic() if now is None else now
        self.collect_garbage()
        self._ready_due()
        if not self._dirty.is_set():
            return
        self._dirty.clear()
        deployment_kind = self.store.kinds.get(("apps", "v1", "deployments"))
        if deployment_kind is not None:
            for deployment in self.store.iter_objects(deployment_kind):
                try:
                    self._deployment(deployment_kind, deployment)
                except ApiError:  # changed or deleted under us: the event marks us dirty again
                    self._dirty.set()
        self._start_ungated_pods()

    # ------------------------------------------------------------------ garbage collector

    def collect_garbage(self) -> None:
        """Dependents of deleted owners go; those of an owner deleted with propagationPolicy Orphan stay, their
        owner reference to it removed (the garbage collector's orphan finalizer), for a new owner to adopt."""
        while True:
            with self._lock:
                gone, self._deleted = self._deleted, set()
                orphaned, self._orphaned = self._orphaned & gone, self._orphaned - gone
            gone.discard("")
            if not gone:
                return
            for key in DEPENDENT_KINDS:
                kind = self.store.kinds.get(key)
                if kind is None:
                    continue
                for obj in self.store.iter_objects(kind):
                    refs = obj["metadata"].get("ownerReferences") or []
                    if any(ref.get("uid") in orphaned for ref in refs):
                        kept = [ref for ref in refs if ref.get("uid") not in orphaned]
                        with contextlib.suppress(ApiError):
                            self._set_owners(kind, obj, kept)
                    elif any(ref.get("uid") in gone for ref in refs):
                        with contextlib.suppress(ApiError):  # already gone (its namespace went)
                            self.store.delete(kind, obj["metadata"].get("namespace"), obj["metadata"]["name"])

    def _set_owners(self, kind: Kind, obj: Obj, owners: list[Obj]) -> None:
        changed = copy.deepcopy(obj)
        changed["metadata"]["ownerReferences"] = owners
        if not owners:
            changed["metadata"].pop("ownerReferences")
        self.store.replace(kind, obj["metadata"].get("namespace"), obj["metadata"]["name"], changed, manager=GC_MANAGER)

    # ------------------------------------------------------------------ deployments

    def _deployment(self, kind: Kind, deployment: Obj) -> None:
        pod_kind = self.store.kinds[("", "v1", "pods")]
        metadata = deployment["metadata"]
        namespace, name, uid = metadata["namespace"], metadata["name"], metadata["uid"]
        spec = deployment.get("spec") or {}
        wanted = int(spec.get("replicas", 1) if spec.get("replicas") is not None else 1)
        template = spec.get("template") or {}
        template_hash = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]
        listing = self.store.list(pod_kind, namespace)["items"]
        for pod in listing:
            if self._adoptable(pod, spec):
                self._adopt(pod_kind, pod, deployment)
        listing = self.store.list(pod_kind, namespace)["items"]
        pods = sorted((pod for pod in listing if owned_by(pod, uid)), key=lambda pod: pod["metadata"]["name"])
        current = [
            pod for pod in pods if (pod["metadata"].get("labels") or {}).get("pod-template-hash") == template_hash
        ]
        # A rolling update: pods of an older template serve until as many of the current one are ready (maxSurge
        # first, as the default RollingUpdate's maxUnavailable of 25% rounds down to none for a few replicas).
        older = [pod for pod in pods if pod not in current]
        if sum(1 for pod in current[:wanted] if pod_ready(pod)) < wanted:
            older = []
        for pod in older + current[wanted:]:
            with contextlib.suppress(ApiError):
                self.store.delete(pod_kind, namespace, pod["metadata"]["name"])
        current = current[:wanted]
        failure = ""
        while len(current) < wanted:
            # A new name each time, as the ReplicaSet's generateName gives: a replacement is another pod.
            self._pods_made += 1
            suffix = hashlib.sha256(f"{uid}/{self._pods_made}".encode()).hexdigest()[:5]
            pod_name = f"{name}-{template_hash}-{suffix}"
            try:
                current.append(self._create_pod(pod_kind, deployment, template, template_hash, pod_name))
            except ApiError as error:
                failure = error.message
                break
        ready = sum(1 for pod in current if pod_ready(pod))
        self._deployment_status(kind, deployment, wanted, len(current), ready, template_hash, failure)

    @staticmethod
    def _adoptable(pod: Obj, spec: Obj) -> bool:
        """A pod no controller owns whose labels match the Deployment's selector (ControllerRefManager's adoption:
        what a Deployment re-created after an orphaning delete does with the pods its predecessor left)."""
        if any(ref.get("controller") for ref in pod["metadata"].get("ownerReferences") or []):
            return False
        wanted = ((spec.get("selector") or {}).get("matchLabels")) or {}
        labels = pod["metadata"].get("labels") or {}
        return bool(wanted) and all(labels.get(key) == value for key, value in wanted.items())

    def _adopt(self, pod_kind: Kind, pod: Obj, deployment: Obj) -> Obj:
        owners = [*(pod["metadata"].get("ownerReferences") or []), owner_reference(deployment, "apps/v1", "Deployment")]
        adopted = copy.deepcopy(pod)
        adopted["metadata"]["ownerReferences"] = owners
        with contextlib.suppress(ApiError):
            return self.store.replace(
                pod_kind, pod["metadata"]["namespace"], pod["metadata"]["name"], adopted, manager=DEPLOYMENT_MANAGER
            )
        return pod

    def _create_pod(self, pod_kind: Kind, deployment: Obj, template: Obj, template_hash: str, name: str) -> Obj:
        pod_metadata = copy.deepcopy(template.get("metadata") or {})
        labels = dict(pod_metadata.get("labels") or {})
        labels["pod-template-hash"] = template_hash
        pod: Obj = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": deployment["metadata"]["namespace"],
                "labels": labels,
                "annotations": dict(pod_metadata.get("annotations") or {}),
                "ownerReferences": [owner_reference(deployment, "apps/v1", "Deployment")],
            },
            "spec": copy.deepcopy(template.get("spec") or {}),
            "status": {"phase": "Pending", "conditions": [condition("PodScheduled", "False", "Unschedulable")]},
        }
        for webhook in self.pod_webhooks:
            webhook(pod)
        if pod["spec"].get("schedulingGates"):
            pod["status"] = gated_status()
        else:
            pod["status"] = self._running_status(pod)
        return self.store.create(pod_kind, deployment["metadata"]["namespace"], pod, manager=DEPLOYMENT_MANAGER)

    def _running_status(self, pod: Obj) -> Obj:
        """Started: Running and Ready with an IP; or, when an init container is told to fail (an argument containing
        `fail-load`, the sandbox's model that cannot be loaded), stuck initialising as the kubelet reports it."""
        self._pod_ips += 1
        failing = next(
            (
                container
                for container in pod["spec"].get("initContainers") or []
                if any(FAIL_MARKER in str(arg) for arg in container.get("args") or [])
            ),
            None,
        )
        if failing is not None:
            message = f"containers with incomplete status: [{failing.get('name')}]"
            return {
                "phase": "Pending",
                "podIP": f"10.244.{(self._pod_ips // 250) % 250}.{self._pod_ips % 250 + 2}",
                "conditions": [
                    condition("PodScheduled", "True"),
                    condition("Initialized", "False", "ContainersNotInitialized", message),
                    condition(
                        "ContainersReady", "False", "ContainersNotReady", "containers with unready status: [main]"
                    ),
                    condition("Ready", "False", "ContainersNotReady", "containers with unready status: [main]"),
                ],
                "initContainerStatuses": [
                    {
                        "name": failing.get("name"),
                        "ready": False,
                        "restartCount": 1,
                        "image": failing.get("image", ""),
                        "imageID": "",
                        "state": {
                            "waiting": {
                                "reason": "CrashLoopBackOff",
                                "message": f"back-off 10s restarting failed container={failing.get('name')}",
                            }
                        },
                    }
                ],
            }
        ready = "True"
        if self.ready_delay > 0:
            ready = "False"
            self._ready_at[(pod["metadata"].get("namespace", ""), pod["metadata"]["name"])] = (
                self._now + self.ready_delay
            )
        return {
            "phase": "Running",
            "podIP": f"10.244.{(self._pod_ips // 250) % 250}.{self._pod_ips % 250 + 2}",
            "conditions": [
                condition("PodScheduled", "True"),
                condition("Initialized", "True"),
                condition("ContainersReady", ready),
                condition("Ready", ready),
            ],
        }

    def _ready_due(self) -> None:
        """Pods whose model has loaded (ready_delay after they started) become Ready."""
        due = [key for key, when in self._ready_at.items() if when <= self._now]
        if not due:
            return
        pod_kind = self.store.kinds[("", "v1", "pods")]
        for namespace, name in due:
            del self._ready_at[(namespace, name)]
            with contextlib.suppress(ApiError):  # deleted meanwhile
                pod = self.store.get(pod_kind, namespace, name)
                status = copy.deepcopy(pod.get("status") or {})
                for item in status.get("conditions") or []:
                    if item.get("type") in ("ContainersReady", "Ready") and item.get("status") != "True":
                        item.update(condition(item["type"], "True"))
                self.store.update_status(pod_kind, namespace, name, status, manager=KUBELET_MANAGER)

    def _start_ungated_pods(self) -> None:
        """The scheduler binds and the kubelet starts pods whose gates were removed."""
        pod_kind = self.store.kinds[("", "v1", "pods")]
        for pod in self.store.iter_objects(pod_kind):
            status = pod.get("status") or {}
            scheduled: Obj = next((c for c in status.get("conditions") or [] if c.get("type") == "PodScheduled"), {})
            if (
                pod["spec"].get("schedulingGates")
                or status.get("phase") != "Pending"
                or scheduled.get("status") != "False"
            ):
                continue  # still gated, or already bound (running, or stuck initialising)
            with contextlib.suppress(ApiError):
                self.store.update_status(
                    pod_kind,
                    pod["metadata"]["namespace"],
                    pod["metadata"]["name"],
                    self._running_status(pod),
                    manager=KUBELET_MANAGER,
                )

    def _deployment_status(
        self, kind: Kind, deployment: Obj, wanted: int, replicas: int, ready: int, template_hash: str, failure: str
    ) -> None:
        metadata = deployment["metadata"]
        max_unavailable = wanted * 25 // 100
        conditions = []
        if ready >= wanted - max_unavailable:
            conditions.append(
                condition("Available", "True", "MinimumReplicasAvailable", "Deployment has minimum availability.")
            )
        else:
            conditions.append(
                condition(
                    "Available", "False", "MinimumReplicasUnavailable", "Deployment does not have minimum availability."
                )
            )
        replica_set = f"{metadata['name']}-{template_hash}"
        if ready >= wanted:
            conditions.append(
                condition(
                    "Progressing",
                    "True",
                    "NewReplicaSetAvailable",
                    f'ReplicaSet "{replica_set}" has successfully progressed.',
                )
            )
        else:
            conditions.append(
                condition("Progressing", "True", "ReplicaSetUpdated", f'ReplicaSet "{replica_set}" is progressing.')
            )
        if failure:
            conditions.append(condition("ReplicaFailure", "True", "FailedCreate", failure))
        current = deployment.get("status") or {}
        desired: Obj = {
            "observedGeneration": int(metadata.get("generation") or 1),
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": ready,
            "availableReplicas": ready,
            "conditions": keep_transition_times(conditions, current.get("conditions") or []),
        }
        if wanted > ready:
            desired["unavailableReplicas"] = wanted - ready
        if without_times(desired) != without_times(current):
            self.store.update_status(kind, metadata["namespace"], metadata["name"], desired, manager=DEPLOYMENT_MANAGER)


def gated_status() -> Obj:
    return {
        "phase": "Pending",
        "conditions": [condition("PodScheduled", "False", "SchedulingGated", GATED_MESSAGE)],
    }
