"""One API request, one trace: POST a deployment, and the trace that starts at the web request goes through
the task's publication on the broker, the worker's reconcile, the database and Redis, and every request the
worker makes to the cluster's API server (the sandbox, through the real kubernetes client). A real Celery
worker runs in a thread on the test broker; spans land in the SDK's in-memory exporter."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from celery.contrib.testing.worker import start_worker
from celery.signals import task_postrun
from django.db import connections
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from portal.celery import app
from portal.core.queues import celery_queues
from portal.core.telemetry import WorkSampler, tracing_start, tracing_stop
from portal.deployments.models import Deployment
from tests.conftest import RoleMatrix
from workers.sandbox.server import Sandbox

RECONCILE = "deployments.reconcile"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=WorkSampler(1.0))  # production's sampler
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing_start(provider=provider)
    yield exporter
    tracing_stop()
    provider.shutdown()


def _close_worker_connections(**kwargs: Any) -> None:
    connections.close_all()  # in the worker's thread: its own connections, before the test database goes


@pytest.fixture
def worker() -> Iterator[None]:
    app.loader.import_default_modules()
    queues = celery_queues()  # every queue a task is routed to (the reconcile goes to its own)
    with app.connection_for_write() as connection:  # this test run's broker database: nothing left from earlier tests
        for queue in queues:
            connection.default_channel.queue_purge(queue)
    task_postrun.connect(_close_worker_connections, weak=False)
    try:
        with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=30, queues=queues):
            yield
    finally:
        task_postrun.disconnect(_close_worker_connections)


def _wait_for(exporter: InMemorySpanExporter, name: str, timeout: float = 60.0) -> ReadableSpan:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [span for span in exporter.get_finished_spans() if span.name == name]
        if found:
            return found[0]
        time.sleep(0.1)
    raise AssertionError(f"no span {name!r}; got {sorted({s.name for s in exporter.get_finished_spans()})}")


def _ancestors(span: ReadableSpan, by_id: dict[int, ReadableSpan]) -> list[str]:
    names = []
    parent = span.parent
    while parent is not None and parent.span_id in by_id:
        names.append(by_id[parent.span_id].name)
        parent = by_id[parent.span_id].parent
    return names


@pytest.mark.django_db(transaction=True)  # the task is published on commit, inside the request, as in production
def test_an_api_request_yields_one_trace_through_the_worker_to_the_cluster(
    world: tuple[RoleMatrix, Sandbox], spans: InMemorySpanExporter, worker: None
) -> None:
    matrix, sandbox = world
    response = matrix.client("developer").post(
        "/api/v1/teams/alpha/deployments",
        {"name": "chat", "model": "qwen", "accelerator_type": "nvidia-l4", "max_replicas": 2},
        format="json",
    )
    assert response.status_code == 201, response.content
    reconcile = _wait_for(spans, f"run/{RECONCILE}")
    deployment = Deployment.objects.get(team=matrix.team, name="chat")
    assert deployment.observed_generation == 1  # the worker really reconciled it

    finished = spans.get_finished_spans()
    request = next(span for span in finished if span.kind is SpanKind.SERVER)
    trace_id = request.context.trace_id
    in_trace = [span for span in finished if span.context.trace_id == trace_id]
    by_id = {span.context.span_id: span for span in in_trace}
    assert reconcile.context.trace_id == trace_id

    publish = by_id[reconcile.parent.span_id]
    assert (publish.name, publish.kind) == (f"apply_async/{RECONCILE}", SpanKind.PRODUCER)
    assert _ancestors(publish, by_id)[-1] == request.name  # published inside the request
    assert request.attributes["http.route"] == "api/v1/teams/<str:team>/deployments"

    cluster_calls = [
        span
        for span in in_trace
        if span.kind is SpanKind.CLIENT
        and str(span.attributes.get("url.full", span.attributes.get("http.url", ""))).startswith(sandbox.url)
    ]
    assert cluster_calls, "the reconcile's requests to the API server are spans of the trace"
    assert all(reconcile.name in _ancestors(call, by_id) for call in cluster_calls)
    methods = {
        str(call.attributes.get("http.request.method", call.attributes.get("http.method"))) for call in cluster_calls
    }
    assert "PATCH" in methods  # server-side apply of the desired objects

    database = [span for span in in_trace if span.attributes.get("db.system") == "postgresql"]
    assert any(request.name in _ancestors(span, by_id) for span in database)  # the web's queries
    assert any(reconcile.name in _ancestors(span, by_id) for span in database)  # the worker's
    redis = [span for span in in_trace if span.attributes.get("db.system") == "redis"]
    assert redis  # the task's message on the broker (and the worker's lock)
