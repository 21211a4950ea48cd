"""Expected conditions log one line, never a traceback: a gateway reconcile that finds its lock held elsewhere, and a
deployment reconcile whose cluster cannot be reached, on each retry (INFO, Celery's "retry: Retry in Ns") and after
the last one (WARNING: the resync sends it again). The tasks run through Celery's tracer as a worker runs them."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from celery.app.trace import build_tracer
from django.conf import settings
from prometheus_client import REGISTRY

from tests.conftest import RoleMatrix
from tests.workers.conftest import deploy
from workers.provisioning.gateway import policy_lock
from workers.provisioning.reconciler import redis_client
from workers.sandbox.server import Fault, Sandbox
from workers.tasks import deployments as deployment_tasks
from workers.tasks import gateway as gateway_tasks

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _empty_queues() -> Iterator[None]:
    """A retry is a new message on the broker: none is left for the next test's workers."""

    def purge() -> None:
        for queue in ("reconcile", "celery"):
            redis_client().delete(queue)
        for key in redis_client().scan_iter("portal:pending:*"):
            redis_client().delete(key)

    purge()
    yield
    purge()


def _run_as_worker(task: Any, object_id: int, *, retries: int) -> None:
    """One delivery of `task(object_id)`, the `retries`-th retry, through the tracer a worker uses (not eager)."""
    tracer = build_tracer(task.name, task, eager=False, propagate=False, app=task.app)
    task_id = str(uuid.uuid4())
    tracer(task_id, (object_id,), {}, {"id": task_id, "retries": retries, "delivery_info": {}})


def _lines(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str, bool]]:
    """(level, message, has a traceback) of everything logged at INFO or above (urllib3's "Retrying ..." warnings
    included), but Celery's line for every task that returns ("succeeded in")."""
    return [
        (record.levelname, record.getMessage(), record.exc_info is not None or bool(record.exc_text))
        for record in caplog.records
        if record.levelno >= logging.INFO and " succeeded in " not in record.getMessage()
    ]


def test_a_busy_gateway_reconcile_logs_one_line_per_try_and_no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    task = gateway_tasks.reconcile
    given_up = {"kind": "gateway_policy", "outcome": "gave_up"}
    before = REGISTRY.get_sample_value("portal_reconcile_duration_seconds_count", given_up) or 0.0
    with policy_lock(4242):  # another worker's reconcile of the same policy
        _run_as_worker(task, 4242, retries=0)
        first = _lines(caplog)
        caplog.clear()
        _run_as_worker(task, 4242, retries=task.max_retries)
        last = _lines(caplog)
    assert len(first) == 1, first
    level, message, traceback = first[0]
    assert (level, traceback) == ("INFO", False)
    assert "retry: Retry in" in message
    assert "gateway policy 4242 is being reconciled elsewhere" in message
    assert last == [
        (
            "WARNING",
            f"gateway policy 4242: gave up after {task.max_retries + 1} tries, the resync will send it again: "
            "gateway policy 4242 is being reconciled elsewhere",
            False,
        )
    ]
    assert redis_client().llen("reconcile") == 1  # the first try's retry message; the last one sent none
    assert REGISTRY.get_sample_value("portal_reconcile_duration_seconds_count", given_up) == before + 1


def test_an_unreachable_cluster_logs_one_line_per_retry_and_no_traceback(
    world: tuple[RoleMatrix, Sandbox], caplog: pytest.LogCaptureFixture
) -> None:
    matrix, sandbox = world
    deployment = deploy(matrix)
    sandbox.add_fault(Fault(drop=True, times=None))  # every request's connection is dropped
    caplog.set_level(logging.INFO)
    task = deployment_tasks.reconcile
    for retries in (0, 1, 2):
        caplog.clear()
        _run_as_worker(task, deployment.pk, retries=retries)
        lines = _lines(caplog)
        assert len(lines) == 1, lines
        level, message, traceback = lines[0]
        assert (level, traceback) == ("INFO", False)
        assert "retry: Retry in" in message
        assert "cannot reach" in message
    caplog.clear()
    _run_as_worker(task, deployment.pk, retries=task.max_retries)
    [(level, message, traceback)] = _lines(caplog)
    assert (level, traceback) == ("WARNING", False)
    assert message.startswith(f"deployment {deployment.pk}: gave up after {task.max_retries + 1} tries")
    assert settings.CELERY_TASK_ROUTES["deployments.*"] == {"queue": "reconcile"}
