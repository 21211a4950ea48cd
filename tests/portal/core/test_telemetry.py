"""The portal's own traces and logs: off unless an OTLP endpoint is configured; when it is, spans reach an OTLP/HTTP
receiver (here one in this process) in protobuf, and JSON log lines carry the trace and span ids of their work."""

from __future__ import annotations

import gzip
import http.server
import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from opentelemetry.instrumentation.django import DjangoInstrumentor
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from portal.core.logs import JsonFormatter
from portal.core.telemetry import OtlpHttpSpanExporter, WorkSampler, tracing_configure


@dataclass
class Receiver:
    url: str
    requests: list[tuple[dict[str, str], trace_service_pb2.ExportTraceServiceRequest]] = field(default_factory=list)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """An OTLP/HTTP traces endpoint on loopback that keeps what it is sent."""
    received: list[tuple[dict[str, str], trace_service_pb2.ExportTraceServiceRequest]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            headers = {key.lower(): value for key, value in self.headers.items()}
            received.append((headers, trace_service_pb2.ExportTraceServiceRequest.FromString(body)))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.end_headers()
            self.wfile.write(trace_service_pb2.ExportTraceServiceResponse().SerializeToString())

        def log_message(self, format: str, *args: object) -> None:
            return None

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Receiver(f"http://127.0.0.1:{server.server_address[1]}/v1/traces", received)
    server.shutdown()
    server.server_close()


def test_without_an_endpoint_nothing_is_traced() -> None:
    assert tracing_configure(endpoint=None, headers={}, service_name="x", sample_percent=100) is None
    assert not DjangoInstrumentor().is_instrumented_by_opentelemetry


def test_spans_are_exported_as_otlp_protobuf(receiver: Receiver) -> None:
    provider = TracerProvider(resource=Resource.create({"service.name": "genai-portal-worker"}))
    provider.add_span_processor(
        SimpleSpanProcessor(OtlpHttpSpanExporter(receiver.url, headers={"authorization": "Bearer t"}))
    )
    tracer = provider.get_tracer("portal.test", "1.0")
    with (
        tracer.start_as_current_span("reconcile", kind=SpanKind.CONSUMER, attributes={"deployment.id": 7}) as parent,
        tracer.start_as_current_span("PATCH", kind=SpanKind.CLIENT) as child,
    ):
        child.add_event("retry", {"attempt": 2})
        child.set_status(Status(StatusCode.ERROR, "conflict"))
    provider.shutdown()

    assert len(receiver.requests) == 2  # one export per finished span with the simple processor
    headers, _ = receiver.requests[0]
    assert headers["authorization"] == "Bearer t"
    assert headers["content-type"] == "application/x-protobuf"
    exported = [request.resource_spans[0] for _, request in receiver.requests]
    resource = {kv.key: kv.value.string_value for kv in exported[0].resource.attributes}
    assert resource["service.name"] == "genai-portal-worker"
    scope = exported[0].scope_spans[0]
    assert (scope.scope.name, scope.scope.version) == ("portal.test", "1.0")
    patch, reconcile = exported[0].scope_spans[0].spans[0], exported[1].scope_spans[0].spans[0]
    assert reconcile.trace_id == patch.trace_id == parent.get_span_context().trace_id.to_bytes(16, "big")
    assert patch.parent_span_id == reconcile.span_id == parent.get_span_context().span_id.to_bytes(8, "big")
    assert reconcile.parent_span_id == b""
    assert (reconcile.name, reconcile.kind, patch.kind) == ("reconcile", 5, 3)  # CONSUMER, CLIENT in OTLP
    assert [(kv.key, kv.value.int_value) for kv in reconcile.attributes] == [("deployment.id", 7)]
    assert (patch.status.code, patch.status.message) == (2, "conflict")
    assert [(event.name, event.attributes[0].value.int_value) for event in patch.events] == [("retry", 2)]
    assert reconcile.end_time_unix_nano >= reconcile.start_time_unix_nano > 0


def test_traces_start_only_at_units_of_work() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=WorkSampler(1.0))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("portal.test")
    with tracer.start_as_current_span("SELECT", kind=SpanKind.CLIENT):
        pass  # a query outside a request or a task (a scrape, start-up): no trace of its own
    with (
        tracer.start_as_current_span("GET api/v1/teams", kind=SpanKind.SERVER),
        tracer.start_as_current_span("SELECT", kind=SpanKind.CLIENT),
    ):
        pass
    with tracer.start_as_current_span("run/deployments.reconcile", kind=SpanKind.CONSUMER):
        pass
    assert [(span.name, span.kind) for span in exporter.get_finished_spans()] == [
        ("SELECT", SpanKind.CLIENT),
        ("GET api/v1/teams", SpanKind.SERVER),
        ("run/deployments.reconcile", SpanKind.CONSUMER),
    ]
    none_kept = TracerProvider(sampler=WorkSampler(0.0))
    assert not none_kept.get_tracer("portal.test").start_span("GET /", kind=SpanKind.SERVER).is_recording()


def test_an_unreachable_collector_costs_spans_not_the_work() -> None:
    exporter = OtlpHttpSpanExporter("http://127.0.0.1:9/v1/traces", headers={}, timeout=1.0)
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("portal.test").start_as_current_span("work"):
        pass  # the export fails and is logged; nothing raises
    provider.shutdown()


def test_json_log_lines_carry_the_trace_and_span_ids() -> None:
    provider = TracerProvider()
    formatter = JsonFormatter()
    record = logging.makeLogRecord({"name": "workers.tasks", "levelname": "INFO", "msg": "reconciled %s", "args": (7,)})
    record.deployment_id = 7
    with provider.get_tracer("portal.test").start_as_current_span("work") as span:
        inside = json.loads(formatter.format(record))
    outside = json.loads(formatter.format(record))
    context = span.get_span_context()
    assert inside["trace_id"] == format(context.trace_id, "032x")
    assert inside["span_id"] == format(context.span_id, "016x")
    assert (inside["level"], inside["logger"], inside["message"], inside["deployment_id"]) == (
        "INFO",
        "workers.tasks",
        "reconciled 7",
        7,
    )
    assert "trace_id" not in outside


def test_configured_by_the_environment_a_process_exports_and_logs_json(receiver: Receiver) -> None:
    """What a pod does with PORTAL_OTLP_TRACES_ENDPOINT and PORTAL_LOG_FORMAT=json: its spans reach the endpoint
    with the configured headers and service name, and its log lines name the trace they were written in."""
    script = (
        "import django, logging; django.setup()\n"
        "from opentelemetry import trace\n"
        "with trace.get_tracer('portal.test').start_as_current_span('work', kind=trace.SpanKind.SERVER):\n"
        "    logging.getLogger('portal.test').warning('inside the work')\n"
        "trace.get_tracer_provider().shutdown()\n"
    )
    environment = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        "PORTAL_OTLP_TRACES_ENDPOINT": receiver.url,
        "PORTAL_OTLP_TRACES_HEADERS": "authorization=Bearer trace-token",
        "PORTAL_SERVICE_NAME": "genai-portal-web",
        "PORTAL_LOG_FORMAT": "json",
    }
    result = subprocess.run([sys.executable, "-c", script], env=environment, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    logged = next(line for line in lines if line["message"] == "inside the work")
    headers, request = receiver.requests[-1]
    assert headers["authorization"] == "Bearer trace-token"
    (resource_spans,) = request.resource_spans
    resource = {kv.key: kv.value.string_value for kv in resource_spans.resource.attributes}
    assert resource["service.name"] == "genai-portal-web"
    (work,) = [span for scope in resource_spans.scope_spans for span in scope.spans if span.name == "work"]
    assert logged["trace_id"] == work.trace_id.hex()
    assert logged["span_id"] == work.span_id.hex()
