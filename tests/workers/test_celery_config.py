"""The Celery app carries the reliability settings and registers its tasks under explicit names."""

from __future__ import annotations

from portal.celery import app
from workers.schedule import BEAT_SCHEDULE
from workers.tasks import pending


def test_reliability_settings() -> None:
    conf = app.conf
    assert conf.task_acks_late is True
    assert conf.task_reject_on_worker_lost is True
    assert conf.worker_prefetch_multiplier == 1
    assert conf.task_serializer == "json"
    assert conf.broker_transport_options["visibility_timeout"] > conf.task_time_limit
    # A retry waits for its countdown unacknowledged in a worker: it must not be handed to another meanwhile.
    assert conf.broker_transport_options["visibility_timeout"] > conf.task_time_limit + pending.RETRY_BACKOFF_MAX


def test_every_scheduled_task_is_registered_by_name() -> None:
    app.loader.import_default_modules()
    for entry in BEAT_SCHEDULE.values():
        assert entry["task"] in app.tasks, entry["task"]
