"""One pending reconcile per object: the periodic resyncs re-enqueue what is not converged, and a reconcile that
waits on an unreachable cluster retries itself for up to an hour; without a mark, each resync would add another
message for the same object (a fan that grows every 15 s while a cluster is down).

A Redis mark per (task, id) says a message is pending. The resync sends only when it can set the mark; the task
clears it when it finishes for good (success, a terminal error, or its last retry), not while it retries. The mark
expires on its own, so a message lost with a dead worker is sent again by a later resync. Nudges from services
(a spec change) always send: they are one per change, and the reconcile is level-triggered.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.conf import settings

from workers.provisioning.reconciler import redis_client

logger = logging.getLogger(__name__)

# The longest wait between two tries of a reconcile (PORTAL_RETRY_BACKOFF_MAX_SECONDS, 300 s by default).
RETRY_BACKOFF_MAX: int = settings.PORTAL_RETRY_BACKOFF_MAX_SECONDS


def mark_seconds() -> int:
    """Long enough for a retry chain's back-off step and a run at its time limit, short enough that a message lost
    with a killed worker is replaced within minutes."""
    return int(settings.CELERY_TASK_TIME_LIMIT) * 2 + RETRY_BACKOFF_MAX


def _key(task_name: str, object_id: int) -> str:
    return f"portal:pending:{task_name}:{object_id}"


def enqueue_once(task: Any, object_id: int) -> bool:
    """Send `task(object_id)` unless a message for it is already pending; True when one was sent."""
    if not redis_client().set(_key(task.name, object_id), "1", nx=True, ex=mark_seconds()):
        return False
    task.delay(object_id)
    return True


def done(task_name: str, object_id: int) -> None:
    """The task finished for good with this object: a later resync may send again."""
    redis_client().delete(_key(task_name, object_id))


@contextmanager
def settled(task: Any, object_id: int) -> Iterator[None]:
    """Around a task's work: clear the mark when the task is done with the object for good; keep it while the
    task will retry (an error listed in its autoretry_for, retries left)."""
    try:
        yield
    except Exception as error:
        retrying = isinstance(error, tuple(getattr(task, "autoretry_for", ()))) and task.request.retries < (
            task.max_retries or 0
        )
        if not retrying:
            done(task.name, object_id)
        raise
    done(task.name, object_id)


def give_up_or_retry(task: Any, error: Exception, *, subject: str) -> str:
    """An expected condition (the object's lock held by another worker, its cluster unreachable or throttling):
    re-raised while retries remain, for the task's autoretry (Celery logs one INFO line, "retry: Retry in Ns");
    after the last one, one WARNING line and no traceback: the periodic resync sends the object again."""
    if task.request.retries < (task.max_retries or 0):
        raise error
    logger.warning(
        "%s: gave up after %s tries, the resync will send it again: %s", subject, task.request.retries + 1, error
    )
    return "gave_up"
