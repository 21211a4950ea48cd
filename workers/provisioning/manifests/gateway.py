"""One cluster's aggregate gateway policy, rendered whole from a GatewayPolicySpec, in apply order.

Facts from shared/reference/serving-and-gateway.md: one SecurityPolicy and one BackendTrafficPolicy per target
(they do not merge; the oldest wins), so every team is in the same two objects (sections 4.1, 3.5); apiKeyAuth
Secrets map client id -> key, and one key value under two client ids invalidates the whole policy, so each
issued key has its own client id '<team>.<key_id>'; forwardClientIDHeader is overwritten by Envoy, so it cannot
be forged; token limits are charged after the response from the llm_total_token metadata, with `shared: true`
for one team bucket across routes; `requests: 0` is a blocking rule (EG 1.9); at most 256 rules per policy and
15 rules per AIGatewayRoute (one slot reserved by the controller), rule names unique within a route. Limits are
never silent truncation: an object that would break one is withheld and named in the render's problems, while
everything else (the keys above all: revocations, expiry and suspension) still converges.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

from portal.gateway.contracts import (
    MAX_RATE_LIMIT_RULES,
    GatewayPolicySpec,
    ManagedModelRoute,
    ProviderBackendSpec,
    TeamGatewayAccess,
)
from workers.provisioning.manifests.bootstrap import build_bootstrap_objects, gateway_patch
from workers.provisioning.manifests.labels import COMPONENT_KEY, MANAGED_BY, MANAGED_BY_KEY, TEAM_KEY
from workers.provisioning.manifests.upstream import (
    AIGW_API_VERSION,
    CLIENT_ID_HEADER,
    EG_API_VERSION,
    METADATA_NAMESPACE,
    MODEL_HEADER,
    REQUEST_TIMEOUT,
    ROUTE_TOKEN_COSTS,
)

Manifest = dict[str, Any]
COMPONENT = "gateway-policy"
SECURITY_POLICY_NAME = "genai-portal-api-keys"
CLIENT_TRAFFIC_POLICY_NAME = "genai-portal-client-headers"
TRAFFIC_POLICY_NAME = "genai-portal-token-limits"
MANAGED_ROUTE_PREFIX = "genai-portal-managed"
EMPTY_KEYS_SECRET = "genai-portal-keys-none"
KEY_ID_PATTERN = "[0-9a-f]+"

# Upstream limits (EG 1.9, AI Gateway 1.1 CRDs).
MAX_ROUTE_RULES = 14  # 15 per AIGatewayRoute, one reserved for the controller's catch-all
MAX_HEADER_VALUE = 1024  # rate-limit header match value
MAX_ROUTE_HEADER_VALUE = 4096  # AIGatewayRoute header match value
MAX_RATE_LIMIT_REQUESTS = 4294967295  # uint32

# Provider -> (AIServiceBackend schema, BackendSecurityPolicy type, its sub-object, Secret data key).
PROVIDER_SCHEMAS: dict[str, tuple[dict[str, str], str, str, str]] = {
    "openai": ({"name": "OpenAI", "prefix": "/v1"}, "APIKey", "apiKey", "apiKey"),
    "anthropic": ({"name": "Anthropic"}, "AnthropicAPIKey", "anthropicAPIKey", "apiKey"),
    "azure-openai": ({"name": "AzureOpenAI"}, "AzureAPIKey", "azureAPIKey", "apiKey"),
    "aws-bedrock": ({"name": "AWSBedrock"}, "AWSCredentials", "awsCredentials", "credentials"),
}


class GatewayPolicyTooLarge(ValueError):
    """The desired policy breaks an upstream limit; the message names the limit and what exceeded it."""


@dataclass(frozen=True)
class GatewayPolicyRender:
    """A cluster's gateway policy as far as it can be rendered: the objects to apply, in apply order; the
    upstream limits it breaks (empty when whole); and the (kind, name) of objects withheld because of them,
    whose live copies are kept (neither applied nor pruned) rather than replaced by a truncated version."""

    objects: list[Manifest]
    problems: tuple[str, ...] = ()
    withheld: tuple[tuple[str, str], ...] = field(default=())


def policy_labels(team_slug: str | None = None) -> dict[str, str]:
    labels = {MANAGED_BY_KEY: MANAGED_BY, COMPONENT_KEY: COMPONENT}
    if team_slug:
        labels[TEAM_KEY] = team_slug
    return labels


def policy_selector() -> str:
    return f"{MANAGED_BY_KEY}={MANAGED_BY},{COMPONENT_KEY}={COMPONENT}"


def _dns_name(name: str) -> str:
    if len(name) <= 63:
        return name
    return f"{name[:54]}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def team_secret_name(team_slug: str) -> str:
    return _dns_name(f"genai-portal-keys-{team_slug}")


def provider_object_name(backend_name: str) -> str:
    return _dns_name(f"genai-portal-provider-{backend_name}")


def provider_secret_name(backend_name: str) -> str:
    return _dns_name(f"genai-portal-provider-{backend_name}-credential")


def team_client_id_regex(team_slug: str) -> str:
    return f"^{team_slug}\\.{KEY_ID_PATTERN}$"


def allowed_client_id_regex(allowed: tuple[tuple[str, tuple[str, ...] | None], ...]) -> str:
    """One RE2 pattern for the client ids allowed to call a model: whole teams, or listed keys of a team."""
    parts = []
    for team_slug, key_ids in allowed:
        if key_ids is None:
            parts.append(f"{team_slug}\\.{KEY_ID_PATTERN}")
        elif len(key_ids) == 1:
            parts.append(f"{team_slug}\\.{key_ids[0]}")
        else:
            parts.append(f"{team_slug}\\.({'|'.join(key_ids)})")
    return f"^({'|'.join(parts)})$"


def _b64(value: str) -> str:
    """Secret values go in `data`, base64: server-side apply tracks `data` keys, so a key the portal stops
    applying is removed (keys written through `stringData` are not reliably removed by apply)."""
    return base64.b64encode(value.encode()).decode()


def _gateway_ref(spec: GatewayPolicySpec) -> dict[str, str]:
    return {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": spec.cluster.gateway_name}


def _metadata(spec: GatewayPolicySpec, name: str, team_slug: str | None = None) -> dict[str, Any]:
    return {"name": name, "namespace": spec.cluster.gateway_namespace, "labels": policy_labels(team_slug)}


# ---------------------------------------------------------------------------------------------- credentials


def build_team_secret(spec: GatewayPolicySpec, team: TeamGatewayAccess) -> Manifest:
    """The team's keys for apiKeyAuth: each entry is a client id and the key it authenticates."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _metadata(spec, team_secret_name(team.team_slug), team.team_slug),
        "type": "Opaque",
        "data": {key.client_id: _b64(key.key) for key in sorted(team.keys, key=lambda item: item.client_id)},
    }


def build_empty_keys_secret(spec: GatewayPolicySpec) -> Manifest:
    """With no team keys at all the policy still references a Secret: no key is valid, every request is 401."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _metadata(spec, EMPTY_KEYS_SECRET),
        "type": "Opaque",
        "data": {},
    }


def build_security_policy(spec: GatewayPolicySpec, secret_names: list[str]) -> Manifest:
    return {
        "apiVersion": EG_API_VERSION,
        "kind": "SecurityPolicy",
        "metadata": _metadata(spec, SECURITY_POLICY_NAME),
        "spec": {
            "targetRefs": [_gateway_ref(spec)],
            "apiKeyAuth": {
                "credentialRefs": [{"group": "", "kind": "Secret", "name": name} for name in secret_names],
                "extractFrom": [{"headers": ["authorization"]}, {"headers": ["x-api-key"]}],
                "forwardClientIDHeader": CLIENT_ID_HEADER,
                "sanitize": True,
            },
        },
    }


def build_client_traffic_policy(spec: GatewayPolicySpec) -> Manifest:
    """Strip a client-sent x-portal-client-id before anything reads it (routing, rate limits, the access log):
    only apiKeyAuth's forwardClientIDHeader sets it, after a key matched (reference section 4.2)."""
    return {
        "apiVersion": EG_API_VERSION,
        "kind": "ClientTrafficPolicy",
        "metadata": _metadata(spec, CLIENT_TRAFFIC_POLICY_NAME),
        "spec": {
            "targetRefs": [_gateway_ref(spec)],
            "headers": {"earlyRequestHeaders": {"remove": [CLIENT_ID_HEADER]}},
        },
    }


# ---------------------------------------------------------------------------------------------- token limits


def _token_cost() -> dict[str, Any]:
    return {
        "request": {"from": "Number", "number": 0},
        "response": {"from": "Metadata", "metadata": {"namespace": METADATA_NAMESPACE, "key": "llm_total_token"}},
    }


def _team_selector(team_slug: str) -> list[dict[str, Any]]:
    return [
        {"headers": [{"name": CLIENT_ID_HEADER, "type": "RegularExpression", "value": team_client_id_regex(team_slug)}]}
    ]


def _limit(requests: int, unit: str) -> dict[str, Any]:
    return {"requests": requests, "unit": unit}


def _model_names_regex(names: tuple[str, ...]) -> str:
    escaped = ["".join(f"\\{char}" if char in ".+*?()[]{}|^$\\" else char for char in name) for name in names]
    return f"^({'|'.join(escaped)})$"


def build_rate_limit_rules(
    spec: GatewayPolicySpec, *, max_rules: int = MAX_RATE_LIMIT_RULES, problems: list[str] | None = None
) -> list[dict[str, Any]]:
    """Blocking rules first (suspended teams, budget blocks, models a restricted key may not call), then each
    team's tokens per minute and per day, one shared bucket per team across every route.

    A team's limit above what the gateway can hold (a uint32) is held at that maximum and named in `problems`:
    one team's value never withholds every other team's limits (the API refuses such values; older rows may
    hold one)."""
    rules: list[dict[str, Any]] = []
    for team in spec.teams:
        if team.blocked_reason:
            rules.append(
                {"clientSelectors": _team_selector(team.team_slug), "limit": _limit(0, "Minute"), "shared": True}
            )
    for team in spec.teams:
        if team.blocked_reason:
            continue
        for key in team.keys:
            if key.allowed_model_names is None:
                continue
            headers: list[dict[str, Any]] = [{"name": CLIENT_ID_HEADER, "type": "Exact", "value": key.client_id}]
            if key.allowed_model_names:
                pattern = _model_names_regex(key.allowed_model_names)
                if len(pattern) > MAX_HEADER_VALUE:
                    raise GatewayPolicyTooLarge(
                        f"the model allow-list of key {key.client_id} is {len(pattern)} characters as a pattern; "
                        f"the limit of a rate-limit header match is {MAX_HEADER_VALUE}"
                    )
                headers.append({"name": MODEL_HEADER, "type": "RegularExpression", "value": pattern, "invert": True})
            rules.append({"clientSelectors": [{"headers": headers}], "limit": _limit(0, "Minute")})
    for team in spec.teams:
        if team.blocked_reason:
            continue
        for requests, unit in ((team.tokens_per_minute, "Minute"), (team.tokens_per_day, "Day")):
            if requests > MAX_RATE_LIMIT_REQUESTS:
                if problems is not None:
                    problems.append(
                        f"team {team.team_slug}: a token limit of {requests} per {unit.lower()} exceeds the gateway's "
                        f"maximum of {MAX_RATE_LIMIT_REQUESTS}; that maximum is applied"
                    )
                requests = MAX_RATE_LIMIT_REQUESTS
            rules.append(
                {
                    "clientSelectors": _team_selector(team.team_slug),
                    "limit": _limit(requests, unit),
                    "shared": True,
                    "cost": _token_cost(),
                }
            )
    if len(rules) > max_rules:
        raise GatewayPolicyTooLarge(
            f"the token-limit policy needs {len(rules)} rules for {len(spec.teams)} teams; a BackendTrafficPolicy "
            f"holds at most {max_rules} rules"
        )
    return rules


def build_traffic_policy(spec: GatewayPolicySpec, rules: list[dict[str, Any]]) -> Manifest:
    return {
        "apiVersion": EG_API_VERSION,
        "kind": "BackendTrafficPolicy",
        "metadata": _metadata(spec, TRAFFIC_POLICY_NAME),
        "spec": {"targetRefs": [_gateway_ref(spec)], "rateLimit": {"global": {"rules": rules}}},
    }


# ---------------------------------------------------------------------------------------------- providers


def build_provider_objects(spec: GatewayPolicySpec, provider: ProviderBackendSpec) -> list[Manifest]:
    """Backend (TLS to the provider), its Secret, the AIServiceBackend with the provider's schema, and the
    BackendSecurityPolicy that injects the upstream credential."""
    schema, policy_type, policy_field, secret_key = PROVIDER_SCHEMAS[provider.provider]
    name = provider_object_name(provider.name)
    schema = dict(schema)
    if provider.provider == "azure-openai" and provider.api_version:
        schema["version"] = provider.api_version
    objects: list[Manifest] = []
    secret_ref = {"name": provider_secret_name(provider.name)}
    if provider.credential:
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": _metadata(spec, provider_secret_name(provider.name)),
                "type": "Opaque",
                "data": {secret_key: _b64(provider.credential)},
            }
        )
    objects.append(
        {
            "apiVersion": EG_API_VERSION,
            "kind": "Backend",
            "metadata": _metadata(spec, name),
            "spec": {
                "endpoints": [{"fqdn": {"hostname": provider.hostname, "port": provider.port}}],
                "tls": {"sni": provider.hostname, "wellKnownCACertificates": "System"},
            },
        }
    )
    objects.append(
        {
            "apiVersion": AIGW_API_VERSION,
            "kind": "AIServiceBackend",
            "metadata": _metadata(spec, name),
            "spec": {
                "schema": schema,
                "backendRef": {"group": "gateway.envoyproxy.io", "kind": "Backend", "name": name},
            },
        }
    )
    credentials: dict[str, Any]
    if provider.provider == "aws-bedrock":
        credentials = {"region": provider.region}
        if provider.credential:
            credentials["credentialsFile"] = {"secretRef": secret_ref}
    else:
        credentials = {"secretRef": secret_ref}
    objects.append(
        {
            "apiVersion": AIGW_API_VERSION,
            "kind": "BackendSecurityPolicy",
            "metadata": _metadata(spec, name),
            "spec": {
                "type": policy_type,
                policy_field: credentials,
                "targetRefs": [{"group": "aigateway.envoyproxy.io", "kind": "AIServiceBackend", "name": name}],
            },
        }
    )
    return objects


_RULE_NAME_UNSAFE = re.compile(r"[^a-z0-9]+")
RESERVED_RULE_NAME = "route-not-found"


def managed_rule_name(served_model_name: str) -> str:
    """The route rule's name: the served model name (unique among managed routes) as a DNS label; when that is
    not the name itself (case, dots, slashes, length) or is reserved, a short hash of the name keeps it unique."""
    label = _RULE_NAME_UNSAFE.sub("-", served_model_name.lower()).strip("-")
    if label == served_model_name and len(label) <= 63 and label != RESERVED_RULE_NAME:
        return label
    digest = hashlib.sha256(served_model_name.encode()).hexdigest()[:8]
    return f"{label[:54].rstrip('-')}-{digest}" if label else f"model-{digest}"


def _managed_rule(route: ManagedModelRoute) -> dict[str, Any]:
    pattern = allowed_client_id_regex(route.allowed)
    if len(pattern) > MAX_ROUTE_HEADER_VALUE:
        raise GatewayPolicyTooLarge(
            f"the client-id allow-list of model {route.served_model_name} is {len(pattern)} characters as a pattern; "
            f"the limit of an AIGatewayRoute header match is {MAX_ROUTE_HEADER_VALUE}"
        )
    return {
        "name": managed_rule_name(route.served_model_name),
        "matches": [
            {
                "headers": [
                    {"type": "Exact", "name": MODEL_HEADER, "value": route.served_model_name},
                    {"type": "RegularExpression", "name": CLIENT_ID_HEADER, "value": pattern},
                ]
            }
        ],
        "backendRefs": [
            {
                "name": provider_object_name(route.backend_name),
                "weight": 1,
                "modelNameOverride": route.provider_model_id,
            }
        ],
        "timeouts": {"request": REQUEST_TIMEOUT},
    }


def build_managed_routes(spec: GatewayPolicySpec, problems: list[str] | None = None) -> list[Manifest]:
    """Managed models as AIGatewayRoutes of at most 14 rules each; a model nobody may call gets no rule. With
    `problems`, a model whose rule breaks a limit gets no rule (nobody reaches it) and the problem is added;
    without, it raises GatewayPolicyTooLarge."""
    rules = []
    for route in spec.managed_routes:
        if not route.allowed:
            continue
        try:
            rules.append(_managed_rule(route))
        except GatewayPolicyTooLarge as error:
            if problems is None:
                raise
            problems.append(str(error))
    routes = []
    for index in range(0, len(rules), MAX_ROUTE_RULES):
        routes.append(
            {
                "apiVersion": AIGW_API_VERSION,
                "kind": "AIGatewayRoute",
                "metadata": _metadata(spec, f"{MANAGED_ROUTE_PREFIX}-{index // MAX_ROUTE_RULES}"),
                "spec": {
                    "parentRefs": [_gateway_ref(spec)],
                    "rules": rules[index : index + MAX_ROUTE_RULES],
                    "llmRequestCosts": [{"metadataKey": key, "type": kind} for key, kind in ROUTE_TOKEN_COSTS],
                },
            }
        )
    return routes


# ---------------------------------------------------------------------------------------------- whole policy


def render_gateway_policy(
    spec: GatewayPolicySpec,
    *,
    collector: str = "",
    max_rate_limit_rules: int = MAX_RATE_LIMIT_RULES,
    without_blocked_teams_keys: bool = False,
) -> GatewayPolicyRender:
    """Every object of the cluster's gateway policy, in apply order:

    1. the ClientTrafficPolicy stripping a client-sent client id, so no route ever matches a forgeable header;
    2. the token limits and blocking rules (suspended teams, budget blocks, restricted keys): a block is live
       before any key it holds back, so a pass that fails part-way never leaves a blocked team's new key working
       while its block is not (a refused pass stops where it was refused);
    3. the team key Secrets and the SecurityPolicy that reads them;
    4. the bootstrap objects, provider credentials and backends, and the managed-model routes.

    The keys never wait for the rest: when the token-limit policy breaks an upstream limit it is withheld (its
    live copy stays) and named in `problems`, and keys of blocked teams are then left out of the Secrets, since
    no blocking rule can reach the gateway for them. `without_blocked_teams_keys` leaves them out too: the
    reconciler's render when the cluster refused the token-limit policy, so revocations still converge."""
    problems: list[str] = []
    withheld: list[tuple[str, str]] = []
    traffic_policy: Manifest | None = None
    try:
        rules = build_rate_limit_rules(spec, max_rules=max_rate_limit_rules, problems=problems)
    except GatewayPolicyTooLarge as error:
        problems.append(str(error))
        withheld.append(("BackendTrafficPolicy", TRAFFIC_POLICY_NAME))
    else:
        traffic_policy = build_traffic_policy(spec, rules) if rules else None
    blocks_applied = not withheld and not without_blocked_teams_keys
    teams_with_keys = [team for team in spec.teams if team.keys and (blocks_applied or not team.blocked_reason)]
    secrets = [build_team_secret(spec, team) for team in teams_with_keys] or [build_empty_keys_secret(spec)]
    objects: list[Manifest] = [build_client_traffic_policy(spec)]
    if traffic_policy is not None:
        objects.append(traffic_policy)
    objects.extend(secrets)
    objects.append(build_security_policy(spec, [secret["metadata"]["name"] for secret in secrets]))
    if spec.cluster.apply_gateway_bootstrap:
        objects.extend(build_bootstrap_objects(spec.cluster, collector=collector))
        # Bind them to the Gateway (its GatewayConfig annotation and infrastructure.parametersRef), or they do
        # nothing: server-side apply owns just those fields; the platform team keeps the rest of its Gateway.
        objects.append(gateway_patch(spec.cluster))
    for provider in sorted(spec.providers, key=lambda item: item.name):
        objects.extend(build_provider_objects(spec, provider))
    objects.extend(build_managed_routes(spec, problems))
    return GatewayPolicyRender(objects=objects, problems=tuple(problems), withheld=tuple(withheld))


def build_gateway_policy_objects(
    spec: GatewayPolicySpec, *, collector: str = "", max_rate_limit_rules: int = MAX_RATE_LIMIT_RULES
) -> list[Manifest]:
    """The whole policy in apply order (see render_gateway_policy); raises GatewayPolicyTooLarge, naming the
    limit, when any upstream limit would be broken."""
    rendered = render_gateway_policy(spec, collector=collector, max_rate_limit_rules=max_rate_limit_rules)
    if rendered.problems:
        raise GatewayPolicyTooLarge("; ".join(rendered.problems))
    return rendered.objects
