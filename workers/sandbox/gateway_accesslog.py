"""The sandbox gateway's access log: the EnvoyProxy `telemetry.accessLog.settings` Envoy Gateway configures
(command-operator formats, CEL match filters, File and OpenTelemetry sinks), and an OpenTelemetry Collector
stand-in that ships the OpenTelemetry sink's records to an OTLP/HTTP JSON endpoint.

Facts (sources next to the code that relies on them):
- Envoy substitution formats (api/envoy/config/core/v3/substitution_format_string.proto, docs
  configuration/observability/access_log/usage.rst): `json_format` is typed: a value that is a single command
  operator renders as a number, string or null (unset); START_TIME is a string, default `%Y-%m-%dT%H:%M:%E3SZ`
  (UTC); in text output an unset value is `-`.
- EG (internal/gatewayapi/listener.go processAccessLog, internal/xds/translator/accesslog.go @v1.9.0): no settings
  means one default JSON log (EnvoyJSONLogFields) to stdout; the match expressions of one setting are ANDed (an
  AndFilter, although the API comment says "one or more"), invalid ones are ignored; an OpenTelemetry sink gets the
  JSON map as log-record attributes, each a string format, after `k8s.namespace.name` and `k8s.pod.name`, keys
  sorted; its `resourceAttributes` (else the deprecated `resources`) become resource attributes; log_name is
  `otel_envoy_accesslog`; a setting without `type` logs on routes, and on the listener only when no route matched.
- Envoy OpenTelemetry access logger (source/extensions/access_loggers/open_telemetry: substitution_formatter.cc,
  access_log_impl.cc, otlp_log_utils.cc): every attribute is a string value, an unset operator renders `-`;
  time_unix_nano is the request start; resource attributes are log_name, zone_name, cluster_name, node_name, then
  the configured ones.
- Envoy CEL access-log filter (source/extensions/access_loggers/filters/cel/cel.cc): an evaluation error (e.g. a
  missing header key) or a non-boolean result means "do not log".
- OTLP/HTTP (opentelemetry-specification protocol/otlp.md, collector exporter/otlphttpexporter/otlp.go): 429, 502,
  503 and 504 are retried, 429/503 after Retry-After when given (else the back-off), every other 4xx/5xx is
  permanent; the collector retries connection errors with exponential back-off (exporterhelper retry_on_failure)
  and batches by size and time (batch processor). Unlike the collector's sending_queue, which refuses new data
  when full, this queue drops the oldest record, as the sandbox's callers asked.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import logging
import re
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import cel

logger = logging.getLogger(__name__)

METADATA_NAMESPACE = "io.envoy.ai_gateway"
OTEL_LOG_NAME = "otel_envoy_accesslog"
# EG internal/xds/translator/accesslog.go EnvoyJSONLogFields @v1.9.0: the default record.
DEFAULT_JSON_FIELDS = {
    "start_time": "%START_TIME%",
    "method": "%REQ(:METHOD)%",
    "x-envoy-origin-path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
    "protocol": "%PROTOCOL%",
    "response_code": "%RESPONSE_CODE%",
    "response_flags": "%RESPONSE_FLAGS%",
    "response_code_details": "%RESPONSE_CODE_DETAILS%",
    "connection_termination_details": "%CONNECTION_TERMINATION_DETAILS%",
    "upstream_transport_failure_reason": "%UPSTREAM_TRANSPORT_FAILURE_REASON%",
    "bytes_received": "%BYTES_RECEIVED%",
    "bytes_sent": "%BYTES_SENT%",
    "duration": "%DURATION%",
    "x-envoy-upstream-service-time": "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
    "x-forwarded-for": "%REQ(X-FORWARDED-FOR)%",
    "user-agent": "%REQ(USER-AGENT)%",
    "x-request-id": "%REQ(X-REQUEST-ID)%",
    ":authority": "%REQ(:AUTHORITY)%",
    "upstream_host": "%UPSTREAM_HOST%",
    "upstream_cluster": "%UPSTREAM_CLUSTER%",
    "upstream_local_address": "%UPSTREAM_LOCAL_ADDRESS%",
    "downstream_local_address": "%DOWNSTREAM_LOCAL_ADDRESS%",
    "downstream_remote_address": "%DOWNSTREAM_REMOTE_ADDRESS%",
    "requested_server_name": "%REQUESTED_SERVER_NAME%",
    "route_name": "%ROUTE_NAME%",
}
# Operators whose typed JSON value is a number (usage.rst: "Renders a numeric value in typed JSON logs").
_NUMERIC = frozenset(
    {
        "RESPONSE_CODE",
        "DURATION",
        "RESPONSE_DURATION",
        "BYTES_RECEIVED",
        "BYTES_SENT",
        "UPSTREAM_REQUEST_ATTEMPT_COUNT",
        "REQUEST_DURATION",
    }
)


# ---------------------------------------------------------------------------------------------- what happened


@dataclass
class LogContext:
    """What one downstream request did, as Envoy's stream info and header maps hold it when logging."""

    start_time: float
    duration_ms: int
    request_headers: dict[str, str]  # lower case, with :method, :path, :authority, :scheme
    # %RESPONSE_DURATION%: from the start to the first byte read from the upstream; unset when none was read.
    response_duration_ms: int | None = None
    response_headers: dict[str, str] = field(default_factory=dict)
    response_code: int = 0
    response_flags: tuple[str, ...] = ()
    response_code_details: str = ""
    metadata: dict[str, dict[str, Any]] = field(default_factory=dict)
    attempt_count: int | None = None
    route_name: str | None = None
    upstream_host: str | None = None
    upstream_cluster: str | None = None
    bytes_received: int = 0
    bytes_sent: int = 0
    downstream_remote_address: str | None = None
    downstream_local_address: str | None = None
    environment: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _Operator:
    name: str
    argument: str | None
    max_length: int | None


_Segment = str | _Operator
_NAME = re.compile(r"[A-Z][A-Z0-9_]*")


def parse_format(text: str) -> list[_Segment]:
    """A format string as literal text and command operators (`%NAME%`, `%NAME(arg)%`, `%NAME(arg):N%`)."""
    segments: list[_Segment] = []
    literal = ""
    index = 0
    while index < len(text):
        char = text[index]
        if char == "%":
            match = _NAME.match(text, index + 1)
            if match is not None:
                end = match.end()
                argument = None
                if end < len(text) and text[end] == "(":
                    close = text.find(")", end)
                    if close != -1:
                        argument, end = text[end + 1 : close], close + 1
                max_length = None
                length = re.match(r":(\d+)", text[end:])
                if length is not None:
                    max_length, end = int(length.group(1)), end + length.end()
                if end < len(text) and text[end] == "%":
                    if literal:
                        segments.append(literal)
                        literal = ""
                    segments.append(_Operator(match.group(0), argument, max_length))
                    index = end + 1
                    continue
        literal += char
        index += 1
    if literal:
        segments.append(literal)
    return segments


def _start_time(context: LogContext, pattern: str | None) -> str:
    moment = datetime.fromtimestamp(context.start_time, tz=UTC)
    fraction = f"{moment.microsecond:06d}000"
    if not pattern:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + fraction[:3] + "Z"
    pattern = re.sub(r"%E(\d)S", lambda m: moment.strftime("%S") + "." + fraction[: int(m.group(1))], pattern)
    pattern = re.sub(r"%([1-9])?f", lambda m: fraction[: int(m.group(1) or 9)], pattern)
    pattern = pattern.replace("%s", str(int(context.start_time)))
    return moment.strftime(pattern)


def _header(headers: Mapping[str, str], argument: str | None) -> str | None:
    for name in (argument or "").split("?"):
        value = headers.get(name.strip().lower())
        if value is not None:
            return value
    return None


def _metadata(context: LogContext, argument: str | None) -> Any:
    namespace, _, path = (argument or "").partition(":")
    value: Any = context.metadata.get(namespace)
    for key in path.split(":") if path else []:
        value = value.get(key) if isinstance(value, dict) else None
    return value


_unknown_reported: set[str] = set()
# Operators that read one field of the request's context as it is.
_CONTEXT_FIELDS = {
    "RESPONSE_CODE": "response_code",
    "DURATION": "duration_ms",
    "RESPONSE_DURATION": "response_duration_ms",
    "UPSTREAM_REQUEST_ATTEMPT_COUNT": "attempt_count",
    "BYTES_RECEIVED": "bytes_received",
    "BYTES_SENT": "bytes_sent",
    "ROUTE_NAME": "route_name",
    "UPSTREAM_HOST": "upstream_host",
    "UPSTREAM_CLUSTER": "upstream_cluster",
    "DOWNSTREAM_REMOTE_ADDRESS": "downstream_remote_address",
    "DOWNSTREAM_LOCAL_ADDRESS": "downstream_local_address",
}


def evaluate(operator: _Operator, context: LogContext) -> Any:
    """The typed value of one command operator (None: unset)."""
    name = operator.name
    value: Any
    if name == "START_TIME":
        value = _start_time(context, operator.argument)
    elif name in ("REQ", "REQUEST_HEADER"):
        value = _header(context.request_headers, operator.argument)
    elif name in ("RESP", "RESPONSE_HEADER"):
        value = _header(context.response_headers, operator.argument)
    elif name == "DYNAMIC_METADATA":
        value = _metadata(context, operator.argument)
    elif name in _CONTEXT_FIELDS:
        value = getattr(context, _CONTEXT_FIELDS[name])
    elif name == "RESPONSE_FLAGS":
        value = ",".join(context.response_flags) or "-"  # Envoy renders "no flags" as "-" even in JSON
    elif name == "RESPONSE_CODE_DETAILS":
        value = context.response_code_details or None
    elif name == "PROTOCOL":
        value = "HTTP/1.1"
    elif name == "ENVIRONMENT":
        value = context.environment.get(operator.argument or "")
    elif name in (
        "CONNECTION_TERMINATION_DETAILS",
        "UPSTREAM_TRANSPORT_FAILURE_REASON",
        "UPSTREAM_LOCAL_ADDRESS",
        "REQUESTED_SERVER_NAME",
    ):
        value = None  # no TLS and no upstream sockets in the sandbox
    else:
        if name not in _unknown_reported:
            _unknown_reported.add(name)
            logger.warning("sandbox gateway: access-log operator %%%s%% is not modelled; it renders as unset", name)
        value = None
    if isinstance(value, str) and operator.max_length is not None:
        value = value[: operator.max_length]
    return value


def _text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def render_typed(segments: list[_Segment], context: LogContext) -> Any:
    """A json_format value: typed when it is exactly one operator, else text."""
    if len(segments) == 1 and isinstance(segments[0], _Operator):
        value = evaluate(segments[0], context)
        if segments[0].name in _NUMERIC and value is not None:
            return int(value)
        if isinstance(value, float) and value.is_integer():
            return int(value)
        return value
    return render_text(segments, context)


def render_text(segments: list[_Segment], context: LogContext) -> str:
    return "".join(part if isinstance(part, str) else _text(evaluate(part, context)) for part in segments)


# ---------------------------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class OtelSink:
    resource_attributes: tuple[tuple[str, str], ...]


@dataclass
class AccessLogSetting:
    """One EnvoyProxy accessLog setting, compiled."""

    json_format: dict[str, list[_Segment]]
    text_format: list[_Segment] | None
    matches: list[Any]  # compiled CEL programs (ANDed)
    log_type: str | None  # None | Route | Listener | Upstream
    file_sink: bool
    otel_sinks: list[OtelSink]

    def wants(self, *, route_matched: bool) -> bool:
        if self.log_type is None:
            return True  # the route's log, or the listener's when no route matched (EG's NR filter)
        if self.log_type == "Route":
            return route_matched
        if self.log_type == "Listener":
            return not route_matched
        return False  # Upstream logs (one per upstream attempt) are not modelled

    def matched(self, context: LogContext) -> bool:
        activation = {
            "request": {
                "headers": dict(context.request_headers),
                "path": context.request_headers.get(":path", ""),
                "method": context.request_headers.get(":method", ""),
                "host": context.request_headers.get(":authority", ""),
                "id": context.request_headers.get("x-request-id", ""),
            },
            "response": {
                "code": context.response_code,
                "headers": dict(context.response_headers),
                "code_details": context.response_code_details,
            },
        }
        for program in self.matches:
            try:
                result = program.execute(activation)
            except (KeyError, TypeError, ValueError, RuntimeError):
                return False
            if result is not True:
                return False
        return True


_compiled: dict[str, Any] = {}


def _program(expression: str) -> Any | None:
    if expression not in _compiled:
        try:
            _compiled[expression] = cel.compile(expression)
        except (ValueError, RuntimeError) as error:
            logger.warning("sandbox gateway: access-log match %r is not valid CEL (%s); ignored", expression, error)
            _compiled[expression] = None
    return _compiled[expression]


def parse_settings(envoy_proxy: Mapping[str, Any] | None) -> list[AccessLogSetting]:
    """The access-log settings an EnvoyProxy gives the gateway (EG's default log when it gives none)."""
    access_log = (((envoy_proxy or {}).get("spec") or {}).get("telemetry") or {}).get("accessLog")
    if not access_log or (not access_log.get("disable") and not access_log.get("settings")):
        default = {key: parse_format(value) for key, value in DEFAULT_JSON_FIELDS.items()}
        return [AccessLogSetting(default, None, [], None, True, [])]
    if access_log.get("disable"):
        return []
    settings = []
    for setting in access_log.get("settings") or []:
        format_spec = setting.get("format") or {"type": "JSON"}
        kind = format_spec.get("type")
        json_source = format_spec.get("json") if kind in (None, "JSON") else None
        text_source = format_spec.get("text") if kind in (None, "Text") else None
        if kind in (None, "JSON") and not json_source and not text_source:
            json_source = DEFAULT_JSON_FIELDS
        programs = [program for program in (_program(str(m)) for m in setting.get("matches") or []) if program]
        file_sink, otel_sinks = False, []
        for sink in setting.get("sinks") or []:
            if sink.get("type") == "File":
                file_sink = True
            elif sink.get("type") == "OpenTelemetry":
                otel = sink.get("openTelemetry") or {}
                resources = otel.get("resourceAttributes")
                if resources is None:
                    resources = otel.get("resources") or {}
                otel_sinks.append(OtelSink(tuple(sorted((str(k), str(v)) for k, v in resources.items()))))
            else:
                logger.info("sandbox gateway: access-log sink type %r is not modelled", sink.get("type"))
        settings.append(
            AccessLogSetting(
                json_format={str(key): parse_format(str(value)) for key, value in (json_source or {}).items()},
                text_format=parse_format(str(text_source)) if text_source else None,
                matches=programs,
                log_type=setting.get("type"),
                file_sink=file_sink,
                otel_sinks=otel_sinks,
            )
        )
    return settings


def typed_record(setting: AccessLogSetting, context: LogContext) -> dict[str, Any]:
    """The JSON object the File sink writes."""
    return {key: render_typed(segments, context) for key, segments in setting.json_format.items()}


def otel_attributes(setting: AccessLogSetting, context: LogContext) -> list[tuple[str, str]]:
    """The log-record attributes of the OpenTelemetry sink, in EG's order."""
    attributes = [
        ("k8s.namespace.name", render_text(parse_format("%ENVIRONMENT(ENVOY_POD_NAMESPACE)%"), context)),
        ("k8s.pod.name", render_text(parse_format("%ENVIRONMENT(ENVOY_POD_NAME)%"), context)),
    ]
    attributes.extend((key, render_text(setting.json_format[key], context)) for key in sorted(setting.json_format))
    return attributes


# ---------------------------------------------------------------------------------------------- shipping


@dataclass(frozen=True)
class ShippingSettings:
    """The sandbox's OpenTelemetry Collector: batching, sending queue and retry_on_failure. Production's collector
    is k8s/gateway-telemetry/collector.yaml: the same batch minimum (256 records), flush timeout (200 ms), back-off
    multiplier and gzip (tests/k8s/test_gateway_telemetry.py keeps them equal); its back-off is scaled down here
    (0.5 s to 5 s, giving up after 60 s, where production waits 5 s to 30 s and never gives up) and its queue
    is in memory (production's is on disk)."""

    batch_size: int = 256
    batch_timeout: float = 0.2
    queue_size: int = 10_000
    initial_backoff: float = 0.5
    backoff_multiplier: float = 1.5
    max_backoff: float = 5.0
    max_elapsed: float = 60.0
    request_timeout: float = 5.0
    gzip: bool = True
    # How the exporter waits between attempts; tests pass one that records the delay and returns at once.
    sleep: Callable[[float], None] | None = None


@dataclass(frozen=True)
class OtlpRecord:
    resource: tuple[tuple[str, str], ...]
    time_unix_nano: int
    attributes: tuple[tuple[str, str], ...]


def _any_value(value: str) -> dict[str, str]:
    return {"stringValue": value}


def export_request(records: list[OtlpRecord]) -> dict[str, Any]:
    """An ExportLogsServiceRequest in OTLP/JSON, one resourceLogs per distinct resource."""
    grouped: dict[tuple[tuple[str, str], ...], list[OtlpRecord]] = {}
    for record in records:
        grouped.setdefault(record.resource, []).append(record)
    return {
        "resourceLogs": [
            {
                "resource": {"attributes": [{"key": k, "value": _any_value(v)} for k, v in resource]},
                "scopeLogs": [
                    {
                        "scope": {},
                        "logRecords": [
                            {
                                "timeUnixNano": str(record.time_unix_nano),
                                "attributes": [{"key": k, "value": _any_value(v)} for k, v in record.attributes],
                            }
                            for record in items
                        ],
                    }
                ],
            }
            for resource, items in grouped.items()
        ]
    }


_RETRYABLE = frozenset({429, 502, 503, 504})


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    with contextlib.suppress(TypeError, ValueError):
        return max((parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds(), 0.0)
    return None


@dataclass
class ShipperCounters:
    queued: int = 0
    shipped: int = 0
    dropped: int = 0  # queue overflow, permanent refusals, retries given up
    retries: int = 0
    batches: int = 0
    retry_delays: list[float] = field(default_factory=list)


class OtlpShipper:
    """Batches records and posts them to an OTLP/HTTP logs endpoint, as an OpenTelemetry Collector would."""

    def __init__(self, endpoint: str, token: str | None, settings: ShippingSettings) -> None:
        self.endpoint = endpoint
        self.token = token
        self.settings = settings
        self.counters = ShipperCounters()
        self._queue: deque[OtlpRecord] = deque()
        self._lock = threading.Condition()
        self._stop = threading.Event()
        self._flush_requested = False
        self._in_flight = 0
        self._oldest: float | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="sandbox-gateway-otlp", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        with self._lock:
            self._lock.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def submit(self, record: OtlpRecord) -> None:
        with self._lock:
            if len(self._queue) >= self.settings.queue_size:
                self._queue.popleft()
                self.counters.dropped += 1
            self._queue.append(record)
            self.counters.queued += 1
            if self._oldest is None:
                self._oldest = time.monotonic()
            self._lock.notify_all()

    def pending(self) -> int:
        with self._lock:
            return len(self._queue) + self._in_flight

    def flush(self, timeout: float) -> bool:
        """Ship everything pending now; True when nothing is left in the queue or in flight within `timeout`."""
        deadline = time.monotonic() + timeout
        with self._lock:
            self._flush_requested = True
            self._lock.notify_all()
            while self._queue or self._in_flight:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._lock.wait(remaining)
            self._flush_requested = False
            return True

    def _take_batch(self) -> list[OtlpRecord] | None:
        with self._lock:
            while not self._stop.is_set():
                if self._queue:
                    full = len(self._queue) >= self.settings.batch_size
                    oldest = self._oldest if self._oldest is not None else time.monotonic()
                    due = time.monotonic() - oldest >= self.settings.batch_timeout
                    if full or due or self._flush_requested:
                        batch = [self._queue.popleft() for _ in range(min(len(self._queue), self.settings.batch_size))]
                        self._in_flight = len(batch)
                        self._oldest = time.monotonic() if self._queue else None
                        return batch
                    self._lock.wait(max(self.settings.batch_timeout - (time.monotonic() - oldest), 0.001))
                else:
                    self._lock.wait(0.5)
            return None

    def _run(self) -> None:
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            try:
                delivered = self._export(batch)
            except Exception:  # a bug here must not kill the collector thread; the batch counts as dropped
                logger.exception("sandbox gateway: OTLP export failed")
                delivered = False
            with self._lock:
                if delivered:
                    self.counters.shipped += len(batch)
                else:
                    self.counters.dropped += len(batch)
                self._in_flight = 0
                self._lock.notify_all()

    def _wait(self, seconds: float) -> None:
        if self.settings.sleep is not None:
            self.settings.sleep(seconds)
        else:
            self._stop.wait(seconds)

    def _export(self, batch: list[OtlpRecord]) -> bool:
        payload = json.dumps(export_request(batch), separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", "User-Agent": "sandbox-otel-collector"}
        if self.settings.gzip:
            payload = gzip.compress(payload)
            headers["Content-Encoding"] = "gzip"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        started = time.monotonic()
        backoff = self.settings.initial_backoff
        with self._lock:
            self.counters.batches += 1
        while True:
            delay: float | None
            try:
                # The endpoint is the configured collector URL (http or https), never user input.
                request = urllib.request.Request(self.endpoint, data=payload, headers=headers, method="POST")  # noqa: S310
                with urllib.request.urlopen(request, timeout=self.settings.request_timeout) as response:  # noqa: S310
                    response.read()
                return True
            except urllib.error.HTTPError as error:
                error.read()
                if error.code not in _RETRYABLE:
                    logger.warning(
                        "sandbox gateway: OTLP export refused with %s; %d records dropped", error.code, len(batch)
                    )
                    return False
                delay = _retry_after(error.headers.get("Retry-After")) if error.code in (429, 503) else None
            except (urllib.error.URLError, OSError) as error:
                logger.info("sandbox gateway: OTLP export failed (%s); retrying", error)
                delay = None
            if not delay:
                delay = backoff
                backoff = min(backoff * self.settings.backoff_multiplier, self.settings.max_backoff)
            if self._stop.is_set() or time.monotonic() - started + delay > self.settings.max_elapsed:
                logger.warning("sandbox gateway: OTLP export gave up; %d records dropped", len(batch))
                return False
            with self._lock:
                self.counters.retries += 1
                self.counters.retry_delays.append(delay)
            self._wait(delay)
