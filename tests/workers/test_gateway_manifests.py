"""The gateway-policy builders: every object validates against the upstream CRDs (CEL rules included), the
per-team limits and blocking rules are rendered as specified, keys reach only Secrets, managed models route to
their provider with the model id override, and upstream limits are errors that name the limit."""

from __future__ import annotations

import base64
import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest

from portal.gateway.contracts import (
    GatewayKey,
    GatewayPolicySpec,
    ManagedModelRoute,
    ProviderBackendSpec,
    TeamGatewayAccess,
)
from tests.workers.conftest import GPU_EU_CLUSTER
from workers.provisioning.manifests import bootstrap, upstream
from workers.provisioning.manifests.gateway import (
    GatewayPolicyTooLarge,
    allowed_client_id_regex,
    build_gateway_policy_objects,
    build_rate_limit_rules,
    managed_rule_name,
    render_gateway_policy,
)
from workers.sandbox.server import PORTAL_CRD_KINDS
from workers.sandbox.validation import CrdRegistry

CLUSTER = GPU_EU_CLUSTER

ALPHA_KEYS = (
    GatewayKey(client_id="alpha.aaaaaaaaaaaa", key_id="aaaaaaaaaaaa", key="gpk_aaaaaaaaaaaa_secret-one"),
    GatewayKey(
        client_id="alpha.bbbbbbbbbbbb",
        key_id="bbbbbbbbbbbb",
        key="gpk_bbbbbbbbbbbb_secret-two",
        allowed_model_names=("gpt-4o-mini",),
    ),
)


def make_spec(**overrides: Any) -> GatewayPolicySpec:
    spec = GatewayPolicySpec(
        policy_id=7,
        generation=3,
        cluster=CLUSTER,
        teams=(
            TeamGatewayAccess(team_slug="alpha", keys=ALPHA_KEYS, tokens_per_minute=100000, tokens_per_day=10000000),
            TeamGatewayAccess(
                team_slug="beta",
                keys=(GatewayKey(client_id="beta.cccccccccccc", key_id="cccccccccccc", key="gpk_cccccccccccc_three"),),
                tokens_per_minute=1000,
                tokens_per_day=50000,
                throttled=True,
            ),
            TeamGatewayAccess(
                team_slug="gamma",
                keys=(GatewayKey(client_id="gamma.dddddddddddd", key_id="dddddddddddd", key="gpk_dddddddddddd_four"),),
                tokens_per_minute=100,
                tokens_per_day=1000,
                blocked_reason="suspended",
            ),
        ),
        providers=(
            ProviderBackendSpec("openai", "openai", "api.openai.com", 443, "", "", credential="sk-openai-upstream"),
            ProviderBackendSpec("claude", "anthropic", "api.anthropic.com", 443, "", "", credential="sk-ant-upstream"),
            ProviderBackendSpec(
                "azure", "azure-openai", "corp.openai.azure.com", 443, "", "2024-10-21", credential="az"
            ),
            ProviderBackendSpec(
                "bedrock", "aws-bedrock", "bedrock-runtime.us-east-1.amazonaws.com", 443, "us-east-1", ""
            ),
        ),
        managed_routes=(
            ManagedModelRoute(
                model_slug="gpt-4o-mini",
                served_model_name="gpt-4o-mini",
                provider_model_id="gpt-4o-mini-2024-07-18",
                backend_name="openai",
                allowed=(("alpha", None), ("beta", None)),
            ),
            ManagedModelRoute(
                model_slug="claude-sonnet",
                served_model_name="claude-sonnet",
                provider_model_id="claude-sonnet-4-5-20250929",
                backend_name="claude",
                allowed=(("alpha", ("aaaaaaaaaaaa",)),),
            ),
            ManagedModelRoute(
                model_slug="nobody-model",
                served_model_name="nobody-model",
                provider_model_id="x",
                backend_name="openai",
                allowed=(),
            ),
        ),
    )
    return dataclasses.replace(spec, **overrides)


@pytest.fixture(scope="module")
def registry(crd_dir: Path) -> CrdRegistry:
    loaded = CrdRegistry()
    loaded.load_dir(crd_dir, kinds=PORTAL_CRD_KINDS)  # the sandbox's: a kind outside it has no CRD here
    return loaded


# The platform team's Gateway, onto which the bootstrap's partial apply configuration is merged.
PLATFORM_GATEWAY = {
    "spec": {
        "gatewayClassName": "envoy-ai-gateway",
        "listeners": [{"name": "http", "protocol": "HTTP", "port": 80}],
    }
}


def assert_valid(registry: CrdRegistry, manifest: dict[str, Any]) -> None:
    if manifest["kind"] == "Gateway":  # a partial apply configuration: valid once merged onto the live Gateway
        manifest = {**manifest, "spec": {**PLATFORM_GATEWAY["spec"], **manifest["spec"]}}
    info = registry.by_kind(manifest["apiVersion"], manifest["kind"])
    assert info is not None, f"no CRD for {manifest['apiVersion']} {manifest['kind']}"
    version = manifest["apiVersion"].split("/")[1]
    validated, causes, _ = registry.validator(info.group, version, info.plural).validate(manifest, strict=True)
    assert causes == [], f"{manifest['kind']} {manifest['metadata']['name']}: {causes}"
    for key in manifest["spec"]:
        assert validated["spec"][key] is not None


def _decoded(secret: dict[str, Any]) -> dict[str, str]:
    return {name: base64.b64decode(value).decode() for name, value in secret["data"].items()}


def _by(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [item for item in objects if item["kind"] == kind]


VARIANTS = {
    "full": {},
    "no-teams": {"teams": (), "managed_routes": ()},
    "no-bootstrap": {"cluster": dataclasses.replace(CLUSTER, apply_gateway_bootstrap=False)},
    "no-providers": {"providers": (), "managed_routes": ()},
}


@pytest.mark.parametrize("variant", VARIANTS, ids=list(VARIANTS))
def test_every_gateway_object_validates_against_its_crd(registry: CrdRegistry, variant: str) -> None:
    objects = build_gateway_policy_objects(
        make_spec(**VARIANTS[variant]), collector="otel-collector.observability:4317"
    )
    custom = [item for item in objects if item["apiVersion"] != "v1"]
    assert custom
    for manifest in custom:
        assert_valid(registry, manifest)
    for secret in _by(objects, "Secret"):
        assert secret["type"] == "Opaque"
        assert all(re.fullmatch(r"[-._a-zA-Z0-9]+", name) for name in secret["data"])
    for manifest in objects:
        if manifest["kind"] == "Gateway":
            # The platform team's object: never labelled as the portal's, so never listed for pruning.
            assert "labels" not in manifest["metadata"]
            continue
        assert manifest["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "genai-portal"


def test_cel_rules_refuse_a_broken_policy(registry: CrdRegistry) -> None:
    """The same validator refuses what the CRD's CEL forbids, so the test above cannot pass vacuously."""
    objects = build_gateway_policy_objects(make_spec())
    policy = _by(objects, "BackendSecurityPolicy")[0]
    policy["spec"]["type"] = "AWSCredentials"  # CEL: the matching sub-object must be set
    info = registry.by_kind(policy["apiVersion"], policy["kind"])
    assert info is not None
    _, causes, _ = registry.validator(info.group, "v1beta1", info.plural).validate(policy, strict=True)
    assert causes


def test_security_policy_reads_every_team_secret_and_forwards_the_client_id() -> None:
    objects = build_gateway_policy_objects(make_spec())
    [policy] = _by(objects, "SecurityPolicy")
    auth = policy["spec"]["apiKeyAuth"]
    assert policy["spec"]["targetRefs"] == [
        {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "ai-gateway"}
    ]
    assert [ref["name"] for ref in auth["credentialRefs"]] == [
        "genai-portal-keys-alpha",
        "genai-portal-keys-beta",
        "genai-portal-keys-gamma",
    ]
    assert auth["forwardClientIDHeader"] == upstream.CLIENT_ID_HEADER == "x-portal-client-id"
    assert auth["sanitize"] is True
    assert auth["extractFrom"] == [{"headers": ["authorization"]}, {"headers": ["x-api-key"]}]
    secrets = {item["metadata"]["name"]: _decoded(item) for item in _by(objects, "Secret")}
    assert secrets["genai-portal-keys-alpha"] == {
        "alpha.aaaaaaaaaaaa": "gpk_aaaaaaaaaaaa_secret-one",
        "alpha.bbbbbbbbbbbb": "gpk_bbbbbbbbbbbb_secret-two",
    }
    # Keys appear in their team's Secret only, nowhere else in the policy.
    text = repr([item for item in objects if item["kind"] != "Secret"])
    for team in make_spec().teams:
        for key in team.keys:
            assert key.key not in text
    assert "gpk_" not in repr(make_spec())


def test_no_keys_means_no_access_not_an_open_gateway() -> None:
    objects = build_gateway_policy_objects(make_spec(teams=(), managed_routes=()))
    [policy] = _by(objects, "SecurityPolicy")
    assert [ref["name"] for ref in policy["spec"]["apiKeyAuth"]["credentialRefs"]] == ["genai-portal-keys-none"]
    [empty] = [item for item in _by(objects, "Secret") if item["metadata"]["name"] == "genai-portal-keys-none"]
    assert empty["data"] == {}
    assert _by(objects, "BackendTrafficPolicy") == []


def test_token_limits_and_blocking_rules_are_rendered_as_specified() -> None:
    rules = build_rate_limit_rules(make_spec())
    cost = {
        "request": {"from": "Number", "number": 0},
        "response": {"from": "Metadata", "metadata": {"namespace": "io.envoy.ai_gateway", "key": "llm_total_token"}},
    }

    def team(slug: str) -> list[dict[str, Any]]:
        return [
            {"headers": [{"name": "x-portal-client-id", "type": "RegularExpression", "value": f"^{slug}\\.[0-9a-f]+$"}]}
        ]

    assert rules == [
        # the suspended team: a blocking rule, and no limits
        {"clientSelectors": team("gamma"), "limit": {"requests": 0, "unit": "Minute"}, "shared": True},
        # a restricted key: every model outside its allow-list is blocked
        {
            "clientSelectors": [
                {
                    "headers": [
                        {"name": "x-portal-client-id", "type": "Exact", "value": "alpha.bbbbbbbbbbbb"},
                        {
                            "name": "x-ai-eg-model",
                            "type": "RegularExpression",
                            "value": "^(gpt-4o-mini)$",
                            "invert": True,
                        },
                    ]
                }
            ],
            "limit": {"requests": 0, "unit": "Minute"},
        },
        {
            "clientSelectors": team("alpha"),
            "limit": {"requests": 100000, "unit": "Minute"},
            "shared": True,
            "cost": cost,
        },
        {
            "clientSelectors": team("alpha"),
            "limit": {"requests": 10000000, "unit": "Day"},
            "shared": True,
            "cost": cost,
        },
        {"clientSelectors": team("beta"), "limit": {"requests": 1000, "unit": "Minute"}, "shared": True, "cost": cost},
        {"clientSelectors": team("beta"), "limit": {"requests": 50000, "unit": "Day"}, "shared": True, "cost": cost},
    ]
    assert re.fullmatch(team("alpha")[0]["headers"][0]["value"], "alpha.0123abcd")
    assert not re.fullmatch(team("alpha")[0]["headers"][0]["value"], "alpha-two.0123abcd")


def test_budget_block_renders_the_blocking_rule_too() -> None:
    spec = make_spec()
    blocked = dataclasses.replace(spec.teams[0], blocked_reason="budget")
    rules = build_rate_limit_rules(dataclasses.replace(spec, teams=(blocked, *spec.teams[1:])))
    alpha = [rule for rule in rules if "alpha" in repr(rule["clientSelectors"])]
    assert alpha == [
        {
            "clientSelectors": [
                {
                    "headers": [
                        {"name": "x-portal-client-id", "type": "RegularExpression", "value": "^alpha\\.[0-9a-f]+$"}
                    ]
                }
            ],
            "limit": {"requests": 0, "unit": "Minute"},
            "shared": True,
        }
    ]


def test_managed_routes_restrict_clients_and_override_the_provider_model_id() -> None:
    objects = build_gateway_policy_objects(make_spec())
    [route] = [
        item for item in _by(objects, "AIGatewayRoute") if item["metadata"]["name"].startswith("genai-portal-managed")
    ]
    rules = {rule["name"]: rule for rule in route["spec"]["rules"]}
    assert set(rules) == {"gpt-4o-mini", "claude-sonnet"}  # nobody may call nobody-model: no rule
    gpt = rules["gpt-4o-mini"]
    assert gpt["backendRefs"] == [
        {"name": "genai-portal-provider-openai", "weight": 1, "modelNameOverride": "gpt-4o-mini-2024-07-18"}
    ]
    headers = gpt["matches"][0]["headers"]
    assert headers[0] == {"type": "Exact", "name": "x-ai-eg-model", "value": "gpt-4o-mini"}
    pattern = headers[1]["value"]
    assert re.fullmatch(pattern, "alpha.aaaaaaaaaaaa")
    assert re.fullmatch(pattern, "beta.cccccccccccc")
    assert not re.fullmatch(pattern, "gamma.dddddddddddd")
    claude = rules["claude-sonnet"]["matches"][0]["headers"][1]["value"]
    assert re.fullmatch(claude, "alpha.aaaaaaaaaaaa")
    assert not re.fullmatch(claude, "alpha.bbbbbbbbbbbb")


def test_provider_objects_by_provider() -> None:
    objects = build_gateway_policy_objects(make_spec())
    schemas = {item["metadata"]["name"]: item["spec"]["schema"] for item in _by(objects, "AIServiceBackend")}
    assert schemas == {
        "genai-portal-provider-azure": {"name": "AzureOpenAI", "version": "2024-10-21"},
        "genai-portal-provider-bedrock": {"name": "AWSBedrock"},
        "genai-portal-provider-claude": {"name": "Anthropic"},
        "genai-portal-provider-openai": {"name": "OpenAI", "prefix": "/v1"},
    }
    policies = {item["metadata"]["name"]: item["spec"] for item in _by(objects, "BackendSecurityPolicy")}
    assert policies["genai-portal-provider-openai"]["apiKey"] == {
        "secretRef": {"name": "genai-portal-provider-openai-credential"}
    }
    assert policies["genai-portal-provider-claude"]["type"] == "AnthropicAPIKey"
    assert policies["genai-portal-provider-azure"]["type"] == "AzureAPIKey"
    assert policies["genai-portal-provider-bedrock"] == {
        "type": "AWSCredentials",
        "awsCredentials": {"region": "us-east-1"},
        "targetRefs": [
            {"group": "aigateway.envoyproxy.io", "kind": "AIServiceBackend", "name": "genai-portal-provider-bedrock"}
        ],
    }
    backends = {item["metadata"]["name"]: item["spec"] for item in _by(objects, "Backend")}
    assert backends["genai-portal-provider-openai"]["tls"] == {
        "sni": "api.openai.com",
        "wellKnownCACertificates": "System",
    }
    secrets = {item["metadata"]["name"]: _decoded(item) for item in _by(objects, "Secret")}
    assert secrets["genai-portal-provider-openai-credential"] == {"apiKey": "sk-openai-upstream"}
    assert "genai-portal-provider-bedrock-credential" not in secrets


def test_apply_order_puts_the_header_strip_the_blocks_and_the_keys_before_anything_that_routes() -> None:
    """A pass failing part-way on a new cluster must never leave routes matching a forgeable client-id header
    without apiKeyAuth in place (the header strip, the key Secrets and the SecurityPolicy come before any route),
    nor a blocked team's key live while its block is not (the token limits and blocks come before the keys)."""
    kinds = [item["kind"] for item in build_gateway_policy_objects(make_spec())]
    assert kinds[:6] == ["ClientTrafficPolicy", "BackendTrafficPolicy", "Secret", "Secret", "Secret", "SecurityPolicy"]
    assert kinds.index("SecurityPolicy") < kinds.index("AIGatewayRoute")
    assert kinds.index("SecurityPolicy") < kinds.index("GatewayConfig")


def test_a_render_without_blocked_teams_keys_leaves_only_their_keys_out() -> None:
    spec = make_spec()
    blocked = {team.team_slug for team in spec.teams if team.blocked_reason}
    assert blocked
    whole = render_gateway_policy(spec)
    without = render_gateway_policy(spec, without_blocked_teams_keys=True)
    teams = lambda rendered: {  # noqa: E731
        item["metadata"]["labels"].get("portal.genai.io/team") for item in rendered.objects if item["kind"] == "Secret"
    }
    assert teams(without) == teams(whole) - blocked
    assert teams(whole) & blocked


def test_client_traffic_policy_strips_a_client_sent_client_id_on_the_gateway(registry: CrdRegistry) -> None:
    [policy] = _by(build_gateway_policy_objects(make_spec(teams=(), managed_routes=())), "ClientTrafficPolicy")
    assert_valid(registry, policy)
    assert policy["apiVersion"] == "gateway.envoyproxy.io/v1alpha1"
    assert policy["spec"] == {
        "targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "ai-gateway"}],
        "headers": {"earlyRequestHeaders": {"remove": ["x-portal-client-id"]}},
    }


def test_a_token_limit_policy_over_the_rule_limit_is_withheld_and_the_keys_still_render() -> None:
    # 7 rules: gamma's block, alpha's restricted key, 2 for alpha and 2 for beta... over a limit of 5.
    rendered = render_gateway_policy(make_spec(), max_rate_limit_rules=5)
    assert rendered.withheld == (("BackendTrafficPolicy", "genai-portal-token-limits"),)
    assert len(rendered.problems) == 1
    assert "holds at most 5 rules" in rendered.problems[0]
    assert _by(rendered.objects, "BackendTrafficPolicy") == []
    secrets = {item["metadata"]["name"]: _decoded(item) for item in _by(rendered.objects, "Secret")}
    assert set(secrets["genai-portal-keys-alpha"]) == {"alpha.aaaaaaaaaaaa", "alpha.bbbbbbbbbbbb"}
    assert set(secrets["genai-portal-keys-beta"]) == {"beta.cccccccccccc"}
    # No blocking rule can reach the gateway: the suspended team's keys are left out instead.
    assert "genai-portal-keys-gamma" not in secrets
    [policy] = _by(rendered.objects, "SecurityPolicy")
    assert [ref["name"] for ref in policy["spec"]["apiKeyAuth"]["credentialRefs"]] == [
        "genai-portal-keys-alpha",
        "genai-portal-keys-beta",
    ]
    assert _by(rendered.objects, "AIGatewayRoute")  # everything else still renders
    whole = render_gateway_policy(make_spec(), max_rate_limit_rules=6)
    assert (whole.problems, whole.withheld) == ((), ())
    assert "genai-portal-keys-gamma" in [item["metadata"]["name"] for item in _by(whole.objects, "Secret")]


def test_two_versions_of_a_managed_model_get_distinct_valid_rule_names(registry: CrdRegistry) -> None:
    """The AIGatewayRoute CRD's CEL rule wants rule names unique within a route: named after the served name."""
    routes = (
        ManagedModelRoute("gpt-4o", "gpt-4o", "gpt-4o-2024-08-06", "openai", (("alpha", None),)),
        ManagedModelRoute("gpt-4o", "gpt-4o-2024-11-20", "gpt-4o-2024-11-20", "openai", (("alpha", None),)),
        ManagedModelRoute("claude", "Claude.Sonnet/4.5", "claude-sonnet-4-5", "claude", (("alpha", None),)),
        ManagedModelRoute("claude", "claude-sonnet-4-5", "claude-sonnet-4-5", "claude", (("alpha", None),)),
    )
    [route] = _by(build_gateway_policy_objects(make_spec(managed_routes=routes)), "AIGatewayRoute")
    assert_valid(registry, route)
    names = [rule["name"] for rule in route["spec"]["rules"]]
    assert names[:2] == ["gpt-4o", "gpt-4o-2024-11-20"]
    assert names[3] == "claude-sonnet-4-5"
    assert re.fullmatch(r"claude-sonnet-4-5-[0-9a-f]{8}", names[2])  # made DNS-safe, then a hash keeps it unique
    assert len(set(names)) == 4
    # The same validator refuses duplicate names, so the check above is not vacuous.
    duplicated = dataclasses.replace(routes[1], served_model_name="gpt-4o")
    [broken] = _by(build_gateway_policy_objects(make_spec(managed_routes=(routes[0], duplicated))), "AIGatewayRoute")
    broken["spec"]["rules"][1]["name"] = broken["spec"]["rules"][0]["name"]
    info = registry.by_kind(broken["apiVersion"], broken["kind"])
    assert info is not None
    _, causes, _ = registry.validator(info.group, "v1beta1", info.plural).validate(broken, strict=True)
    assert any("unique" in str(cause) for cause in causes)


def test_managed_rule_names_are_dns_safe_and_avoid_the_reserved_name() -> None:
    assert managed_rule_name("gpt-4o-mini") == "gpt-4o-mini"
    assert re.fullmatch(r"route-not-found-[0-9a-f]{8}", managed_rule_name("route-not-found"))
    assert re.fullmatch(r"model-[0-9a-f]{8}", managed_rule_name("///"))
    long_name = managed_rule_name("m" * 80)
    assert len(long_name) <= 63
    assert re.fullmatch(r"m+-[0-9a-f]{8}", long_name)
    assert managed_rule_name("Qwen/Qwen2.5") != managed_rule_name("qwen-qwen2-5")


def test_many_managed_models_split_into_routes_of_at_most_14_rules(registry: CrdRegistry) -> None:
    routes = tuple(
        ManagedModelRoute(f"model-{index}", f"model-{index}", f"provider-{index}", "openai", (("alpha", None),))
        for index in range(30)
    )
    objects = build_gateway_policy_objects(make_spec(managed_routes=routes))
    managed = _by(objects, "AIGatewayRoute")
    assert [len(route["spec"]["rules"]) for route in managed] == [14, 14, 2]
    for route in managed:
        assert_valid(registry, route)


def test_too_many_teams_is_an_error_naming_the_limit() -> None:
    teams = tuple(
        TeamGatewayAccess(
            team_slug=f"team-{index}",
            keys=(GatewayKey(f"team-{index}.{index:012x}", f"{index:012x}", f"gpk_{index}"),),
            tokens_per_minute=10,
            tokens_per_day=100,
        )
        for index in range(129)
    )
    with pytest.raises(GatewayPolicyTooLarge, match="at most 256 rules"):
        build_gateway_policy_objects(make_spec(teams=teams, managed_routes=()))
    build_gateway_policy_objects(make_spec(teams=teams[:128], managed_routes=()))  # 256 rules fit exactly


def test_too_long_allow_list_is_an_error_naming_the_limit() -> None:
    allowed = tuple((f"team-{index}", tuple(f"{key:012x}" for key in range(20))) for index in range(30))
    route = ManagedModelRoute("big", "big", "big", "openai", allowed)
    assert len(allowed_client_id_regex(allowed)) > 4096
    with pytest.raises(GatewayPolicyTooLarge, match="4096"):
        build_gateway_policy_objects(make_spec(managed_routes=(route,)))


def test_bootstrap_access_log_has_the_usage_contract_fields(registry: CrdRegistry) -> None:
    config, proxy = bootstrap.build_bootstrap_objects(CLUSTER, collector="collector:4317")
    for manifest in (config, proxy):
        assert_valid(registry, manifest)
    keys = {cost["metadataKey"] for cost in config["spec"]["globalLLMRequestCosts"]}
    assert keys == {
        "llm_input_token",
        "llm_cached_input_token",
        "llm_cache_creation_input_token",
        "llm_output_token",
        "llm_reasoning_token",
        "llm_total_token",
    }
    [setting] = proxy["spec"]["telemetry"]["accessLog"]["settings"]
    fields = setting["format"]["json"]
    assert fields["credential_id"] == "%REQ(X-PORTAL-CLIENT-ID)%"
    # Only LLM traffic an upstream answered: never a refusal of the gateway's own (401, 404, 429, 400).
    assert setting["matches"] == ["request.headers['x-ai-eg-model'] != '' && response.code_details == 'via_upstream'"]
    assert fields["total_tokens"] == "%DYNAMIC_METADATA(io.envoy.ai_gateway:llm_total_token)%"
    assert {"start_time", "request_id", "model_requested", "status_code", "duration_ms", "backend"} <= set(fields)
    assert [sink["type"] for sink in setting["sinks"]] == ["File", "OpenTelemetry"]
