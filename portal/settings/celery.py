"""Celery: broker, reliability settings and the beat schedule."""

from __future__ import annotations

from portal.settings.env import ENV
from portal.settings.services import RESOLVED_BROKER_URL
from workers.schedule import BEAT_SCHEDULE

CELERY_BROKER_URL = RESOLVED_BROKER_URL
CELERY_TASK_ALWAYS_EAGER = False
# Reliability: a task is acknowledged only after it ran, and redelivered if its worker dies;
# each worker takes one message at a time so a crash loses at most that one.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_ACKS_ON_FAILURE_OR_TIMEOUT = True
CELERY_TASK_TIME_LIMIT = ENV.integer("CELERY_TASK_TIME_LIMIT", 300, minimum=10)
CELERY_TASK_SOFT_TIME_LIMIT = ENV.integer("CELERY_TASK_SOFT_TIME_LIMIT", 240, minimum=5)
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_TRACK_STARTED = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# How long a worker waits for a GPU cluster's API server to answer one request (connecting: 5 s).
PORTAL_KUBE_READ_TIMEOUT_SECONDS = ENV.integer("PORTAL_KUBE_READ_TIMEOUT_SECONDS", 30, minimum=1)
# The longest wait between two tries of a reconcile (exponential back-off from 2 s, jittered).
PORTAL_RETRY_BACKOFF_MAX_SECONDS = ENV.integer("PORTAL_RETRY_BACKOFF_MAX_SECONDS", 300, minimum=1)
# Longer than the hard time limit and the longest retry countdown (a retry waits unacknowledged in its worker), so a
# running or waiting late-ack task is not redelivered to a second worker; a message of a killed worker comes back
# after it (20 minutes by default).
_VISIBILITY_TIMEOUT = 2 * (CELERY_TASK_TIME_LIMIT + PORTAL_RETRY_BACKOFF_MAX_SECONDS)
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": _VISIBILITY_TIMEOUT,
    # How often a worker looks for such messages (Redis transport): a tenth of the timeout, every time (kombu's
    # default scans every 10th tick of 10 s, so a killed worker's message could wait 100 s past its timeout).
    "unacked_restore_interval": max(5, _VISIBILITY_TIMEOUT // 10),
    "unacked_restore_throttle": 1,
}
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = True
# Queues, so that slow work never waits in front of a reconcile: a re-rate of a year of usage or a rollup of a busy
# hour takes minutes, a deployment's reconcile a second. Each queue has its own workers (k8s/portal/base/worker-*.yaml,
# `make demo`); anything not routed (housekeeping, the Backstage team sync) goes to the default queue. Exact names
# are matched before patterns (celery.app.routes.MapRoute), so the re-rates leave the usage pattern's queue.
CELERY_TASK_DEFAULT_QUEUE = "celery"
CELERY_TASK_ROUTES = {
    "usage.rerate": {"queue": "rerate"},
    "usage.rerate_backdated_prices": {"queue": "rerate"},
    "deployments.*": {"queue": "reconcile"},
    "gateway.*": {"queue": "reconcile"},
    "clusters.*": {"queue": "reconcile"},
    "usage.*": {"queue": "usage"},
}
CELERY_TIMEZONE = "UTC"
CELERY_ENABLE_UTC = True
# The cadences that bound how soon a change shows (usage in the cost report, a budget block at the gateway, a
# quota or suspension on every cluster); shorter ones cost more database and cluster reads.
_INTERVALS = {
    "resync-deployments": ENV.integer("PORTAL_DEPLOYMENT_RESYNC_SECONDS", 15, minimum=1),
    "resync-gateway-policies": ENV.integer("PORTAL_GATEWAY_RESYNC_SECONDS", 30, minimum=1),
    "usage-rollups": ENV.integer("PORTAL_USAGE_ROLLUP_SECONDS", 30, minimum=1),
    "usage-budgets": ENV.integer("PORTAL_USAGE_BUDGET_SECONDS", 60, minimum=1),
}
CELERY_BEAT_SCHEDULE = {
    name: {**entry, "schedule": float(_INTERVALS.get(name, entry["schedule"]))} for name, entry in BEAT_SCHEDULE.items()
}
# Task modules are listed, not discovered, so a worker never runs with half its tasks.
CELERY_IMPORTS = (
    "workers.tasks.maintenance",
    "workers.tasks.deployments",
    "workers.tasks.clusters",
    "workers.tasks.tenancy",
    "workers.tasks.usage",
    "workers.tasks.gateway",
    "workers.tasks.lifecycle",  # worker hooks, no tasks: the worker pod's metrics endpoint
)
