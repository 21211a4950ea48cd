"""The Celery application: configured from Django settings, tasks discovered in workers.tasks."""

from __future__ import annotations

import os
import time
from typing import Any

from celery import Celery
from celery.signals import before_task_publish
from prometheus_client import Counter

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

app = Celery("portal")
app.config_from_object("django.conf:settings", namespace="CELERY")


MESSAGES_PUBLISHED = Counter(
    "portal_celery_messages_published",
    "Task messages this process sent to the broker (nudges, resyncs, retries), by task name",
    ["task"],
)


# Every message carries its publication time, so /metrics can tell how long a queue's oldest message has waited
# (portal/core/queues.py). The header name is that module's PUBLISHED_AT_HEADER.
@before_task_publish.connect
def _stamp_publication_time(sender: str | None = None, headers: dict[str, Any] | None = None, **kwargs: Any) -> None:
    if headers is not None:
        headers.setdefault("portal_published_at", time.time())
    MESSAGES_PUBLISHED.labels(str(sender or "unknown")).inc()
