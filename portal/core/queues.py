"""Celery queue depth and age, read from the broker at scrape time: how many task messages wait in each queue
and how long the oldest has waited (from the publication time every message carries, see portal/celery.py)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import redis
from django.conf import settings
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

logger = logging.getLogger(__name__)
PUBLISHED_AT_HEADER = "portal_published_at"


def celery_queues() -> list[str]:
    """Every queue tasks are sent to: the default one and any a route names."""
    queues = {getattr(settings, "CELERY_TASK_DEFAULT_QUEUE", "celery")}
    for route in (getattr(settings, "CELERY_TASK_ROUTES", None) or {}).values():
        if isinstance(route, dict) and route.get("queue"):
            queues.add(route["queue"])
    return sorted(queues)


def _published_at(message: bytes | None) -> float | None:
    """The oldest message's publication time; the Redis transport keeps messages as JSON, oldest at the tail."""
    if not message:
        return None
    try:
        headers = json.loads(message).get("headers") or {}
        return float(headers[PUBLISHED_AT_HEADER])
    except (ValueError, KeyError, TypeError, AttributeError):
        return None  # a message published before the header existed, or not by the portal


def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
    depth = GaugeMetricFamily("portal_celery_queue_depth", "Task messages waiting in a Celery queue", labels=["queue"])
    age = GaugeMetricFamily(
        "portal_celery_queue_oldest_age_seconds",
        "How long the oldest waiting message of a Celery queue has waited (0 when empty)",
        labels=["queue"],
    )
    return depth, age


class CeleryQueueCollector(Collector):
    def describe(self) -> Iterator[Any]:
        """The families, without reading the broker (registration asks; a scrape collects)."""
        yield from _families()

    def collect(self) -> Iterator[Any]:
        depth, age = _families()
        broker_url = str(settings.CELERY_BROKER_URL)
        if not broker_url.startswith(("redis://", "rediss://", "redis+socket://")):
            return  # another broker (RabbitMQ) has its own exporter
        try:
            client = redis.Redis.from_url(
                broker_url.replace("redis+socket://", "unix://"), socket_timeout=2, socket_connect_timeout=2
            )
            now = time.time()
            for queue in celery_queues():
                with client.pipeline(transaction=False) as pipeline:
                    pipeline.llen(queue)
                    pipeline.lindex(queue, -1)
                    length, oldest = pipeline.execute()
                depth.add_metric([queue], float(length))
                published = _published_at(oldest)
                age.add_metric([queue], max(now - published, 0.0) if published is not None else 0.0)
        except redis.RedisError as error:
            logger.warning("could not read the Celery queues: %s", error)
            return
        yield depth
        yield age
