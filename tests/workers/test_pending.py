"""One pending reconcile per object: a deployment on an unreachable cluster gets one message however many resyncs
run, and a new one once its reconcile is done for good."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from tests.conftest import RoleMatrix
from tests.workers.conftest import deploy
from workers.kube.errors import RetryableClusterError, TerminalClusterError
from workers.provisioning.reconciler import redis_client
from workers.sandbox.server import Fault, Sandbox
from workers.tasks import deployments as deployment_tasks
from workers.tasks import pending

pytestmark = pytest.mark.django_db


def _clear_marks() -> None:
    for key in redis_client().scan_iter("portal:pending:*"):
        redis_client().delete(key)


@pytest.fixture(autouse=True)
def _no_marks() -> None:
    _clear_marks()


def test_resyncs_against_an_unreachable_cluster_send_one_message_per_deployment(
    world: tuple[RoleMatrix, Sandbox],
) -> None:
    matrix, sandbox = world
    deployment = deploy(matrix)
    sandbox.add_fault(Fault(drop=True, times=None))
    sent = [deployment_tasks.resync() for _ in range(5)]
    assert sent == [1, 0, 0, 0, 0]
    pending.done(deployment_tasks.reconcile.name, deployment.pk)  # its reconcile gave up, or converged
    assert deployment_tasks.resync() == 1


@dataclass
class _Request:
    retries: int


@dataclass
class _Task:
    """What `settled` reads of a bound Celery task."""

    retries: int
    name: str = "deployments.reconcile"
    max_retries: int = 12
    autoretry_for: tuple[type[Exception], ...] = (RetryableClusterError,)
    request: _Request = field(init=False)

    def __post_init__(self) -> None:
        self.request = _Request(self.retries)


def _marked(object_id: int) -> bool:
    return bool(redis_client().exists(f"portal:pending:deployments.reconcile:{object_id}"))


@pytest.mark.parametrize(
    ("error", "retries", "kept"),
    [
        (RetryableClusterError("cluster down"), 3, True),  # it will run again: still pending
        (RetryableClusterError("cluster down"), 12, False),  # its last try
        (TerminalClusterError("refused"), 0, False),  # not retried
        (None, 0, False),  # done
    ],
)
def test_the_mark_stays_only_while_the_task_will_retry(error: Exception | None, retries: int, kept: bool) -> None:
    redis_client().set("portal:pending:deployments.reconcile:7", "1")
    with pytest.raises(type(error)) if error else _nothing(), pending.settled(_Task(retries), 7):
        if error is not None:
            raise error
    assert _marked(7) is kept


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return False
