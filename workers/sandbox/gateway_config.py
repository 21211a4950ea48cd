"""What the sandbox gateway's data plane reads off the sandbox Store: the Gateway, the Envoy Gateway policies
targeting it, the AI Gateway routes attached to it, and their backends, credentials and token costs. Read live on
every request (a revoked key is gone from its Secret on the next request), through the Store's public methods,
never relying on the `kind`/`apiVersion` of listed items.

Facts (sources next to the code that relies on them):
- Policy precedence (reference serving-and-gateway.md 3.5 and 4.1): one policy per target wins, the oldest by
  creationTimestamp, then by namespace/name; only Gateway-level targets are modelled here.
- EG apiKeyAuth (internal/gatewayapi/securitypolicy.go buildAPIKeyAuth @v1.9.0): Secrets in credentialRefs order,
  client ids sorted within a Secret, a repeated client id keeps its first key, the same key under two client ids is
  an error ("duplicated API key"), and so is a missing Secret; a SecurityPolicy with an error turns every route it
  covers into a 500 direct response (translateSecurityPolicyForGateway, "setting 500 direct response").
- AI Gateway controller (internal/controller/gateway.go @v1.1.0): /v1/models lists every Exact `x-ai-eg-model`
  header match of the routes attached to the Gateway (created = rule modelsCreatedAt, else the route's
  creationTimestamp; owned_by = modelsOwnedBy, else "Envoy AI Gateway"), whoever asks; route costs apply to their
  route, GatewayConfig globalLLMRequestCosts to every key a route does not set; a BackendSecurityPolicy whose Secret
  or key is missing makes the controller skip that backend (the ext_proc then fails the request); an upstream
  OpenAI/Anthropic schema prefix defaults to "v1" (schemaToFilterAPI).
- AI Gateway route translation (internal/controller/ai_gateway_route.go @v1.1.0): every AIGatewayRoute becomes an
  HTTPRoute of the same name whose rules keep their header matches, plus a catch-all `route-not-found` rule; an
  AIServiceBackend that cannot be read fails the whole route's translation.
- InferencePool backends (internal/controller/gateway.go, ai_gateway_route.go, referencegrant.go @v1.1.0): a pool is
  OpenAI-schema with prefix "v1"; one in another namespace needs a ReferenceGrant there from AIGatewayRoutes of the
  route's namespace to InferencePools, else the route's translation fails; the backend's name is
  `{route namespace}/{pool}/route/{route}/rule/{i}/ref/{j}` as for an AIServiceBackend. Envoy Gateway sends the
  request to the pod the pool's endpoint picker chooses among the ready pods the pool selects (`spec.selector`, port
  `targetPorts[0]`); the llm-d picker sends decode work to decode pods (`llm-d.ai/role` decode or both), reads the
  `x-llm-d-inference-objective` header for the request's priority and rewrites the body's model by the pool's
  InferenceModelRewrites (llm-d-router v0.10.0 pkg/epp/requestcontrol/director.go). Sandbox picker: the first ready
  pod by name, round robin across requests of the rule.
- Gateway API (HTTPRoute rule precedence): among rules with the same path match, more header matches first, then
  the older route, then namespace/name, then rule order. Regular expressions are RE2 and Envoy matches them against
  the whole value (safe_regex: "\\d{3} does not match 1234"), so Python's re.fullmatch.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from workers.sandbox.gateway_ratelimit import InvalidPolicy, compile_regex, header_matches
from workers.sandbox.store import ApiError, Store

logger = logging.getLogger(__name__)

Obj = dict[str, Any]
GATEWAY_API = "gateway.networking.k8s.io/v1"
EG_API = "gateway.envoyproxy.io/v1alpha1"
AIGW_API = "aigateway.envoyproxy.io/v1beta1"
ISVC_API = "serving.kserve.io/v1beta1"
LLMISVC_API = "serving.kserve.io/v1alpha2"
POOL_API = "inference.networking.k8s.io/v1"
POOL_GROUP = "inference.networking.k8s.io"
POOL_KIND = "InferencePool"
LLMD_API = "llm-d.ai/v1alpha2"
GRANT_API = "gateway.networking.k8s.io/v1beta1"
ROLE_LABEL = "llm-d.ai/role"
OBJECTIVE_HEADER = "x-llm-d-inference-objective"
GATEWAY_GROUP = "gateway.networking.k8s.io"
EG_GROUP = "gateway.envoyproxy.io"
AIGW_GROUP = "aigateway.envoyproxy.io"
GATEWAY_CONFIG_ANNOTATION = "aigateway.envoyproxy.io/gateway-config"
MODEL_HEADER = "x-ai-eg-model"
DEFAULT_OWNED_BY = "Envoy AI Gateway"
# AI Gateway api/v1beta1 shared_types.go: the dynamic metadata namespace of costs and route details.
METADATA_NAMESPACE = "io.envoy.ai_gateway"
COST_TYPES = frozenset(
    {"InputToken", "CachedInputToken", "CacheCreationInputToken", "OutputToken", "ReasoningToken", "TotalToken", "CEL"}
)


class PolicyError(Exception):
    """The control plane would refuse this configuration; the message says why."""


class StoreReader:
    """Reads by apiVersion and kind; a kind the Store does not know has no objects."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def list(self, api_version: str, kind: str, namespace: str | None) -> list[Obj]:
        found = self.store.kind_by_api_version(api_version, kind)
        if found is None:
            return []
        try:
            return list(self.store.list(found, namespace)["items"])
        except ApiError:
            return []

    def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> Obj | None:
        found = self.store.kind_by_api_version(api_version, kind)
        if found is None:
            return None
        try:
            return self.store.get(found, namespace, name)
        except ApiError:
            return None


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    metadata = obj.get("metadata")
    return metadata if isinstance(metadata, dict) else {}


def _spec(obj: Mapping[str, Any] | None) -> Mapping[str, Any]:
    spec = (obj or {}).get("spec")
    return spec if isinstance(spec, dict) else {}


def full_name(obj: Mapping[str, Any]) -> str:
    return f"{_meta(obj).get('namespace', '')}/{_meta(obj).get('name', '')}"


def _age_key(obj: Mapping[str, Any]) -> tuple[str, str, str]:
    return (
        str(_meta(obj).get("creationTimestamp", "")),
        str(_meta(obj).get("namespace", "")),
        str(_meta(obj).get("name", "")),
    )


def targets_gateway(policy: Mapping[str, Any], namespace: str, name: str) -> bool:
    """A local policy reference to the Gateway (targetRefs, or the deprecated targetRef)."""
    if _meta(policy).get("namespace") != namespace:
        return False
    spec = _spec(policy)
    refs = list(spec.get("targetRefs") or [])
    if spec.get("targetRef"):
        refs.append(spec["targetRef"])
    return any(
        ref.get("kind") == "Gateway" and ref.get("group", GATEWAY_GROUP) == GATEWAY_GROUP and ref.get("name") == name
        for ref in refs
        if isinstance(ref, dict)
    )


def winning_policy(reader: StoreReader, kind: str, namespace: str, name: str) -> Obj | None:
    policies = [p for p in reader.list(EG_API, kind, namespace) if targets_gateway(p, namespace, name)]
    if len(policies) > 1:
        logger.debug(
            "sandbox gateway: %d %s objects target %s/%s; the oldest wins", len(policies), kind, namespace, name
        )
    return min(policies, key=_age_key) if policies else None


def secret_value(reader: StoreReader, namespace: str, name: str, key: str) -> str | None:
    secret = reader.get("v1", "Secret", namespace, name)
    if secret is None:
        return None
    raw = (secret.get("data") or {}).get(key)
    if raw is None:
        text = (secret.get("stringData") or {}).get(key)
        return str(text) if text is not None else None
    try:
        return base64.b64decode(raw).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None


# ---------------------------------------------------------------------------------------------- client side


@dataclass(frozen=True)
class ApiKeyAuth:
    credentials: dict[str, str]  # key -> client id
    header_sources: tuple[str, ...]  # lower case, in extractFrom order
    forward_client_id_header: str
    sanitize: bool


def load_api_key_auth(reader: StoreReader, policy: Mapping[str, Any]) -> ApiKeyAuth | None:
    """The policy's apiKeyAuth with its Secrets read now; None without apiKeyAuth; PolicyError when EG would
    refuse it."""
    spec = _spec(policy).get("apiKeyAuth")
    if not isinstance(spec, dict):
        return None
    namespace = str(_meta(policy).get("namespace", ""))
    credentials: dict[str, str] = {}
    seen_clients: set[str] = set()
    for ref in spec.get("credentialRefs") or []:
        secret_namespace = str(ref.get("namespace") or namespace)
        if secret_namespace != namespace:
            raise PolicyError(
                f"credentialRef {secret_namespace}/{ref.get('name')}: a cross-namespace Secret needs a "
                "ReferenceGrant, which the sandbox does not model"
            )
        secret = reader.get("v1", "Secret", secret_namespace, str(ref.get("name", "")))
        if secret is None:
            raise PolicyError(f"Secret {secret_namespace}/{ref.get('name')} does not exist")
        data = dict(secret.get("data") or {})
        for client_id in sorted(data):
            if client_id in seen_clients:
                continue
            try:
                key = base64.b64decode(data[client_id]).decode()
            except (binascii.Error, UnicodeDecodeError):
                raise PolicyError(
                    f"Secret {secret_namespace}/{ref.get('name')} key {client_id} is not base64"
                ) from None
            if key in credentials:
                raise PolicyError("duplicated API key")
            credentials[key] = client_id
            seen_clients.add(client_id)
    sources: list[str] = []
    for source in spec.get("extractFrom") or []:
        if source.get("params") or source.get("cookies"):
            logger.info("sandbox gateway: apiKeyAuth params and cookies sources are not modelled")
        sources.extend(str(header).lower() for header in source.get("headers") or [])
    return ApiKeyAuth(
        credentials=credentials,
        header_sources=tuple(sources),
        forward_client_id_header=str(spec.get("forwardClientIDHeader") or "").lower(),
        sanitize=bool(spec.get("sanitize")),
    )


@dataclass(frozen=True)
class ClientHeaders:
    """ClientTrafficPolicy headers: early request header mutation and the request id mode."""

    set_headers: tuple[tuple[str, str], ...] = ()
    add_headers: tuple[tuple[str, str], ...] = ()
    remove_headers: tuple[str, ...] = ()
    request_id: str = "Generate"  # EG clienttrafficpolicy_types.go: "When omitted default behavior is Generate"


def load_client_headers(policy: Mapping[str, Any] | None) -> ClientHeaders:
    headers = _spec(policy).get("headers") or {}
    early = headers.get("earlyRequestHeaders") or {}
    request_id = headers.get("requestID")
    if request_id is None and headers.get("preserveXRequestID"):
        request_id = "PreserveOrGenerate"
    return ClientHeaders(
        set_headers=tuple((str(h["name"]).lower(), str(h["value"])) for h in early.get("set") or []),
        add_headers=tuple((str(h["name"]).lower(), str(h["value"])) for h in early.get("add") or []),
        remove_headers=tuple(str(name).lower() for name in early.get("remove") or []),
        request_id=str(request_id or "Generate"),
    )


# ---------------------------------------------------------------------------------------------- routes


@dataclass(frozen=True)
class HeaderMatch:
    name: str
    kind: str  # Exact | RegularExpression
    value: str
    pattern: re.Pattern[str] | None = None

    def matches(self, headers: Mapping[str, str]) -> bool:
        return header_matches(headers.get(self.name), self.kind, self.value, self.pattern)


@dataclass(frozen=True)
class BackendRef:
    index: int
    name: str
    namespace: str
    weight: int
    priority: int
    model_name_override: str
    kind: str = "AIServiceBackend"  # or InferencePool


@dataclass(frozen=True)
class RouteRule:
    route_namespace: str
    route_name: str
    rule_index: int
    match_index: int
    headers: tuple[HeaderMatch, ...]
    backends: tuple[BackendRef, ...]
    hostnames: tuple[str, ...]

    @property
    def route(self) -> str:
        return f"{self.route_namespace}/{self.route_name}"

    @property
    def envoy_route_name(self) -> str:
        # EG internal/gatewayapi irRouteName: httproute/<ns>/<name>/rule/<i>/match/<j>.
        return f"httproute/{self.route_namespace}/{self.route_name}/rule/{self.rule_index}/match/{self.match_index}"

    @property
    def cluster_name(self) -> str:
        return f"httproute/{self.route_namespace}/{self.route_name}/rule/{self.rule_index}"

    def matches(self, headers: Mapping[str, str], host: str) -> bool:
        if self.hostnames and not any(_host_matches(pattern, host) for pattern in self.hostnames):
            return False
        return all(match.matches(headers) for match in self.headers)


def _host_matches(pattern: str, host: str) -> bool:
    host = host.rsplit(":", 1)[0].lower() if not host.startswith("[") else host.lower()
    pattern = pattern.lower()
    if pattern.startswith("*."):
        suffix = pattern[1:]
        return host.endswith(suffix) and "." not in host[: -len(suffix)] and len(host) > len(suffix)
    return host == pattern


def attached_routes(reader: StoreReader, namespace: str, name: str) -> list[Obj]:
    """AIGatewayRoutes whose parentRefs name the Gateway (allowedRoutes: the same namespace, unless a listener
    allows All)."""
    gateway = reader.get(GATEWAY_API, "Gateway", namespace, name)
    allow_all = any(
        ((listener.get("allowedRoutes") or {}).get("namespaces") or {}).get("from") == "All"
        for listener in _spec(gateway).get("listeners") or []
    )
    routes = []
    for route in reader.list(AIGW_API, "AIGatewayRoute", None):
        route_namespace = str(_meta(route).get("namespace", ""))
        if route_namespace != namespace and not allow_all:
            continue
        for parent in _spec(route).get("parentRefs") or []:
            if (
                parent.get("name") == name
                and parent.get("kind", "Gateway") == "Gateway"
                and parent.get("group", GATEWAY_GROUP) == GATEWAY_GROUP
                and parent.get("namespace", route_namespace) == namespace
            ):
                routes.append(route)
                break
    return sorted(routes, key=lambda route: (str(_meta(route).get("namespace")), str(_meta(route).get("name"))))


def compile_routes(reader: StoreReader, routes: list[Obj]) -> list[RouteRule]:
    """The routes' rules in the order Envoy tries them; a route the AI Gateway controller could not translate (an
    AIServiceBackend it cannot read, an invalid regular expression) contributes nothing."""
    compiled: list[tuple[tuple[Any, ...], RouteRule]] = []
    for route in routes:
        namespace = str(_meta(route).get("namespace", ""))
        name = str(_meta(route).get("name", ""))
        try:
            rules = _route_rules(reader, route, namespace, name)
        except PolicyError as error:
            logger.info("sandbox gateway: AIGatewayRoute %s/%s is not programmed: %s", namespace, name, error)
            continue
        for rule in rules:
            order = (-len(rule.headers), _age_key(route), rule.rule_index, rule.match_index)
            compiled.append((order, rule))
    compiled.sort(key=lambda item: item[0])
    return [rule for _, rule in compiled]


def _route_rules(reader: StoreReader, route: Obj, namespace: str, name: str) -> list[RouteRule]:
    hostnames = tuple(str(h) for h in _spec(route).get("hostnames") or [])
    result = []
    for rule_index, rule in enumerate(_spec(route).get("rules") or []):
        refs = []
        for ref_index, ref in enumerate(rule.get("backendRefs") or []):
            ref_namespace = str(ref.get("namespace") or namespace)
            is_pool = ref.get("kind") == POOL_KIND and ref.get("group") == POOL_GROUP
            if is_pool:
                if ref_namespace != namespace and not pool_granted(reader, namespace, ref_namespace):
                    raise PolicyError(
                        f"cross-namespace reference from AIGatewayRoute in namespace {namespace} to InferencePool "
                        f"{ref.get('name')} in namespace {ref_namespace} is not permitted"
                    )
            elif reader.get(AIGW_API, "AIServiceBackend", ref_namespace, str(ref.get("name", ""))) is None:
                raise PolicyError(f"AIServiceBackend {ref_namespace}/{ref.get('name')} not found")
            refs.append(
                BackendRef(
                    index=ref_index,
                    name=str(ref.get("name", "")),
                    namespace=ref_namespace,
                    weight=int(ref.get("weight", 1)),
                    priority=int(ref.get("priority", 0)),
                    model_name_override=str(ref.get("modelNameOverride") or ""),
                    kind=POOL_KIND if is_pool else "AIServiceBackend",
                )
            )
        matches = rule.get("matches") or [{}]
        for match_index, match in enumerate(matches):
            headers = []
            for header in match.get("headers") or []:
                kind = header.get("type") or "Exact"
                value = str(header.get("value", ""))
                try:
                    pattern = compile_regex(value) if kind == "RegularExpression" else None
                except InvalidPolicy as error:
                    raise PolicyError(str(error)) from None
                headers.append(HeaderMatch(str(header.get("name", "")).lower(), kind, value, pattern))
            result.append(RouteRule(namespace, name, rule_index, match_index, tuple(headers), tuple(refs), hostnames))
    return result


def declared_models(routes: list[Obj]) -> list[dict[str, Any]]:
    """The /v1/models entries, in the controller's order (routes by namespace/name, then rules, then matches)."""
    models = []
    for route in routes:
        created = _unix_time(_meta(route).get("creationTimestamp"))
        for rule in _spec(route).get("rules") or []:
            for match in rule.get("matches") or []:
                for header in match.get("headers") or []:
                    if (header.get("type") or "Exact") != "Exact" or str(header.get("name")) != MODEL_HEADER:
                        continue
                    models.append(
                        {
                            "id": str(header.get("value", "")),
                            "object": "model",
                            "created": _unix_time(rule.get("modelsCreatedAt")) or created,
                            "owned_by": str(rule.get("modelsOwnedBy") or DEFAULT_OWNED_BY),
                        }
                    )
    return models


def _unix_time(value: object) -> int:
    if not isinstance(value, str) or not value:
        return 0
    try:
        return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp())
    except ValueError:
        return 0


# ---------------------------------------------------------------------------------------------- costs


@dataclass(frozen=True)
class RequestCost:
    metadata_key: str
    type: str
    cel: str = ""


def _costs(raw: object) -> list[RequestCost]:
    costs = []
    for cost in raw if isinstance(raw, list) else []:
        if isinstance(cost, dict) and cost.get("type") in COST_TYPES and cost.get("metadataKey"):
            costs.append(RequestCost(str(cost["metadataKey"]), str(cost["type"]), str(cost.get("cel") or "")))
    return costs


def route_costs(routes: list[Obj]) -> dict[str, list[RequestCost]]:
    """Route "namespace/name" -> its llmRequestCosts (the last definition of a key wins, as the controller dedups)."""
    result = {}
    for route in routes:
        by_key = {cost.metadata_key: cost for cost in _costs(_spec(route).get("llmRequestCosts"))}
        result[full_name(route)] = list(by_key.values())
    return result


def global_costs(reader: StoreReader, gateway: Mapping[str, Any]) -> list[RequestCost]:
    """GatewayConfig.globalLLMRequestCosts of the GatewayConfig the Gateway's annotation names (same namespace)."""
    name = (_meta(gateway).get("annotations") or {}).get(GATEWAY_CONFIG_ANNOTATION)
    if not name:
        return []
    config = reader.get(AIGW_API, "GatewayConfig", str(_meta(gateway).get("namespace", "")), str(name))
    return _costs(_spec(config).get("globalLLMRequestCosts"))


def envoy_proxy(reader: StoreReader, gateway: Mapping[str, Any]) -> Obj | None:
    """The EnvoyProxy named by Gateway.spec.infrastructure.parametersRef (same namespace)."""
    ref = (_spec(gateway).get("infrastructure") or {}).get("parametersRef") or {}
    if ref.get("kind") != "EnvoyProxy" or ref.get("group") != EG_GROUP:
        return None
    return reader.get(EG_API, "EnvoyProxy", str(_meta(gateway).get("namespace", "")), str(ref.get("name", "")))


# ---------------------------------------------------------------------------------------------- backends


class BackendUnavailable(Exception):
    """The controller skipped this backend (its credential cannot be read): the ext_proc fails the request."""


@dataclass(frozen=True)
class ResolvedBackend:
    ref: BackendRef
    schema: str
    prefix: str
    host: str
    port: int
    isvc: tuple[str, str] | None  # (namespace, name) when the host is a KServe predictor service
    pool: tuple[str, str] | None = None  # (namespace, name) of an InferencePool backend


_PREDICTOR = re.compile(
    r"^(?P<name>[a-z0-9]([-a-z0-9]*[a-z0-9])?)-predictor\.(?P<namespace>[a-z0-9-]+)\.svc(\.cluster\.local)?$"
)


def resolve_backend(reader: StoreReader, ref: BackendRef) -> ResolvedBackend | None:
    """The AIServiceBackend's schema and its EG Backend's endpoint; None when the Backend is missing or has no
    endpoint (EG then treats the backendRef as invalid)."""
    if ref.kind == POOL_KIND:
        pool = reader.get(POOL_API, POOL_KIND, ref.namespace, ref.name)
        if pool is None:
            return None
        port = next((int(p.get("number", 0)) for p in _spec(pool).get("targetPorts") or []), 0)
        host = f"{ref.name}.{ref.namespace}.svc.cluster.local"
        return ResolvedBackend(ref, "OpenAI", "v1", host, port, None, (ref.namespace, ref.name))
    ai_backend = reader.get(AIGW_API, "AIServiceBackend", ref.namespace, ref.name)
    if ai_backend is None:
        return None
    schema = _spec(ai_backend).get("schema") or {}
    schema_name = str(schema.get("name", "OpenAI"))
    prefix = str(schema.get("prefix") or "v1") if schema_name in ("OpenAI", "Anthropic") else ""
    backend_ref = _spec(ai_backend).get("backendRef") or {}
    backend = reader.get(
        EG_API, "Backend", str(backend_ref.get("namespace") or ref.namespace), str(backend_ref.get("name", ""))
    )
    for endpoint in _spec(backend).get("endpoints") or []:
        address = endpoint.get("fqdn") or {}
        host = str(address.get("hostname", ""))
        if not host:
            address = endpoint.get("ip") or {}
            host = str(address.get("address", ""))
        if host:
            predictor = _PREDICTOR.match(host)
            isvc = (predictor.group("namespace"), predictor.group("name")) if predictor else None
            return ResolvedBackend(ref, schema_name, prefix, host, int(address.get("port", 80)), isvc)
    return None


def isvc_ready(reader: StoreReader, namespace: str, name: str) -> tuple[bool, tuple[str, ...]]:
    """(the InferenceService exists and its Ready condition is True, its served model names)."""
    isvc = reader.get(ISVC_API, "InferenceService", namespace, name)
    if isvc is None:
        return False, ()
    conditions = (isvc.get("status") or {}).get("conditions") or []
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
    model = ((_spec(isvc).get("predictor") or {}).get("model")) or {}
    names = [str(arg).split("=", 1)[1] for arg in model.get("args") or [] if str(arg).startswith("--model_name=")]
    # KServe's Hugging Face server serves the InferenceService's name unless --model_name says otherwise.
    return ready, tuple(names) or (name,)


def pool_granted(reader: StoreReader, route_namespace: str, pool_namespace: str) -> bool:
    """A ReferenceGrant in the pool's namespace lets AIGatewayRoutes of the route's namespace reach InferencePools
    (referencegrant.go isReferenceGrantValid: `from` group, kind and namespace, `to` group and kind)."""
    for grant in reader.list(GRANT_API, "ReferenceGrant", pool_namespace):
        allowed_from = any(
            item.get("group") == AIGW_GROUP
            and item.get("kind") == "AIGatewayRoute"
            and item.get("namespace") == route_namespace
            for item in _spec(grant).get("from") or []
        )
        allowed_to = any(
            item.get("group") == POOL_GROUP and item.get("kind") == POOL_KIND for item in _spec(grant).get("to") or []
        )
        if allowed_from and allowed_to:
            return True
    return False


@dataclass(frozen=True)
class PoolEndpoint:
    pod: str
    address: str
    port: int


def pool_endpoints(reader: StoreReader, namespace: str, name: str) -> tuple[list[PoolEndpoint], tuple[str, ...]]:
    """(the ready decode pods the pool selects, sorted by name; the model names its servers serve). The served name
    is the owning LLMInferenceService's `spec.model.name` (vLLM's --served-model-name in KServe's preset)."""
    pool = reader.get(POOL_API, POOL_KIND, namespace, name)
    if pool is None:
        return [], ()
    selector = (_spec(pool).get("selector") or {}).get("matchLabels") or {}
    port = next((int(p.get("number", 0)) for p in _spec(pool).get("targetPorts") or []), 0)
    endpoints = []
    for pod in reader.list("v1", "Pod", namespace):
        labels = _meta(pod).get("labels") or {}
        if not selector or any(labels.get(key) != value for key, value in selector.items()):
            continue
        if labels.get(ROLE_LABEL) == "prefill":
            continue
        status = pod.get("status") or {}
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
        if ready and status.get("podIP"):
            endpoints.append(PoolEndpoint(str(_meta(pod).get("name")), str(status["podIP"]), port))
    owner = next(
        (ref for ref in _meta(pool).get("ownerReferences") or [] if ref.get("kind") == "LLMInferenceService"), None
    )
    served: tuple[str, ...] = ()
    if owner is not None:
        service = reader.get(LLMISVC_API, "LLMInferenceService", namespace, str(owner.get("name", "")))
        if service is not None:
            served = (str((_spec(service).get("model") or {}).get("name") or owner.get("name")),)
    return sorted(endpoints, key=lambda endpoint: endpoint.pod), served


def pool_model_rewrite(reader: StoreReader, namespace: str, pool: str, model: str) -> str | None:
    """The model an InferenceModelRewrite of the pool turns `model` into (its first, heaviest target), if any; the
    oldest rewrite wins a tie between rewrites."""
    rewrites = [
        item for item in reader.list(LLMD_API, "InferenceModelRewrite", namespace)
        if (_spec(item).get("poolRef") or {}).get("name") == pool
    ]  # fmt: skip
    for rewrite in sorted(rewrites, key=_age_key):
        for rule in _spec(rewrite).get("rules") or []:
            matched = any(((match.get("model") or {}).get("value")) == model for match in rule.get("matches") or [])
            targets = rule.get("targets") or []
            if matched and targets:
                best = max(targets, key=lambda target: int(target.get("weight", 1)))
                return str(best.get("modelRewrite", model))
    return None


def backend_auth_headers(reader: StoreReader, backend: ResolvedBackend) -> dict[str, str]:
    """The credential header the BackendSecurityPolicy targeting this AIServiceBackend injects upstream (the AI
    Gateway's backendauth handlers); {} without a policy; BackendUnavailable when its Secret or key is missing."""
    namespace, name = backend.ref.namespace, backend.ref.name
    policies = [
        policy
        for policy in reader.list(AIGW_API, "BackendSecurityPolicy", namespace)
        if any(
            ref.get("kind") == backend.ref.kind and ref.get("name") == name
            for ref in _spec(policy).get("targetRefs") or []
        )
    ]
    if not policies:
        return {}
    spec = _spec(min(policies, key=_age_key))
    kind = spec.get("type")

    def read(field_name: str, data_key: str) -> str:
        secret_ref = ((spec.get(field_name) or {}).get("secretRef")) or {}
        value = secret_value(
            reader, str(secret_ref.get("namespace") or namespace), str(secret_ref.get("name", "")), data_key
        )
        if value is None:
            raise BackendUnavailable(f"secret {secret_ref.get('name')} does not contain key {data_key}")
        return value.strip()

    if kind == "APIKey":
        return {"authorization": f"Bearer {read('apiKey', 'apiKey')}"}
    if kind == "AnthropicAPIKey":
        return {"x-api-key": read("anthropicAPIKey", "apiKey")}
    if kind == "AzureAPIKey":
        return {"api-key": read("azureAPIKey", "apiKey")}
    if kind == "AWSCredentials":
        aws = spec.get("awsCredentials") or {}
        if aws.get("credentialsFile"):
            secret_ref = (aws["credentialsFile"].get("secretRef")) or {}
            if (
                secret_value(
                    reader,
                    str(secret_ref.get("namespace") or namespace),
                    str(secret_ref.get("name", "")),
                    "credentials",
                )
                is None
            ):
                raise BackendUnavailable(f"secret {secret_ref.get('name')} does not contain key credentials")
            return {"authorization": "AWS4-HMAC-SHA256 Credential=sandbox/sigv4"}
        return {}  # the default AWS credential chain finds nothing in the sandbox: the request goes unsigned
    logger.info("sandbox gateway: BackendSecurityPolicy type %r is not modelled; no credential injected", kind)
    return {}
