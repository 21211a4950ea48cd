"""The portal's own observability: where traces go (off unless an endpoint is set) and how logs are written."""

from __future__ import annotations

from portal.settings.env import ENV, ConfigurationError


def _headers(entries: list[str]) -> dict[str, str]:
    """Parse "authorization=Bearer x,x-scope=portal" into headers (values may not hold commas)."""
    headers: dict[str, str] = {}
    for entry in entries:
        name, separator, value = entry.partition("=")
        if not separator or not name.strip():
            raise ConfigurationError(f"PORTAL_OTLP_TRACES_HEADERS entries must look like 'name=value', got {entry!r}")
        headers[name.strip().lower()] = value.strip()
    return headers


# OTLP/HTTP traces endpoint (e.g. http://otel-collector.monitoring:4318/v1/traces); unset: no tracing at all.
OTLP_TRACES_ENDPOINT = ENV.url("PORTAL_OTLP_TRACES_ENDPOINT", schemes=frozenset({"http", "https"}))
OTLP_TRACES_HEADERS = _headers(ENV.text_list("PORTAL_OTLP_TRACES_HEADERS", []))
# The `service.name` of this process's spans (k8s/portal sets one per component: web, worker, beat).
TRACING_SERVICE_NAME = ENV.text("PORTAL_SERVICE_NAME", "genai-portal") or "genai-portal"
# Share of new traces kept (a trace started elsewhere, e.g. by Backstage, keeps its caller's decision).
TRACING_SAMPLE_PERCENT = ENV.integer("PORTAL_TRACING_SAMPLE_PERCENT", 100, minimum=0, maximum=100)
# `json`: one JSON object per line with the trace and span ids of the work that logged it; `plain`: text.
LOG_FORMAT = ENV.choice("PORTAL_LOG_FORMAT", "plain", choices=frozenset({"plain", "json"}))
# A worker pod's Prometheus endpoint (reconcile durations and outcomes); 0: none.
WORKER_METRICS_PORT = ENV.integer("PORTAL_WORKER_METRICS_PORT", 0, minimum=0, maximum=65535)
