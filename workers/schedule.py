"""The beat schedule: periodic tasks, by their explicit names."""

from __future__ import annotations

from typing import Any

BEAT_SCHEDULE: dict[str, dict[str, Any]] = {
    "resync-deployments": {"task": "deployments.resync", "schedule": 15.0},
    "resync-all-deployments": {"task": "deployments.resync", "schedule": 600.0, "kwargs": {"include_ready": True}},
    "check-clusters": {"task": "clusters.check_all", "schedule": 300.0},
    "purge-idempotency-records": {
        "task": "api.purge_idempotency_records",
        "schedule": 3600.0,
    },
}
