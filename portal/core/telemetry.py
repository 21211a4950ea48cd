"""Traces of the portal's own work: the OpenTelemetry instrumentations of Django, Celery, psycopg, Redis and
urllib3 (the HTTP client under the kubernetes client, so every request to a cluster's API server is a span),
exported over OTLP/HTTP when PORTAL_OTLP_TRACES_ENDPOINT is set and entirely off otherwise.

The OTLP/HTTP span exporter is written here on opentelemetry-proto (already a dependency for usage ingestion):
the packaged exporter of this SDK release pins an older opentelemetry-proto than the one the portal locks."""

from __future__ import annotations

import gzip
import logging
import threading
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any

from django.db.backends.signals import connection_created
from opentelemetry import trace
from opentelemetry.instrumentation.celery import CeleryInstrumentor
from opentelemetry.instrumentation.django import DjangoInstrumentor
from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor
from opentelemetry.instrumentation.redis import RedisInstrumentor
from opentelemetry.instrumentation.urllib3 import URLLib3Instrumentor
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import Decision, ParentBased, Sampler, SamplingResult, TraceIdRatioBased
from opentelemetry.trace import SpanKind, get_current_span
from opentelemetry.util.types import Attributes

logger = logging.getLogger(__name__)
_lock = threading.Lock()
_active: dict[str, Any] = {}


def tracing_start(*, provider: TracerProvider) -> None:
    """Instrument this process with `provider`. Idempotent; tracing_stop undoes it."""
    with _lock:
        if _active:
            return
        _active["provider"] = provider
        # Probes and scrapes every few seconds would drown the traces of real work.
        DjangoInstrumentor().instrument(
            tracer_provider=provider, is_sql_commentor_enabled=False, excluded_urls="healthz,readyz,metrics"
        )
        CeleryInstrumentor().instrument(tracer_provider=provider)
        RedisInstrumentor().instrument(tracer_provider=provider)
        URLLib3Instrumentor().instrument(tracer_provider=provider)
        # Django sets its own cursor factory on each new connection, which replaces the one psycopg's
        # instrumentation installs at connect(); wrapping each connection once Django made it keeps both.
        connection_created.connect(_instrument_connection, dispatch_uid="portal-tracing")


def tracing_stop() -> None:
    with _lock:
        if not _active:
            return
        connection_created.disconnect(dispatch_uid="portal-tracing")
        for instrumentor in (DjangoInstrumentor(), CeleryInstrumentor(), RedisInstrumentor(), URLLib3Instrumentor()):
            instrumentor.uninstrument()
        _active.clear()


def _instrument_connection(sender: object, connection: Any, **kwargs: object) -> None:
    if connection.vendor == "postgresql" and _active:
        PsycopgInstrumentor.instrument_connection(connection.connection, tracer_provider=_active["provider"])


def tracing_configure(
    *, endpoint: str | None, headers: Mapping[str, str], service_name: str, sample_percent: int
) -> TracerProvider | None:
    """Production: spans batched to the OTLP/HTTP endpoint; None (and nothing instrumented) without one."""
    if not endpoint:
        return None
    provider = TracerProvider(
        resource=Resource.create({"service.name": service_name, "service.namespace": "genai-portal"}),
        sampler=WorkSampler(sample_percent / 100),
    )
    provider.add_span_processor(BatchSpanProcessor(OtlpHttpSpanExporter(endpoint, headers=headers)))
    trace.set_tracer_provider(provider)
    tracing_start(provider=provider)
    return provider


class WorkSampler(Sampler):
    """Traces start only at units of work: a request served, a task run or a task published (beat's). A query
    or a Redis command outside of one (a metrics scrape, a probe, start-up) makes no trace of its own; inside
    one, the caller's decision is followed (ParentBased), and new traces are kept at `ratio`."""

    def __init__(self, ratio: float) -> None:
        self._delegate = ParentBased(TraceIdRatioBased(ratio))

    def should_sample(
        self,
        parent_context: Any,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Any = None,
        trace_state: Any = None,
    ) -> SamplingResult:
        parent = get_current_span(parent_context).get_span_context()
        if not parent.is_valid and kind not in (SpanKind.SERVER, SpanKind.CONSUMER, SpanKind.PRODUCER):
            return SamplingResult(Decision.DROP)
        return self._delegate.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

    def get_description(self) -> str:
        return f"WorkSampler({self._delegate.get_description()})"


# ------------------------------------------------------------------------------------------ OTLP/HTTP export


def _any_value(value: object) -> common_pb2.AnyValue:
    if isinstance(value, bool):
        return common_pb2.AnyValue(bool_value=value)
    if isinstance(value, int):
        return common_pb2.AnyValue(int_value=value)
    if isinstance(value, float):
        return common_pb2.AnyValue(double_value=value)
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return common_pb2.AnyValue(array_value=common_pb2.ArrayValue(values=[_any_value(item) for item in value]))
    return common_pb2.AnyValue(string_value=str(value))


def _attributes(attributes: Mapping[str, object] | None) -> list[common_pb2.KeyValue]:
    return [common_pb2.KeyValue(key=key, value=_any_value(value)) for key, value in (attributes or {}).items()]


def _span(span: ReadableSpan) -> trace_pb2.Span:
    context = span.get_span_context()
    assert context is not None
    return trace_pb2.Span(
        trace_id=context.trace_id.to_bytes(16, "big"),
        span_id=context.span_id.to_bytes(8, "big"),
        parent_span_id=span.parent.span_id.to_bytes(8, "big") if span.parent else b"",
        trace_state=str(context.trace_state.to_header()) if context.trace_state else "",
        name=span.name,
        kind=trace_pb2.Span.SpanKind.ValueType(span.kind.value + 1),  # SDK: INTERNAL = 0; OTLP: INTERNAL = 1
        start_time_unix_nano=span.start_time or 0,
        end_time_unix_nano=span.end_time or 0,
        attributes=_attributes(span.attributes),
        events=[
            trace_pb2.Span.Event(
                name=event.name, time_unix_nano=event.timestamp, attributes=_attributes(event.attributes)
            )
            for event in span.events
        ],
        links=[
            trace_pb2.Span.Link(
                trace_id=link.context.trace_id.to_bytes(16, "big"),
                span_id=link.context.span_id.to_bytes(8, "big"),
                attributes=_attributes(link.attributes),
            )
            for link in span.links
        ],
        status=trace_pb2.Status(
            code=trace_pb2.Status.StatusCode.ValueType(span.status.status_code.value),
            message=span.status.description or "",
        ),
    )


def export_request(spans: Sequence[ReadableSpan]) -> trace_service_pb2.ExportTraceServiceRequest:
    """Spans grouped by resource and instrumentation scope, as OTLP wants them."""
    grouped: dict[int, tuple[Resource, dict[tuple[str, str], list[trace_pb2.Span]]]] = {}
    for span in spans:
        _, scopes = grouped.setdefault(id(span.resource), (span.resource, {}))
        scope = span.instrumentation_scope
        key = (scope.name, scope.version or "") if scope else ("", "")
        scopes.setdefault(key, []).append(_span(span))
    return trace_service_pb2.ExportTraceServiceRequest(
        resource_spans=[
            trace_pb2.ResourceSpans(
                resource=resource_pb2.Resource(attributes=_attributes(dict(resource.attributes))),
                scope_spans=[
                    trace_pb2.ScopeSpans(scope=common_pb2.InstrumentationScope(name=name, version=version), spans=items)
                    for (name, version), items in scopes.items()
                ],
            )
            for resource, scopes in grouped.values()
        ]
    )


class OtlpHttpSpanExporter(SpanExporter):
    """Protobuf over HTTP, gzip, one attempt per batch (the batch processor calls again with the next batch;
    traces are diagnostics, not records: a collector that is away costs spans, never the request)."""

    def __init__(self, endpoint: str, *, headers: Mapping[str, str], timeout: float = 10.0) -> None:
        self.endpoint = endpoint
        self.headers = dict(headers)
        self.timeout = timeout

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        body = gzip.compress(export_request(spans).SerializeToString())
        headers = {
            **self.headers,
            "Content-Type": "application/x-protobuf",
            "Content-Encoding": "gzip",
            "User-Agent": "genai-portal",
        }
        # The endpoint is the operator's PORTAL_OTLP_TRACES_ENDPOINT (http or https), never user input.
        request = urllib.request.Request(self.endpoint, data=body, headers=headers, method="POST")  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                response.read()
        except (urllib.error.URLError, OSError) as error:
            logger.warning("trace export to %s failed: %s (%d spans dropped)", self.endpoint, error, len(spans))
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None
