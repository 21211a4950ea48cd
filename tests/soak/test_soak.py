"""The fault soak: deployments churn (create, scale, edit, delete, and a catalog edit under all of them) over many
teams while the sandbox API server answers a share of requests with 500s and 429s, times out or drops the
connection, and real Celery worker processes (the reconcile queue's, on the test broker) are killed with SIGKILL at
random and replaced, as a node's death and its Deployment controller would. When the churn stops, within a bound:
every surviving deployment is Ready with the status the cluster shows, no orphaned object remains, nothing was
created twice, the audit log has every change once, and no message is left queued or unacknowledged.

`make test` runs the short variant (16 deployments over 4 teams, 2 workers killed); `make soak` the full one
(PORTAL_SOAK=full: 200 deployments over 20 teams). Both print their figures: time to converge, requests to the API
server per deployment, task messages per deployment."""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from django.db import connections
from prometheus_client import REGISTRY, CollectorRegistry, multiprocess

from catalog.models import ModelVersion
from catalog.services import model_version_update
from portal.celery import app
from portal.clusters import selectors as cluster_selectors
from portal.clusters.models import Cluster
from portal.core.errors import Conflict
from portal.core.models import AuditEvent
from portal.deployments import selectors as deployment_selectors
from portal.deployments import services as deployment_services
from portal.deployments.models import Deployment
from portal.tenancy import selectors as tenancy_selectors
from portal.tenancy.models import Team, TeamGpuQuota, User
from tests.factories import SelfHostedVersionFactory, TeamFactory, UserFactory
from tests.sandbox_cluster import register_sandbox_cluster
from tests.workers.processes import CeleryWorker, purge_queues, queued_messages, worker_environment
from workers.kube.client import connect
from workers.provisioning.reconciler import cluster_snapshot, deployment_specs, redis_client, status_if_in_sync
from workers.sandbox.server import Fault, Sandbox


@dataclass(frozen=True)
class Scale:
    deployments: int
    teams: int
    workers: int
    churn_seconds: float  # the churn lasts at least this long (operations are paced over it)
    operations: int  # scale, edit and delete operations after the creates
    kill_every: float  # seconds between two SIGKILLs of a random worker
    kills: int  # how many (a killed worker's unacknowledged message comes back only after the visibility timeout)
    converge_within: float  # the bound, from the end of the churn


SCALES = {
    "short": Scale(
        deployments=16, teams=4, workers=2, churn_seconds=6, operations=20, kill_every=1.5, kills=2, converge_within=60
    ),
    "full": Scale(
        deployments=200,
        teams=20,
        workers=3,
        churn_seconds=45,
        operations=300,
        kill_every=5,
        kills=8,
        converge_within=240,
    ),
}
# Settings of the soak's workers: short limits, so that what a killed worker held (its lock, its pending mark, its
# unacknowledged message) comes back within seconds, not the production minutes; the same code paths.
WORKER_SETTINGS = {
    "CELERY_TASK_TIME_LIMIT": "10",
    "CELERY_TASK_SOFT_TIME_LIMIT": "8",
    "PORTAL_RETRY_BACKOFF_MAX_SECONDS": "2",
    "PORTAL_KUBE_READ_TIMEOUT_SECONDS": "2",
}
# A share of every request to the API server fails, each way a real one does.
FAULTS = (
    Fault(status=500, times=None, probability=0.04, message="soak: internal error"),
    Fault(status=429, times=None, probability=0.04, message="soak: throttled"),
    Fault(drop=True, times=None, probability=0.03),
    Fault(delay=2.5, times=None, probability=0.01),  # longer than the workers' read timeout
)
RESYNC_SECONDS, SWEEP_SECONDS = 2.0, 8.0  # the beat cadences of the soak (production: 15 s and 10 minutes)


@dataclass
class Ledger:
    """What the churn did, to check the audit log and the cluster against."""

    created: dict[int, str] = field(default_factory=dict)  # deployment id -> name
    deleted: set[int] = field(default_factory=set)
    actions: Counter[str] = field(default_factory=Counter)  # audit action -> expected rows

    @property
    def surviving(self) -> set[int]:
        return set(self.created) - self.deleted


@dataclass
class Workers:
    """The reconcile queue's workers; a killed one is replaced at once, as a Deployment controller would."""

    environment: dict[str, str]
    directory: Path
    count: int
    running: list[CeleryWorker] = field(default_factory=list)
    kills: int = 0
    started: int = 0

    def start_one(self) -> CeleryWorker:
        self.started += 1
        worker = CeleryWorker(
            "reconcile",
            name=f"soak-{self.started}",
            concurrency=2,
            environment=self.environment,
            log=self.directory / f"worker-{self.started}.log",
        ).start()
        self.running.append(worker)
        return worker

    def kill_one(self, chooser: random.Random, *, at_most: int) -> None:
        if self.kills >= at_most:
            return
        victim = chooser.choice(self.running)
        victim.kill()
        self.running.remove(victim)
        self.kills += 1
        self.start_one()

    def stop(self) -> None:
        for worker in self.running:
            worker.stop()


def _every(interval: float, stop: threading.Event, action: Callable[[], None]) -> threading.Thread:
    def loop() -> None:
        try:
            while not stop.wait(interval):
                action()
        finally:
            connections.close_all()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    return thread


def _published(directory: Path) -> float:
    """Task messages sent by the workers (their multiprocess samples, killed ones included) and by this process."""
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(directory))  # type: ignore[no-untyped-call]
    total = 0.0
    for collector in (registry, REGISTRY):
        for metric in collector.collect():
            if metric.name == "portal_celery_messages_published":
                total += sum(sample.value for sample in metric.samples if sample.name.endswith("_total"))
    return total


def _world(sandbox: Sandbox, scale: Scale) -> tuple[Cluster, list[Team], User]:
    cluster = register_sandbox_cluster(sandbox, name="soak", l4_gpus=scale.deployments * 4, scheduling=False)
    SelfHostedVersionFactory(model__slug="qwen", version="v1", gpus_per_replica=1, min_gpu_memory_gb=16)
    teams = []
    for index in range(scale.teams):
        team = TeamFactory(slug=f"soak-{index:02d}")
        team.quota.max_deployments = scale.deployments
        team.quota.save()
        TeamGpuQuota.objects.create(quota=team.quota, accelerator_type="nvidia-l4", gpus=scale.deployments * 3)
        teams.append(team)
    return cluster, teams, UserFactory(username="soak-admin", is_staff=True)


def _churn(scale: Scale, teams: list[Team], actor: User, ledger: Ledger, chooser: random.Random) -> None:
    """Create every deployment, then scale, edit and delete at random, paced over the churn's duration; half way
    through, a catalog edit changes what every deployment of the version is built from."""
    started = time.monotonic()
    pace = scale.churn_seconds / (scale.deployments + scale.operations)
    for index in range(scale.deployments):
        result = deployment_services.deployment_create(
            actor=actor,
            platform_admin=True,
            team=teams[index % len(teams)],
            name=f"d{index:03d}",
            model="qwen",
            accelerator_type="nvidia-l4",
        )
        ledger.created[result.deployment.pk] = result.deployment.name
        ledger.actions["deployment.create"] += 1
        time.sleep(max(0.0, started + pace * (index + 1) - time.monotonic()))
    for operation in range(scale.operations):
        if operation == scale.operations // 2:
            model_version_update(
                actor=actor, version=ModelVersion.objects.get(model__slug="qwen"), changes={"cpu": "6"}
            )
            ledger.actions["model_version.update"] += 1
        target = Deployment.objects.get(pk=chooser.choice(sorted(ledger.surviving)))
        kind = chooser.choices(["scale", "edit", "delete"], weights=[5, 4, 2])[0]
        if kind == "delete" and len(ledger.deleted) < scale.deployments // 4:
            deployment_services.deployment_delete(actor=actor, deployment=target)
            ledger.deleted.add(target.pk)
            ledger.actions["deployment.delete"] += 1
            ledger.actions["deployment.finalize"] += 1  # once its objects are gone
        else:
            changes: dict[str, Any] = (
                {"max_replicas": chooser.randint(1, 3)}
                if kind == "scale"
                else {"runtime_args": [f"--max_num_seqs={chooser.choice([16, 32, 64, 128])}"]}
            )
            before = target.generation
            try:
                updated = deployment_services.deployment_update(
                    actor=actor, deployment=target, changes=changes, platform_admin=True
                )
            except Conflict:
                continue
            if updated.generation != before:
                ledger.actions["deployment.update"] += 1
        index = scale.deployments + operation + 1
        time.sleep(max(0.0, started + pace * index - time.monotonic()))


def _unconverged(cluster: Cluster, ledger: Ledger) -> str:
    """What still keeps the soak from having converged ("" once it has)."""
    rows = {row.pk: row for row in Deployment.objects.filter(pk__in=list(ledger.created))}
    if leftover := sorted(set(rows) & ledger.deleted):
        return f"{len(leftover)} deleted deployments not finalized, e.g. {leftover[:5]}"
    if missing := sorted(ledger.surviving - set(rows)):
        return f"surviving deployments gone: {missing[:5]}"
    behind = [row.name for row in rows.values() if row.phase != "Ready" or row.observed_generation != row.generation]
    if behind:
        return f"{len(behind)} deployments not Ready at their generation, e.g. {behind[:5]}"
    snapshot = cluster_snapshot(connect(cluster_selectors.cluster_connection(cluster_id=cluster.pk)))
    orphans = set(snapshot.owned_by_deployment) - {str(pk) for pk in ledger.surviving}
    if orphans:
        return f"objects of {len(orphans)} deployments that are gone: {sorted(orphans)[:5]}"
    recorded = deployment_selectors.deployment_observed_statuses(deployment_ids=sorted(ledger.surviving))
    limits: dict[str, int] = {}
    for spec in deployment_specs(sorted(ledger.surviving)):
        limit = limits.setdefault(spec.team_slug, tenancy_selectors.team_gpu_total(team_slug=spec.team_slug))
        live = status_if_in_sync(spec, snapshot, limit)
        if live is None:
            return f"{spec.name} of {spec.team_slug}: the cluster does not hold its desired objects"
        if live != recorded[spec.deployment_id]:
            return f"{spec.name} of {spec.team_slug}: recorded {recorded[spec.deployment_id]}, the cluster shows {live}"
    return ""


@pytest.fixture
def scale() -> Scale:
    return SCALES[os.environ.get("PORTAL_SOAK", "short")]


@pytest.fixture
def workers(tmp_path: Path, scale: Scale) -> Iterator[Workers]:
    purge_queues()
    for key in redis_client().scan_iter("portal:*"):
        redis_client().delete(key)
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    pool = Workers(
        environment=worker_environment(**WORKER_SETTINGS, PROMETHEUS_MULTIPROC_DIR=str(metrics)),
        directory=tmp_path,
        count=scale.workers,
    )
    yield pool
    pool.stop()
    purge_queues()


@pytest.mark.django_db(transaction=True)
def test_deployments_converge_after_churn_under_faults_and_killed_workers(
    clean_sandbox: Sandbox, workers: Workers, scale: Scale, tmp_path: Path
) -> None:
    sandbox = clean_sandbox
    chooser = random.Random(11)
    cluster, teams, actor = _world(sandbox, scale)
    for _ in range(scale.workers):
        workers.start_one()
    for worker in list(workers.running):
        worker.wait_ready()
    published_before = _published(tmp_path / "metrics")
    sandbox.reset_records()
    ledger = Ledger()

    stop_beat, stop_chaos = threading.Event(), threading.Event()
    beats = [
        _every(RESYNC_SECONDS, stop_beat, lambda: app.send_task("deployments.resync")),
        _every(SWEEP_SECONDS, stop_beat, lambda: app.send_task("deployments.resync", kwargs={"include_ready": True})),
    ]
    for fault in FAULTS:
        sandbox.add_fault(Fault(**{**fault.__dict__}))
    killer = _every(scale.kill_every, stop_chaos, lambda: workers.kill_one(chooser, at_most=scale.kills))
    churn_started = time.monotonic()
    try:
        _churn(scale, teams, actor, ledger, chooser)
    finally:
        stop_chaos.set()
        killer.join(timeout=60)
        sandbox.clear_faults()
    churn_ended = time.monotonic()
    failed_requests = sum(1 for record in sandbox.records if record.status in (0, 429, 500))

    reason = "not checked yet"
    deadline = churn_ended + scale.converge_within
    while time.monotonic() < deadline:
        reason = _unconverged(cluster, ledger)
        if not reason:
            break
        time.sleep(1.0)
    # Converged: beat stops (as if its next run were far off), and every message sent must drain, including those a
    # killed worker had taken and never acknowledged (the broker gives them back after the visibility timeout).
    stop_beat.set()
    for beat in beats:
        beat.join(timeout=10)
    while not reason and queued_messages() and time.monotonic() < deadline:
        time.sleep(0.5)
    if not reason and queued_messages():
        reason = f"messages left: {_queue_report()}"
    converged = time.monotonic() - churn_ended
    assert not reason, f"not converged {scale.converge_within:.0f} s after the churn: {reason}"
    assert _unconverged(cluster, ledger) == ""  # the last messages changed nothing

    # Nothing was created twice: one create on the cluster per InferenceService, one row and one audit per create.
    creates = Counter(
        record.path.rsplit("/", 1)[-1]
        for record in sandbox.records
        if record.method == "PATCH" and record.status == 201 and "/inferenceservices/" in record.path
    )
    assert set(creates.values()) == {1}, creates.most_common(3)
    assert {ledger.created[pk] for pk in ledger.surviving} <= set(creates)  # (one deleted early may never have been)
    # The audit log has every change once.
    audited = Counter(AuditEvent.objects.filter(action__in=list(ledger.actions)).values_list("action", flat=True))
    assert audited == ledger.actions
    for action in ("deployment.create", "deployment.delete", "deployment.finalize"):
        per_target = Counter(AuditEvent.objects.filter(action=action).values_list("target_id", flat=True))
        assert set(per_target.values()) == {1}, (action, per_target.most_common(3))
    assert workers.kills == scale.kills

    requests = len(sandbox.records)
    messages = _published(tmp_path / "metrics") - published_before
    print(
        f"\nfault soak ({os.environ.get('PORTAL_SOAK', 'short')}): {len(ledger.created)} deployments over "
        f"{len(teams)} teams, {len(ledger.deleted)} deleted, {sum(ledger.actions.values())} audited changes; "
        f"{workers.kills} workers killed, {failed_requests} requests failed by injection; churn "
        f"{churn_ended - churn_started:.1f} s; converged {converged:.1f} s after it; "
        f"{requests / len(ledger.created):.1f} requests per deployment; "
        f"{messages / len(ledger.created):.1f} messages enqueued per deployment"
    )


def _queue_report() -> str:
    client = redis_client()
    waiting = {queue: client.llen(queue) for queue in ("reconcile", "celery", "usage", "rerate")}
    unacked = [json.loads(value)[0]["headers"]["task"] for value in client.hvals("unacked")]
    return f"waiting {waiting}, unacknowledged {Counter(unacked)}"
