"""Reconcile metrics: every reconcile task observes its duration under its outcome, retries and errors included,
and a worker pod serves them on its metrics port."""

from __future__ import annotations

import urllib.request

import pytest
from prometheus_client import REGISTRY

from tests.conftest import RoleMatrix
from tests.workers.conftest import deploy
from workers.kube.errors import RetryableClusterError
from workers.metrics import reconcile_observed, serve_worker_metrics
from workers.sandbox.server import Sandbox
from workers.tasks.deployments import reconcile

METRIC = "portal_reconcile_duration_seconds_count"


def _count(kind: str, outcome: str) -> float:
    return REGISTRY.get_sample_value(METRIC, {"kind": kind, "outcome": outcome}) or 0.0


@pytest.mark.django_db
def test_a_reconcile_task_observes_its_duration_and_outcome(world: tuple[RoleMatrix, Sandbox]) -> None:
    matrix, _ = world
    deployment = deploy(matrix)
    before = _count("deployment", "applied")
    outcome = reconcile(deployment.pk)
    assert outcome == "applied"
    assert _count("deployment", "applied") == before + 1


def test_retried_and_failed_reconciles_are_counted_apart() -> None:
    retries, errors, done = _count("test", "retry"), _count("test", "error"), _count("test", "done")
    with pytest.raises(RetryableClusterError), reconcile_observed("test", retried=(RetryableClusterError,)):
        raise RetryableClusterError("the API server is away")
    with pytest.raises(ValueError, match="a bug"), reconcile_observed("test", retried=(RetryableClusterError,)):
        raise ValueError("a bug")
    with reconcile_observed("test", retried=(RetryableClusterError,)) as outcome:
        outcome("done")
    assert (_count("test", "retry"), _count("test", "error"), _count("test", "done")) == (
        retries + 1,
        errors + 1,
        done + 1,
    )


def test_the_worker_serves_its_metrics() -> None:
    server = serve_worker_metrics(0)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/metrics", timeout=5) as response:
            text = response.read().decode()
    finally:
        server.shutdown()
        server.server_close()
    assert "# TYPE portal_reconcile_duration_seconds histogram" in text
