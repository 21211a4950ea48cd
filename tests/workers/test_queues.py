"""Separate queues: every task is routed to the queue of its kind of work, and a backlog of re-rates over a large
range never delays a deployment's reconcile, with real Celery worker processes as k8s/portal runs them (one per
queue) on the test broker."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from portal.celery import app
from portal.deployments.models import Deployment
from tests.conftest import RoleMatrix
from tests.workers.conftest import deploy
from tests.workers.processes import CeleryWorker, purge_queues, queued_messages, worker_environment
from workers.provisioning.reconciler import redis_client
from workers.sandbox.server import Sandbox

ROUTED = {
    "deployments.reconcile": "reconcile",
    "deployments.resync": "reconcile",
    "deployments.team_gpu_quota_changed": "reconcile",
    "deployments.team_key_routes_changed": "reconcile",
    "gateway.reconcile": "reconcile",
    "gateway.resync": "reconcile",
    "clusters.check": "reconcile",
    "clusters.check_all": "reconcile",
    "clusters.inventory": "reconcile",
    "usage.rollups_recompute": "usage",
    "usage.budgets_evaluate": "usage",
    "usage.gpu_accrue": "usage",
    "usage.partitions_ensure": "usage",
    "usage.partitions_drop_old": "usage",
    "usage.deliver_budget_alert": "usage",
    "usage.deliver_pending_alerts": "usage",
    "usage.rerate": "rerate",
    "usage.rerate_backdated_prices": "rerate",
    "api.purge_idempotency_records": "celery",
    "tenancy.sync_backstage_teams": "celery",
}


def test_every_task_goes_to_the_queue_of_its_kind_of_work() -> None:
    app.loader.import_default_modules()
    registered = {name for name in app.tasks if not name.startswith("celery.")}
    assert registered <= set(ROUTED), f"route these new tasks deliberately: {sorted(registered - set(ROUTED))}"
    routes = {name: app.amqp.router.route({}, name)["queue"].name for name in registered}
    assert routes == {name: queue for name, queue in ROUTED.items() if name in registered}


@pytest.fixture
def reconcile_worker(tmp_path: Path) -> Iterator[CeleryWorker]:
    purge_queues()
    worker = CeleryWorker(
        "reconcile", name="reconcile", concurrency=1, environment=worker_environment(), log=tmp_path / "worker.log"
    )
    worker.start()
    yield worker
    worker.stop()
    purge_queues()


@pytest.mark.django_db(transaction=True)
def test_a_backlog_of_re_rates_never_delays_a_deployment_reconcile(
    world: tuple[RoleMatrix, Sandbox], reconcile_worker: CeleryWorker
) -> None:
    """Fifty re-rates of a year each are waiting (their worker busy, or down) when a team deploys: the reconcile
    workers take the deployment at once, and the re-rates are still waiting on their own queue."""
    matrix, _ = world
    for _ in range(50):
        app.send_task("usage.rerate", args=["qwen", "2025-01-01T00:00:00+00:00", "2026-01-01T00:00:00+00:00"])
    assert redis_client().llen("rerate") == 50
    reconcile_worker.wait_ready()
    started = time.monotonic()
    deployment = deploy(matrix)
    while time.monotonic() - started < 30:
        deployment.refresh_from_db()
        if deployment.observed_generation == 1:
            break
        time.sleep(0.1)
    assert Deployment.objects.get(pk=deployment.pk).observed_generation == 1, reconcile_worker.log.read_text()[-2000:]
    assert redis_client().llen("rerate") == 50  # not one re-rate ran in front of it, nor was it behind them
    assert queued_messages() == 50
