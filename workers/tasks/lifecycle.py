"""Worker process hooks (no tasks): the metrics endpoint of a worker pod, served by its main process once the
worker is ready, and the bookkeeping of prefork children that exit (their samples stay summed, not live)."""

from __future__ import annotations

import os
from typing import Any

from celery.signals import worker_process_shutdown, worker_ready
from django.conf import settings

from workers.metrics import forget_dead_child, serve_worker_metrics


@worker_ready.connect
def _serve_metrics(**kwargs: Any) -> None:
    port = int(getattr(settings, "WORKER_METRICS_PORT", 0))
    if port:
        serve_worker_metrics(port)


@worker_process_shutdown.connect
def _child_exited(pid: int | None = None, **kwargs: Any) -> None:
    forget_dead_child(pid or os.getpid())
