"""k8s/grafana: the dashboard plots only metrics the portal exports, and every metric the issue asks to watch."""

from __future__ import annotations

import json
import re

from prometheus_client import REGISTRY

import portal.core.health
import portal.core.metrics
import portal.usage.metrics  # noqa: F401
import workers.metrics  # noqa: F401
from tests.k8s.manifests import K8S

DASHBOARD = K8S / "grafana" / "genai-portal.json"
_SUFFIXES = ("_bucket", "_count", "_sum", "_total")


def _exported() -> set[str]:
    names = set()
    for collector in list(REGISTRY._collector_to_names):  # every registered collector, custom ones included
        for family in collector.collect():
            names.add(family.name)
            names.update(sample.name for sample in family.samples)
    return names


def _plotted() -> set[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    return {name for expr in expressions for name in re.findall(r"\b(portal_[a-z_]+)", expr)}


def test_every_plotted_metric_is_exported() -> None:
    exported = _exported()
    for name in _plotted():
        base = next((name.removesuffix(suffix) for suffix in _SUFFIXES if name.endswith(suffix)), name)
        assert name in exported or base in exported, name


def test_the_dashboard_covers_reconciles_queues_and_ingestion() -> None:
    plotted = _plotted()
    assert {
        "portal_reconcile_duration_seconds_bucket",
        "portal_reconcile_duration_seconds_count",
        "portal_celery_queue_depth",
        "portal_celery_queue_oldest_age_seconds",
        "portal_usage_ingest_lag_seconds_bucket",
        "portal_usage_events_rejected_total",
    } <= plotted
