"""Prometheus metrics of the workers: how long reconciles take and how they end. A worker pod serves them on
PORTAL_WORKER_METRICS_PORT from its main process, summed over its prefork children when PROMETHEUS_MULTIPROC_DIR
is set (prometheus_client's multiprocess mode, which k8s/portal configures)."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Histogram, multiprocess, start_http_server

logger = logging.getLogger(__name__)

RECONCILE_DURATION = Histogram(
    "portal_reconcile_duration_seconds",
    "Time one reconcile took, by what it reconciled (deployment, gateway_policy) and how it ended",
    ["kind", "outcome"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)


@contextmanager
def reconcile_observed(kind: str, *, retried: tuple[type[BaseException], ...]) -> Iterator[Callable[[str], None]]:
    """Times the block; it reports its outcome through the callable it is given. An exception in `retried` counts
    as `retry` (the task runs again), any other as `error`."""
    outcome = ["error"]
    started = time.perf_counter()
    try:
        yield lambda value: outcome.__setitem__(0, value)
    except retried:
        outcome[0] = "retry"
        raise
    finally:
        RECONCILE_DURATION.labels(kind, outcome[0]).observe(time.perf_counter() - started)


def serve_worker_metrics(port: int) -> Any:
    """Start the metrics endpoint of this worker pod (its main process); returns the server."""
    registry: CollectorRegistry = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # read by prometheus_client itself; named here to choose
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    server, _ = start_http_server(port, registry=registry)
    logger.info("worker metrics on port %s", port)
    return server


def forget_dead_child(pid: int) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
