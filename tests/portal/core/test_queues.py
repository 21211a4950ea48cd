"""Queue depth and age on /metrics: read from the broker when scraped, from the publication time each task
message carries."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
import redis
from django.conf import settings
from prometheus_client import REGISTRY

from portal.celery import app
from portal.core.queues import PUBLISHED_AT_HEADER, celery_queues


@pytest.fixture
def empty_queue() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    client.delete("celery")
    yield client
    client.delete("celery")


def _sample(name: str) -> float | None:
    return REGISTRY.get_sample_value(name, {"queue": "celery"})


def test_the_queues_are_the_default_one_and_the_routed_ones() -> None:
    # k8s/portal: one worker Deployment per queue (tests/k8s compares the lists).
    assert celery_queues() == ["celery", "reconcile", "rerate", "usage"]


def test_depth_and_age_of_the_oldest_message(empty_queue: redis.Redis) -> None:
    assert (_sample("portal_celery_queue_depth"), _sample("portal_celery_queue_oldest_age_seconds")) == (0.0, 0.0)
    app.send_task("api.purge_idempotency_records")  # a task of the default queue (not routed elsewhere)
    app.send_task("api.purge_idempotency_records")
    oldest = json.loads(empty_queue.lindex("celery", -1))
    published = oldest["headers"][PUBLISHED_AT_HEADER]
    assert abs(published - time.time()) < 30
    # Make the oldest message ten minutes old, as if no worker had taken it.
    oldest["headers"][PUBLISHED_AT_HEADER] = published - 600
    empty_queue.lset("celery", -1, json.dumps(oldest))
    assert _sample("portal_celery_queue_depth") == 2.0
    age = _sample("portal_celery_queue_oldest_age_seconds")
    assert age is not None
    assert 600 <= age < 660


def test_the_metrics_endpoint_shows_them(client, empty_queue: redis.Redis) -> None:  # type: ignore[no-untyped-def]
    body = client.get("/metrics").content.decode()
    assert 'portal_celery_queue_depth{queue="celery"} 0.0' in body
    assert 'portal_celery_queue_oldest_age_seconds{queue="celery"} 0.0' in body
