"""The gateway tasks are registered under their explicit names, loaded by the worker, and scheduled by beat."""

from __future__ import annotations

from django.conf import settings

from portal.celery import app
from workers.schedule import BEAT_SCHEDULE


def test_gateway_tasks_are_imported_by_the_worker_and_scheduled() -> None:
    assert "workers.tasks.gateway" in settings.CELERY_IMPORTS
    app.loader.import_default_modules()
    assert {"gateway.reconcile", "gateway.resync"} <= set(app.tasks)
    reconcile = app.tasks["gateway.reconcile"]
    assert reconcile.acks_late is True
    assert [entry["task"] for entry in BEAT_SCHEDULE.values()].count("gateway.resync") == 1
