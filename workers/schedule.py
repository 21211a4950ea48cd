"""The beat schedule: periodic tasks, by their explicit names."""

from __future__ import annotations

from typing import Any

BEAT_SCHEDULE: dict[str, dict[str, Any]] = {
    "resync-deployments": {"task": "deployments.resync", "schedule": 15.0},
    "resync-all-deployments": {"task": "deployments.resync", "schedule": 600.0, "kwargs": {"include_ready": True}},
    "check-clusters": {"task": "clusters.check_all", "schedule": 300.0},
    "sync-backstage-teams": {"task": "tenancy.sync_backstage_teams", "schedule": 300.0},
    "resync-gateway-policies": {"task": "gateway.resync", "schedule": 30.0},
    "purge-idempotency-records": {
        "task": "api.purge_idempotency_records",
        "schedule": 3600.0,
    },
    "usage-partitions-ahead": {"task": "usage.partitions_ensure", "schedule": 6 * 3600.0},
    "usage-partitions-retention": {"task": "usage.partitions_drop_old", "schedule": 24 * 3600.0},
    "usage-rollups": {"task": "usage.rollups_recompute", "schedule": 30.0},
    "usage-budgets": {"task": "usage.budgets_evaluate", "schedule": 60.0},
    "usage-gpu-hours": {"task": "usage.gpu_accrue", "schedule": 300.0},
    "usage-pending-alerts": {"task": "usage.deliver_pending_alerts", "schedule": 900.0},
    "usage-backdated-prices": {"task": "usage.rerate_backdated_prices", "schedule": 300.0},
}
