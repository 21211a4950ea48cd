"""The sandbox's gateway data plane: an HTTP server that answers like Envoy Gateway + Envoy AI Gateway would,
configured only by the objects in the sandbox Store (what the portal applied), never by the portal's database.

It owns the request path of one Gateway (default genai-gateway/ai-gateway):
ClientTrafficPolicy early header removal and request id -> SecurityPolicy apiKeyAuth -> the AI Gateway's
router-level processing (/v1/models, body parsing, `x-ai-eg-model`) -> AIGatewayRoute rule matching -> the
BackendTrafficPolicy global rate limit check -> the backend (a fake KServe model server, only when its
InferenceService is Ready, or a fake provider that needs the BackendSecurityPolicy's credential) -> token usage into
`io.envoy.ai_gateway` dynamic metadata -> the rate limit's response cost -> the EnvoyProxy access log, shipped over
OTLP/HTTP JSON to `usage_endpoint` when an OpenTelemetry sink is configured.

    with SandboxGateway(sandbox.store, usage_endpoint=url, usage_token=token) as gateway:
        urllib.request.urlopen(gateway.url + "/v1/models", ...)
        gateway.flush(2.0); gateway.access_log(1); gateway.stats()

Answers it gives (each fact's source is next to the code):
- 401 `Client authentication failed.` (text/plain): no key, or a key no Secret holds.
- 500, empty body: the SecurityPolicy (e.g. one key under two client ids, a missing Secret) or the
  BackendTrafficPolicy is invalid (EG turns every route into a 500 direct response; /v1/models, answered by the AI
  Gateway's ext_proc before the router, still works), every backendRef of the matched rule is invalid, or the
  matched backend's credential Secret is missing (the AI Gateway ext_proc fails the request).
- 400 `{"type":"error","error":{"type":"BadRequest","code":"400","message":"malformed request: ..."}}`: a body
  that is not the endpoint's JSON.
- 404 `No matching route found. It is likely because the model specified in your request is not configured in the
  Gateway.` (text/plain): no rule matches (a missing model too); 404 `unsupported path: <path>` for other paths.
- 429, empty body, response flag RL: a rate-limit bucket is over its limit.
- 503 `no healthy upstream` (text/plain), flag UH: no backend of the rule can serve (InferenceService missing or
  not Ready; an InferencePool with no ready decode pod).

InferencePool backends (llm-d): the request goes to a ready pod the pool selects, with the body's model rewritten
by the pool's InferenceModelRewrites; the `x-llm-d-inference-objective` header is passed on to the endpoint picker
(it only orders the pool's queue); token accounting, rate limits and the access log are those of any backend.

Sandbox-only behaviour: an InferenceService that exists but is not Ready answers like a missing one (a real
cluster may answer UF, connection failure, while the predictor Service has no endpoints); the fake provider speaks
OpenAI's format whatever the AIServiceBackend schema (the AI Gateway's translations are not modelled); the usage
metadata, the rate limit's response cost and the access-log record are settled
just before the last byte of the response is written (Envoy does it just after), so a client that has read its
whole response can observe their effects without waiting; the token counts come from
workers.sandbox.gateway_upstream (see `predict_usage`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import posixpath
import re
import socket
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import cel

from workers.sandbox import gateway_config as config
from workers.sandbox.gateway_accesslog import (
    OTEL_LOG_NAME,
    AccessLogSetting,
    LogContext,
    OtlpRecord,
    OtlpShipper,
    ShippingSettings,
    otel_attributes,
    parse_settings,
    render_text,
    typed_record,
)
from workers.sandbox.gateway_ratelimit import InvalidPolicy, LimitRule, RateLimiter, parse_rules
from workers.sandbox.gateway_upstream import (
    CHAT,
    COMPLETIONS,
    EMBEDDINGS,
    PrefixCache,
    UpstreamCall,
    UpstreamResponse,
    predict_usage,
    serve_model,
    serve_provider,
    sse_events,
)
from workers.sandbox.store import Store

__all__ = ["GatewayStats", "SandboxGateway", "ShippingSettings", "predict_usage"]

logger = logging.getLogger(__name__)

DEFAULT_GATEWAY = ("genai-gateway", "ai-gateway")
# Envoy AI Gateway processors by path (internal/extproc/server.go processorForPath: exact path, query stripped).
OPERATION_PATHS = {"/v1/chat/completions": CHAT, "/v1/completions": COMPLETIONS, "/v1/embeddings": EMBEDDINGS}
MODELS_PATH = "/v1/models"
# internal/controller/ai_gateway_route.go: the route-not-found HTTPRouteFilter's inline body, status 404.
ROUTE_NOT_FOUND_BODY = (
    "No matching route found. It is likely because the model specified in your request is not configured in the "
    "Gateway."
)
# source/extensions/filters/http/api_key_auth/api_key_auth.cc onDenied.
UNAUTHORIZED_BODY = "Client authentication failed."
# source/common/router/router.cc sendNoHealthyUpstreamResponse.
NO_HEALTHY_UPSTREAM_BODY = "no healthy upstream"
ORIGINAL_PATH_HEADER = "x-ai-eg-original-path"
ENVOY_ORIGINAL_PATH_HEADER = "x-envoy-original-path"
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length", "te", "upgrade", "host"})
_TOKEN_VARIABLES = (
    "cached_input_tokens",
    "cache_creation_input_tokens",
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "reasoning_tokens",
)
_COST_FIELDS = {
    "InputToken": "input_tokens",
    "CachedInputToken": "cached_input_tokens",
    "CacheCreationInputToken": "cache_creation_input_tokens",
    "OutputToken": "output_tokens",
    "ReasoningToken": "reasoning_tokens",
    "TotalToken": "total_tokens",
}
PROXY_NAMESPACE = "envoy-gateway-system"  # where EG runs the proxies of every Gateway


@dataclass(frozen=True)
class GatewayStats:
    requests_by_status: dict[int, int]
    access_log_records: int
    otlp_queued: int
    otlp_shipped: int
    otlp_dropped: int
    otlp_retries: int
    otlp_batches: int
    otlp_retry_delays: tuple[float, ...]


@dataclass
class _Completion:
    """A 2xx answer from upstream whose usage becomes dynamic metadata once the whole body went out."""

    backend_name: str
    route: str
    actual_model: str
    operation: str
    upstream: UpstreamResponse


@dataclass
class _Reply:
    status: int
    headers: list[tuple[str, str]]
    body: bytes = b""
    chunks: list[bytes] | None = None


@dataclass
class _Exchange:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    client_address: str
    local_address: str
    start: float
    metadata: dict[str, Any] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)
    details: str = ""
    attempt_count: int | None = None
    route_matched: bool = False
    rule: config.RouteRule | None = None
    limit_rules: list[LimitRule] = field(default_factory=list)
    upstream_host: str | None = None
    upstream_first_byte_at: float | None = None
    completion: _Completion | None = None
    costs_configured: bool = False
    route_costs: dict[str, list[config.RequestCost]] = field(default_factory=dict)
    global_costs: list[config.RequestCost] = field(default_factory=list)
    settings: list[AccessLogSetting] = field(default_factory=list)


class SandboxGateway:
    """Envoy Gateway + Envoy AI Gateway for one Gateway of a sandbox Store, on a local port."""

    def __init__(
        self,
        store: Store,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        gateway: tuple[str, str] = DEFAULT_GATEWAY,
        usage_endpoint: str | None = None,
        usage_token: str | None = None,
        clock: Callable[[], float] = time.time,
        shipping: ShippingSettings | None = None,
        log_capacity: int = 1000,
    ) -> None:
        self.store = store
        self.reader = config.StoreReader(store)
        self.gateway_namespace, self.gateway_name = gateway
        self.clock = clock
        self.limiter = RateLimiter()
        self.prefix_cache = PrefixCache()
        self.usage_endpoint = usage_endpoint
        self.shipper = (
            OtlpShipper(usage_endpoint, usage_token, shipping or ShippingSettings()) if usage_endpoint else None
        )
        self._lock = threading.Lock()
        self._records: deque[dict[str, Any]] = deque(maxlen=log_capacity)
        self._upstream_calls: deque[UpstreamCall] = deque(maxlen=log_capacity)
        self._statuses: Counter[int] = Counter()
        self._record_count = 0
        self._weights: dict[str, dict[int, int]] = {}
        self._endpoint_turns: dict[str, int] = {}  # per rule: which ready pool pod the picker chooses next
        self._warned_no_endpoint = False
        self.pod_name = f"envoy-{self.gateway_namespace}-{self.gateway_name}-sandbox"[:63]
        self.server = ThreadingHTTPServer((host, port), _handler_class(self))
        self.server.daemon_threads = True
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> SandboxGateway:
        if self.shipper is not None:
            self.shipper.start()
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, name="sandbox-gateway", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.shipper is not None:
            self.shipper.flush(1.0)
            self.shipper.stop()

    def __enter__(self) -> SandboxGateway:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def flush(self, timeout: float = 5.0) -> bool:
        """Ship pending access-log records now; True when none is left within `timeout` (no endpoint: True)."""
        return True if self.shipper is None else self.shipper.flush(timeout)

    # ------------------------------------------------------------------ observability

    def access_log(self, last: int | None = None) -> list[dict[str, Any]]:
        """The last `last` access-log records (all kept ones when None), oldest first, as the JSON format renders
        them (typed values, null when unset), whatever sink they went to."""
        with self._lock:
            records = list(self._records)
        return records if last is None else records[-last:] if last else []

    def upstream_calls(self, last: int | None = None) -> list[UpstreamCall]:
        with self._lock:
            calls = list(self._upstream_calls)
        return calls if last is None else calls[-last:] if last else []

    def stats(self) -> GatewayStats:
        counters = self.shipper.counters if self.shipper is not None else None
        with self._lock:
            return GatewayStats(
                requests_by_status=dict(self._statuses),
                access_log_records=self._record_count,
                otlp_queued=counters.queued if counters else 0,
                otlp_shipped=counters.shipped if counters else 0,
                otlp_dropped=counters.dropped if counters else 0,
                otlp_retries=counters.retries if counters else 0,
                otlp_batches=counters.batches if counters else 0,
                otlp_retry_delays=tuple(counters.retry_delays) if counters else (),
            )

    def reset(self) -> None:
        """Forget counters, rate-limit buckets, the prefix cache and kept records (not the shipper's queue)."""
        self.limiter.reset()
        self.prefix_cache.clear()
        with self._lock:
            self._records.clear()
            self._upstream_calls.clear()
            self._statuses.clear()
            self._record_count = 0
            self._weights.clear()
            self._endpoint_turns.clear()

    # ------------------------------------------------------------------ the request path

    def _local(self, exchange: _Exchange, status: int, body: str = "", *, details: str, flag: str = "") -> _Reply:
        """An Envoy local reply: text/plain when there is a body (Envoy's sendLocalReply default)."""
        exchange.details = details
        if flag:
            exchange.flags.append(flag)
        headers = [("content-type", "text/plain")] if body else []
        return _Reply(status, headers, body.encode())

    def _json(self, status: int, payload: Any) -> _Reply:
        # Go's encoding/json writes compact JSON.
        return _Reply(
            status, [("content-type", "application/json")], json.dumps(payload, separators=(",", ":")).encode()
        )

    def process(self, exchange: _Exchange) -> _Reply:
        reader = self.reader
        namespace, name = self.gateway_namespace, self.gateway_name
        gateway = reader.get(config.GATEWAY_API, "Gateway", namespace, name)
        if gateway is not None:
            exchange.settings = parse_settings(config.envoy_proxy(reader, gateway))
        self._client_headers(
            exchange, config.load_client_headers(config.winning_policy(reader, "ClientTrafficPolicy", namespace, name))
        )
        routes = config.attached_routes(reader, namespace, name) if gateway is not None else []
        if not routes:
            # No HTTPRoute on the listener: Envoy's 404 with response flag NR and no body.
            return self._local(exchange, 404, details="route_not_found", flag="NR")
        exchange.route_matched = True  # every AIGatewayRoute brings a catch-all route-not-found rule
        auth, broken = self._load_policies(exchange)
        if auth is not None:
            denied = self._authenticate(exchange, auth)
            if denied is not None:
                return denied
        return self._ai_gateway(exchange, gateway or {}, routes, broken=broken)

    def _load_policies(self, exchange: _Exchange) -> tuple[config.ApiKeyAuth | None, bool]:
        """The SecurityPolicy's apiKeyAuth and the BackendTrafficPolicy's rules; True when either is invalid, which
        makes EG replace every route of the Gateway by a 500 direct response and drop the broken feature
        (translateSecurityPolicyForGateway, translateBackendTrafficPolicyForGateway @v1.9.0)."""
        namespace, name = self.gateway_namespace, self.gateway_name
        broken = False
        auth = None
        security = config.winning_policy(self.reader, "SecurityPolicy", namespace, name)
        if security is not None:
            try:
                auth = config.load_api_key_auth(self.reader, security)
            except config.PolicyError as error:
                logger.info("sandbox gateway: SecurityPolicy %s is invalid: %s", config.full_name(security), error)
                broken = True
        traffic = config.winning_policy(self.reader, "BackendTrafficPolicy", namespace, name)
        if traffic is not None:
            try:
                exchange.limit_rules = parse_rules(traffic)
            except InvalidPolicy as error:
                logger.info("sandbox gateway: BackendTrafficPolicy %s is invalid: %s", config.full_name(traffic), error)
                broken = True
        return auth, broken

    def _client_headers(self, exchange: _Exchange, client: config.ClientHeaders) -> None:
        headers = exchange.headers
        for header, value in client.set_headers:
            headers[header] = value
        for header, value in client.add_headers:
            headers[header] = f"{headers[header]},{value}" if header in headers else value
        for header in client.remove_headers:
            headers.pop(header, None)
        # Envoy's request id at the edge (EG ClientTrafficPolicy headers.requestID, default Generate).
        if client.request_id == "Generate" or (
            client.request_id == "PreserveOrGenerate" and not headers.get("x-request-id")
        ):
            headers["x-request-id"] = str(uuid.uuid4())
        elif client.request_id == "Disable":
            headers.pop("x-request-id", None)

    def _authenticate(self, exchange: _Exchange, auth: config.ApiKeyAuth) -> _Reply | None:
        headers = exchange.headers
        key = ""
        for source in auth.header_sources:
            # api_key_auth.cc KeySources: the first source that yields a key, "Bearer " stripped.
            value = headers.get(source, "")
            if value.startswith("Bearer "):
                value = value[7:]
            if value:
                key = value
                break
        if not key:
            return self._local(exchange, 401, UNAUTHORIZED_BODY, details="missing_api_key")
        client_id = auth.credentials.get(key)
        if client_id is None:
            return self._local(exchange, 401, UNAUTHORIZED_BODY, details="unkonwn_api_key")  # sic, Envoy's spelling
        if auth.forward_client_id_header:
            headers[auth.forward_client_id_header] = client_id  # setCopy: overwrites whatever the client sent
        if auth.sanitize:
            for source in auth.header_sources:
                headers.pop(source, None)
        return None

    def _ai_gateway(
        self, exchange: _Exchange, gateway: Mapping[str, Any], routes: list[dict[str, Any]], *, broken: bool
    ) -> _Reply:
        path = exchange.path.split("?", 1)[0]
        if path == MODELS_PATH:
            exchange.details = "ext_proc_immediate_response"
            return self._json(200, {"object": "list", "data": config.declared_models(routes)})
        operation = OPERATION_PATHS.get(path)
        if operation is None:
            return self._local(
                exchange, 404, f"unsupported path: {exchange.path}", details="ext_proc_immediate_response"
            )
        exchange.route_costs = config.route_costs(routes)
        exchange.global_costs = config.global_costs(self.reader, gateway)
        exchange.costs_configured = bool(exchange.global_costs) or any(exchange.route_costs.values())
        body, problem = _parse_body(exchange.body, operation)
        if body is None:
            # internal/extproc/processor_impl.go: a user-facing malformed-request error is a 400 with this JSON.
            exchange.details = "ext_proc_immediate_response"
            message = f"malformed request: failed to parse JSON for {path}: {problem}"
            return self._json(
                400, {"type": "error", "error": {"type": "BadRequest", "code": "400", "message": message}}
            )
        model = body.get("model") if isinstance(body.get("model"), str) else ""
        if operation == CHAT and body.get("stream") is True and exchange.costs_configured:
            # internal/endpointspec ChatCompletionsEndpointSpec.ParseBody: usage must not be bypassed.
            options = body.get("stream_options")
            if not isinstance(options, dict) or options.get("include_usage") is not True:
                body["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
        headers = exchange.headers
        headers[config.MODEL_HEADER] = str(model)  # OVERWRITE_IF_EXISTS_OR_ADD: the gateway owns this header
        headers[ORIGINAL_PATH_HEADER] = exchange.path
        headers[ENVOY_ORIGINAL_PATH_HEADER] = exchange.path
        if broken:
            # Every route, the catch-all included, is a 500 direct response; the AI Gateway's router-level
            # processing above still ran (it is enabled on every AI Gateway route whatever its action).
            return self._local(exchange, 500, details="direct_response")
        rules = config.compile_routes(self.reader, routes)
        host = headers.get(":authority", "")
        rule = next((candidate for candidate in rules if candidate.matches(headers, host)), None)
        if rule is None:
            return self._local(exchange, 404, ROUTE_NOT_FOUND_BODY, details="direct_response")
        exchange.rule = rule
        refused = self._rate_limit_check(exchange, rule)
        if refused is not None:
            return refused
        return self._upstream(exchange, rule, body, operation, str(model))

    def _rate_limit_check(self, exchange: _Exchange, rule: config.RouteRule) -> _Reply | None:
        if not exchange.limit_rules:
            return None
        allowed = self.limiter.check(
            exchange.limit_rules,
            exchange.headers,
            rule.envoy_route_name,
            {config.METADATA_NAMESPACE: exchange.metadata},
            self.clock(),
        )
        if not allowed:
            # source/extensions/filters/http/ratelimit/ratelimit.cc: 429, the service's (empty) body, flag RL; EG
            # disables x-envoy-ratelimited unless enableEnvoyHeaders (internal/xds/translator/ratelimit.go).
            return self._local(exchange, 429, details="request_rate_limited", flag="RL")
        return None

    def _pick(self, rule: config.RouteRule, candidates: list[config.ResolvedBackend]) -> config.ResolvedBackend:
        """Smooth weighted round robin, deterministic across requests of the same rule."""
        total = sum(candidate.ref.weight for candidate in candidates)
        with self._lock:
            state = self._weights.setdefault(rule.cluster_name, {})
            for candidate in candidates:
                state[candidate.ref.index] = state.get(candidate.ref.index, 0) + candidate.ref.weight
            best = max(candidates, key=lambda c: (state[c.ref.index], -c.ref.index))
            state[best.ref.index] -= total
        return best

    def _pick_endpoint(self, rule: config.RouteRule, ready: list[config.PoolEndpoint]) -> str:
        with self._lock:
            turn = self._endpoint_turns.get(rule.cluster_name, 0)
            self._endpoint_turns[rule.cluster_name] = turn + 1
        return ready[turn % len(ready)].address

    def _upstream(
        self, exchange: _Exchange, rule: config.RouteRule, body: dict[str, Any], operation: str, model: str
    ) -> _Reply:
        resolved = [b for b in (config.resolve_backend(self.reader, ref) for ref in rule.backends) if b is not None]
        resolved = [backend for backend in resolved if backend.ref.weight > 0]
        if not resolved:
            # Gateway API: a rule whose backends are all invalid answers 500 (EG direct response).
            return self._local(exchange, 500, details="direct_response")
        served: dict[int, tuple[str, ...]] = {}
        endpoints: dict[int, list[config.PoolEndpoint]] = {}
        healthy = []
        for backend in resolved:
            if backend.pool is not None:
                ready_pods, names = config.pool_endpoints(self.reader, *backend.pool)
                if ready_pods:
                    served[backend.ref.index] = names
                    endpoints[backend.ref.index] = ready_pods
                    healthy.append(backend)
            elif backend.isvc is not None:
                ready, names = config.isvc_ready(self.reader, *backend.isvc)
                if ready:
                    served[backend.ref.index] = names
                    healthy.append(backend)
            elif not backend.host.endswith((".svc", ".svc.cluster.local")):
                healthy.append(backend)  # a provider on the internet
        if not healthy:
            # Sandbox approximation: a Service without ready endpoints shows as "no healthy upstream" (a real
            # cluster may answer UF, connection failure, while the predictor Service exists but has no pods).
            return self._local(exchange, 503, NO_HEALTHY_UPSTREAM_BODY, details="no_healthy_upstream", flag="UH")
        tier = min(backend.ref.priority for backend in healthy)
        backend = self._pick(rule, [b for b in healthy if b.ref.priority == tier])
        if backend.pool is not None:
            # The endpoint picker's choice: Envoy sends the request straight to that pod (sandbox picker: round robin
            # over the ready decode pods, deterministic per rule).
            backend = dataclasses.replace(backend, host=self._pick_endpoint(rule, endpoints[backend.ref.index]))
        exchange.attempt_count = 1
        exchange.upstream_host = f"{backend.host}:{backend.port}"
        # internal/internalapi PerRouteRuleRefBackendName: {namespace}/{name}/route/{route}/rule/{i}/ref/{j}.
        backend_name = (
            f"{rule.route_namespace}/{backend.ref.name}/route/{rule.route_name}"
            f"/rule/{rule.rule_index}/ref/{backend.ref.index}"
        )
        try:
            auth_headers = config.backend_auth_headers(self.reader, backend)
        except config.BackendUnavailable as error:
            # The controller skipped the backend: the upstream ext_proc answers gRPC Internal ("unknown backend")
            # and Envoy sends its ext_proc error reply, a 500 with no body.
            logger.info("sandbox gateway: backend %s skipped by the AI Gateway controller: %s", backend_name, error)
            return self._local(exchange, 500, details="ext_proc_error_gRPC_error_13")
        exchange.metadata["backend_name"] = backend_name
        actual_model = backend.ref.model_name_override or model
        upstream_body = dict(body)
        if backend.ref.model_name_override:
            upstream_body["model"] = backend.ref.model_name_override
        if backend.pool is not None:
            rewritten = config.pool_model_rewrite(self.reader, *backend.pool, actual_model)
            if rewritten is not None:  # the endpoint picker rewrites the body, after the AI Gateway's ext_proc
                upstream_body["model"] = rewritten
        upstream_headers = {k: v for k, v in exchange.headers.items() if not k.startswith(":") and k not in _HOP_BY_HOP}
        upstream_headers.update(auth_headers)
        upstream_headers["host"] = backend.host  # the AI Gateway's host rewrite filter
        upstream_path = posixpath.join("/", backend.prefix, operation) if backend.prefix else f"/{operation}"
        created = int(self.clock())
        if backend.isvc is not None or backend.pool is not None:
            response = serve_model(
                host=backend.host,
                path=upstream_path,
                body=upstream_body,
                served_models=served[backend.ref.index],
                cache=self.prefix_cache,
                created=created,
                api_root="/v1" if backend.pool is not None else "/openai/v1",
            )
        else:
            response = serve_provider(
                host=backend.host,
                path=upstream_path,
                schema=backend.schema,
                headers=upstream_headers,
                body=upstream_body,
                cache=self.prefix_cache,
                created=created,
            )
        exchange.upstream_first_byte_at = self.clock()  # the in-process upstream answers whole, at once
        with self._lock:
            self._upstream_calls.append(
                UpstreamCall(
                    backend.host, backend.port, upstream_path, upstream_headers, upstream_body, response.status
                )
            )
        exchange.details = "via_upstream"
        if 200 <= response.status < 300:  # internal/extproc/util.go isGoodStatusCode
            exchange.completion = _Completion(backend_name, rule.route, actual_model, operation, response)
        return _Reply(response.status, list(response.headers.items()), response.body, response.chunks)

    # ------------------------------------------------------------------ after the response

    def finish(self, exchange: _Exchange, reply: _Reply, *, completed: bool, bytes_sent: int) -> None:
        """Settle a request: usage metadata (only for a 2xx answered in full), the rate limit's response cost, the
        access log, the counters."""
        if completed and exchange.completion is not None and exchange.costs_configured:
            exchange.metadata.update(self._usage_metadata(exchange, exchange.completion))
        if not completed:
            exchange.flags.append("DC")
        now = self.clock()
        if exchange.limit_rules and exchange.rule is not None:
            self.limiter.charge(
                exchange.limit_rules,
                exchange.headers,
                exchange.rule.envoy_route_name,
                {config.METADATA_NAMESPACE: exchange.metadata},
                now,
            )
        context = LogContext(
            start_time=exchange.start,
            duration_ms=max(int((now - exchange.start) * 1000), 0),
            response_duration_ms=(
                max(int((exchange.upstream_first_byte_at - exchange.start) * 1000), 0)
                if exchange.upstream_first_byte_at is not None
                else None
            ),
            request_headers=exchange.headers,
            response_headers={name.lower(): value for name, value in reply.headers},
            response_code=reply.status,
            response_flags=tuple(exchange.flags),
            response_code_details=exchange.details,
            metadata={config.METADATA_NAMESPACE: dict(exchange.metadata)} if exchange.metadata else {},
            attempt_count=exchange.attempt_count,
            route_name=exchange.rule.envoy_route_name if exchange.rule is not None else None,
            upstream_host=exchange.upstream_host,
            upstream_cluster=exchange.rule.cluster_name if exchange.upstream_host and exchange.rule else None,
            bytes_received=len(exchange.body),
            bytes_sent=bytes_sent,
            downstream_remote_address=exchange.client_address,
            downstream_local_address=exchange.local_address,
            environment={"ENVOY_POD_NAME": self.pod_name, "ENVOY_POD_NAMESPACE": PROXY_NAMESPACE},
        )
        self._log(exchange, context)
        with self._lock:
            self._statuses[reply.status] += 1

    def _usage_metadata(self, exchange: _Exchange, completion: _Completion) -> dict[str, Any]:
        """internal/extproc/processor_impl.go buildDynamicMetadata: route costs first, then global costs for the
        keys a route did not set, then model_name_override, ai_service_backend_name, route_name, response_model."""
        usage, response_model = _wire_usage(completion.upstream, completion.operation)
        variables: dict[str, Any] = {
            "model": completion.actual_model,
            # The ext_proc passes its full per-route backend name here (evalCost), not "name.namespace".
            "backend": completion.backend_name,
            "route_name": completion.route,
            **usage,
        }
        metadata: dict[str, Any] = {}
        for cost in exchange.route_costs.get(completion.route, []):
            value = _cost_value(cost, usage, variables)
            if value is not None:
                metadata[cost.metadata_key] = value
        populated = {cost.metadata_key for cost in exchange.route_costs.get(completion.route, [])}
        for cost in exchange.global_costs:
            if cost.metadata_key in populated:
                continue
            value = _cost_value(cost, usage, variables)
            if value is not None:
                metadata[cost.metadata_key] = value
        metadata["model_name_override"] = completion.actual_model
        metadata["ai_service_backend_name"] = "/".join(completion.backend_name.split("/", 2)[:2])
        metadata["route_name"] = completion.route
        if response_model:
            metadata["response_model"] = response_model
        return metadata

    def _log(self, exchange: _Exchange, context: LogContext) -> None:
        for setting in exchange.settings:
            if not setting.wants(route_matched=exchange.route_matched) or not setting.matched(context):
                continue
            record = (
                typed_record(setting, context)
                if setting.json_format
                else {"message": render_text(setting.text_format or [], context)}
            )
            with self._lock:
                self._records.append(record)
                self._record_count += 1
            if not setting.otel_sinks:
                continue
            if self.shipper is None:
                if not self._warned_no_endpoint:
                    self._warned_no_endpoint = True
                    logger.warning(
                        "sandbox gateway: an OpenTelemetry access-log sink is configured but no usage_endpoint; "
                        "records are not shipped"
                    )
                continue
            attributes = tuple(otel_attributes(setting, context))
            for sink in setting.otel_sinks:
                # Envoy's built-in resource labels (otlp_log_utils.cc initOtlpMessageRoot); EG starts the proxy with
                # --service-cluster <namespace>/<gateway> and --service-node $(ENVOY_POD_NAME) (proxy_args.go).
                resource = (
                    ("log_name", OTEL_LOG_NAME),
                    ("zone_name", ""),
                    ("cluster_name", f"{self.gateway_namespace}/{self.gateway_name}"),
                    ("node_name", self.pod_name),
                    *sink.resource_attributes,
                )
                self.shipper.submit(OtlpRecord(resource, int(context.start_time * 1e9), attributes))


# ---------------------------------------------------------------------------------------------- helpers


def _parse_body(raw: bytes, operation: str) -> tuple[dict[str, Any] | None, str]:
    """The request as the AI Gateway's Go structs would decode it: (body, "") or (None, the problem)."""
    try:
        body = json.loads(raw or b"")
    except (ValueError, UnicodeDecodeError) as error:
        return None, str(error)
    if not isinstance(body, dict):
        return None, f"cannot unmarshal {type(body).__name__} into a request object"
    expected: dict[str, type | tuple[type, ...]] = {"model": str, "stream": bool}
    if operation == CHAT:
        expected["messages"] = list
    for key, kind in expected.items():
        if key in body and body[key] is not None and not isinstance(body[key], kind):
            return None, f"cannot unmarshal {type(body[key]).__name__} into field {key}"
    return body, ""


def _wire_usage(response: UpstreamResponse, operation: str) -> tuple[dict[str, int], str]:
    """Usage and served model as the AI Gateway's OpenAI translator reads them off the upstream response."""
    usage: Any = None
    model = ""
    if response.chunks is not None:
        for event in sse_events(response.chunks):
            if isinstance(event.get("usage"), dict):
                usage = event["usage"]
            if isinstance(event.get("model"), str) and event["model"]:
                model = event["model"]
    else:
        with contextlib.suppress(ValueError):
            payload = json.loads(response.body)
            if isinstance(payload, dict):
                usage = payload.get("usage")
                model = str(payload.get("model") or "")
    usage = usage if isinstance(usage, dict) else {}

    def number(value: object) -> int:
        return value if isinstance(value, int) and not isinstance(value, bool) else 0

    prompt_details = usage.get("prompt_tokens_details") if isinstance(usage.get("prompt_tokens_details"), dict) else {}
    completion_details = (
        usage.get("completion_tokens_details") if isinstance(usage.get("completion_tokens_details"), dict) else {}
    )
    counts = {
        "input_tokens": number(usage.get("prompt_tokens")),
        "cached_input_tokens": number(prompt_details.get("cached_tokens")),
        "cache_creation_input_tokens": 0,
        "output_tokens": 0 if operation == EMBEDDINGS else number(usage.get("completion_tokens")),
        "reasoning_tokens": number(completion_details.get("reasoning_tokens")),
        "total_tokens": number(usage.get("total_tokens")),
    }
    return counts, model


_cel_programs: dict[str, Any] = {}
_TOKEN_VARIABLE = re.compile(r"\b(" + "|".join(_TOKEN_VARIABLES) + r")\b")


def _cost_value(cost: config.RequestCost, usage: Mapping[str, int], variables: Mapping[str, Any]) -> int | None:
    if cost.type != "CEL":
        return usage[_COST_FIELDS[cost.type]]
    # internal/llmcostcel: token variables are CEL uints; this CEL library only binds ints, so each one is read
    # through uint(...) to keep uint arithmetic (`output_tokens * 3u`) valid. A result that is not a non-negative
    # integer is skipped (the AI Gateway would fail the request's metadata).
    if cost.cel not in _cel_programs:
        try:
            _cel_programs[cost.cel] = cel.compile(_TOKEN_VARIABLE.sub(r"uint(sandbox_\1)", cost.cel))
        except (ValueError, RuntimeError) as error:
            logger.warning(
                "sandbox gateway: CEL cost %s (%r) does not compile: %s; skipped", cost.metadata_key, cost.cel, error
            )
            _cel_programs[cost.cel] = None
    program = _cel_programs[cost.cel]
    if program is None:
        return None
    activation = {
        key if key in ("model", "backend", "route_name") else f"sandbox_{key}": value
        for key, value in variables.items()
    }
    try:
        result = program.execute(activation)
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        logger.warning("sandbox gateway: CEL cost %s (%r) failed: %s; skipped", cost.metadata_key, cost.cel, error)
        return None
    if isinstance(result, bool) or not isinstance(result, int) or result < 0:
        logger.warning(
            "sandbox gateway: CEL cost %s (%r) gave %r, not a non-negative integer; skipped",
            cost.metadata_key,
            cost.cel,
            result,
        )
        return None
    return int(result)


def _read_body(handler: BaseHTTPRequestHandler) -> bytes:
    if "chunked" in handler.headers.get("Transfer-Encoding", "").lower():
        data = b""
        while True:
            size = int(handler.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                handler.rfile.readline()
                return data
            data += handler.rfile.read(size)
            handler.rfile.readline()
    length = int(handler.headers.get("Content-Length") or 0)
    return handler.rfile.read(length) if length else b""


def _handler_class(gateway: SandboxGateway) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            # Without it every request stalls ~40 ms on Nagle and delayed ACK (as in server.py).
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def version_string(self) -> str:
            return "envoy"  # Envoy overwrites the Server header with its own name by default

        def log_message(self, format: str, *args: Any) -> None:
            logger.debug("sandbox gateway: " + format, *args)

        def _serve(self) -> None:
            body = _read_body(self)
            headers: dict[str, str] = {}
            for name, value in self.headers.items():
                key = name.lower()
                headers[key] = f"{headers[key]},{value}" if key in headers else value
            authority = headers.pop("host", "")
            client_host, client_port = self.client_address[:2]
            local_host, local_port = gateway.server.server_address[:2]
            # Envoy's HTTP/1 codec turns Host into :authority; EG's edge proxy appends the client to XFF.
            headers.update({":method": self.command, ":path": self.path, ":authority": authority, ":scheme": "http"})
            headers["x-forwarded-for"] = (
                f"{headers['x-forwarded-for']},{client_host}" if "x-forwarded-for" in headers else str(client_host)
            )
            headers["x-forwarded-proto"] = "http"
            exchange = _Exchange(
                method=self.command,
                path=self.path,
                headers=headers,
                body=body,
                client_address=f"{client_host}:{client_port}",
                local_address=f"{local_host!s}:{local_port}",
                start=gateway.clock(),
            )
            try:
                reply = gateway.process(exchange)
            except Exception:  # the stand-in's own bug: answer as Envoy would for a broken filter, and log it
                logger.exception("sandbox gateway: %s %s failed", self.command, self.path)
                reply = _Reply(500, [])
                exchange.details = "sandbox_error"
            self._send(exchange, reply)

        def _send(self, exchange: _Exchange, reply: _Reply) -> None:
            self.send_response(reply.status)
            for name, value in reply.headers:
                self.send_header(name, value)
            if reply.chunks is None:
                self.send_header("content-length", str(len(reply.body)))
                # Settled before the body goes out, so a client that has read its response sees the effects.
                gateway.finish(exchange, reply, completed=True, bytes_sent=len(reply.body))
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.end_headers()
                    self.wfile.write(reply.body)
                return
            self.send_header("transfer-encoding", "chunked")
            sent = 0
            try:
                self.end_headers()
                for chunk in reply.chunks:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    self.wfile.flush()
                    sent += len(chunk)
            except (BrokenPipeError, ConnectionResetError):
                # The client went away mid-stream: no usage metadata (the AI Gateway only builds it at the end of
                # a complete response), response flag DC.
                self.close_connection = True
                gateway.finish(exchange, reply, completed=False, bytes_sent=sent)
                return
            gateway.finish(exchange, reply, completed=True, bytes_sent=sent)
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.wfile.write(b"0\r\n\r\n")

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _serve

    return Handler
