"""The gateway-policy reconciler against the sandbox API server, through the real kubernetes client over HTTP:
issue, rotate, revoke and expire reach the Secret and SecurityPolicy after one reconcile; quota changes,
suspension and budget enforcement reach the BackendTrafficPolicy; provider backends render; a key never appears
in logs, API responses after creation or rendered manifests returned by the API."""

from __future__ import annotations

import base64
import logging
import re
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.utils import timezone

from portal.clusters.models import Cluster
from portal.clusters.services import accelerator_pool_upsert
from portal.gateway import services
from portal.gateway.models import ClusterGatewayPolicy, Credential
from portal.tenancy import services as tenancy_services
from tests.conftest import RoleMatrix
from tests.factories import ManagedVersionFactory, SelfHostedVersionFactory
from tests.sandbox_cluster import register_sandbox_cluster
from tests.workers.conftest import remove_from_crd_schema, sandbox_api_client
from workers.kube.errors import RetryableClusterError
from workers.provisioning.gateway import policies_needing_reconcile, reconcile_gateway_policy
from workers.sandbox.server import Fault, Sandbox

pytestmark = pytest.mark.django_db

NS = "genai-gateway"
EG = "gateway.envoyproxy.io/v1alpha1"
AIGW = "aigateway.envoyproxy.io/v1beta1"


@pytest.fixture
def world(matrix: RoleMatrix, clean_sandbox: Sandbox) -> tuple[RoleMatrix, Sandbox, Cluster]:
    cluster = register_sandbox_cluster(clean_sandbox, name=f"sandbox-{id(matrix) % 100000}", gateway_namespace=NS)
    return matrix, clean_sandbox, cluster


def _policy_id(cluster: Cluster) -> int:
    services.gateway_policies_ensure()
    return ClusterGatewayPolicy.objects.get(cluster=cluster).pk


def _secret_keys(sandbox: Sandbox, team: str) -> dict[str, str]:
    found = [
        item
        for item in sandbox.objects("v1", "Secret", namespace=NS)
        if item["metadata"]["name"] == f"genai-portal-keys-{team}"
    ]
    if not found:
        return {}
    return {name: base64.b64decode(value).decode() for name, value in (found[0].get("data") or {}).items()}


def _one(sandbox: Sandbox, api_version: str, kind: str, name: str) -> dict[str, Any]:
    [found] = [item for item in sandbox.objects(api_version, kind, namespace=NS) if item["metadata"]["name"] == name]
    return found


def _credential_refs(sandbox: Sandbox) -> list[str]:
    policy = _one(sandbox, EG, "SecurityPolicy", "genai-portal-api-keys")
    return [ref["name"] for ref in policy["spec"]["apiKeyAuth"]["credentialRefs"]]


def _rules(sandbox: Sandbox) -> list[dict[str, Any]]:
    return _one(sandbox, EG, "BackendTrafficPolicy", "genai-portal-token-limits")["spec"]["rateLimit"]["global"][
        "rules"
    ]


def test_issue_reaches_secret_and_security_policy_in_one_reconcile(
    world: tuple[RoleMatrix, Sandbox, Cluster], caplog: pytest.LogCaptureFixture
) -> None:
    matrix, sandbox, cluster = world
    caplog.set_level(logging.DEBUG)
    issued = services.credential_issue(actor=matrix.developer, team=matrix.team, name="ci")
    policy_id = _policy_id(cluster)
    result = reconcile_gateway_policy(policy_id)
    assert result.outcome == "applied"
    assert _secret_keys(sandbox, "alpha") == {issued.client_id: issued.key}
    assert _credential_refs(sandbox) == ["genai-portal-keys-alpha"]
    policy = ClusterGatewayPolicy.objects.get(pk=policy_id)
    assert (policy.phase, policy.observed_generation) == ("Ready", policy.generation)
    assert policy.applied_fingerprint
    # An unchanged policy costs reads, never writes.
    sandbox.reset_records()
    again = reconcile_gateway_policy(policy_id)
    assert (again.outcome, again.writes) == ("unchanged", 0)
    assert sandbox.writes() == []
    assert policies_needing_reconcile() == []
    # The key is in no log line, and not in what the API shows of the applied policy.
    assert issued.key not in caplog.text
    assert base64.b64encode(issued.key.encode()).decode() not in caplog.text
    shown = matrix.client("platform_admin").get(f"/api/v1/clusters/{cluster.name}/gateway-policy")
    assert shown.status_code == 200
    assert issued.key not in shown.content.decode()
    assert base64.b64encode(issued.key.encode()).decode() not in shown.content.decode()
    secret = next(item for item in shown.json()["applied_manifests"] if item["kind"] == "Secret")
    assert secret["data"] == {issued.client_id: "[redacted]"}


def test_rotation_overlap_then_only_the_new_key(world: tuple[RoleMatrix, Sandbox, Cluster]) -> None:
    matrix, sandbox, cluster = world
    old = services.credential_issue(actor=matrix.developer, team=matrix.team, name="svc")
    policy_id = _policy_id(cluster)
    reconcile_gateway_policy(policy_id)
    new = services.credential_rotate(actor=matrix.developer, credential=old.credential, overlap=timedelta(hours=1))
    assert policies_needing_reconcile() == [policy_id]  # generation bumped
    reconcile_gateway_policy(policy_id)
    assert _secret_keys(sandbox, "alpha") == {old.client_id: old.key, new.client_id: new.key}
    # The overlap window ends: nobody touches the portal, the resync notices the desired policy changed.
    Credential.objects.filter(pk=old.credential_id).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert policies_needing_reconcile() == [policy_id]
    reconcile_gateway_policy(policy_id)
    assert _secret_keys(sandbox, "alpha") == {new.client_id: new.key}
    assert policies_needing_reconcile() == []


def test_revoke_and_expiry_remove_keys_and_an_emptied_team_secret(world: tuple[RoleMatrix, Sandbox, Cluster]) -> None:
    matrix, sandbox, cluster = world
    one = services.credential_issue(actor=matrix.developer, team=matrix.team, name="one")
    two = services.credential_issue(
        actor=matrix.developer, team=matrix.team, name="two", expires_at=timezone.now() + timedelta(hours=1)
    )
    policy_id = _policy_id(cluster)
    reconcile_gateway_policy(policy_id)
    assert set(_secret_keys(sandbox, "alpha")) == {one.client_id, two.client_id}
    response = matrix.client("developer").delete(f"/api/v1/teams/alpha/credentials/{one.credential_id}")
    assert response.status_code == 204
    reconcile_gateway_policy(policy_id)
    assert _secret_keys(sandbox, "alpha") == {two.client_id: two.key}
    Credential.objects.filter(pk=two.credential_id).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert policies_needing_reconcile() == [policy_id]
    reconcile_gateway_policy(policy_id)
    assert _secret_keys(sandbox, "alpha") == {}
    assert _credential_refs(sandbox) == ["genai-portal-keys-none"]
    names = [item["metadata"]["name"] for item in sandbox.objects("v1", "Secret", namespace=NS)]
    assert "genai-portal-keys-alpha" not in names
    assert sandbox.objects(EG, "BackendTrafficPolicy", namespace=NS) == []


def test_quota_change_suspension_and_budget_reach_the_token_limits(world: tuple[RoleMatrix, Sandbox, Cluster]) -> None:
    matrix, sandbox, cluster = world
    services.credential_issue(actor=matrix.developer, team=matrix.team, name="ci")
    policy_id = _policy_id(cluster)
    reconcile_gateway_policy(policy_id)
    limits = [(rule["limit"]["requests"], rule["limit"]["unit"]) for rule in _rules(sandbox)]
    assert limits == [(100000, "Minute"), (10000000, "Day")]

    tenancy_services.team_quota_update(
        actor=matrix.platform_admin, team=matrix.team, changes={"tokens_per_minute": 5000}
    )
    before = ClusterGatewayPolicy.objects.get(pk=policy_id).generation
    assert policies_needing_reconcile() == [policy_id]  # detected by fingerprint, tenancy knows nothing of it
    # ... and the resync bumps the generation, so the pending change shows; a second resync adds nothing.
    pending = ClusterGatewayPolicy.objects.get(pk=policy_id)
    assert (pending.generation, pending.observed_generation) == (before + 1, before)
    assert policies_needing_reconcile() == [policy_id]
    assert ClusterGatewayPolicy.objects.get(pk=policy_id).generation == before + 1
    reconcile_gateway_policy(policy_id)
    assert [rule["limit"]["requests"] for rule in _rules(sandbox)] == [5000, 10000000]
    applied = ClusterGatewayPolicy.objects.get(pk=policy_id)
    assert (applied.generation, applied.observed_generation) == (before + 1, before + 1)

    assert services.team_budget_enforcement_set(actor=None, team=matrix.team, enforcement="throttle", reason="80%")
    reconcile_gateway_policy(policy_id)
    assert [rule["limit"]["requests"] for rule in _rules(sandbox)] == [500, 1000000]

    services.team_budget_enforcement_set(actor=None, team=matrix.team, enforcement="block", reason="spent")
    reconcile_gateway_policy(policy_id)
    assert [(rule["limit"], rule.get("cost")) for rule in _rules(sandbox)] == [
        ({"requests": 0, "unit": "Minute"}, None)
    ]

    services.team_budget_enforcement_set(actor=None, team=matrix.team, enforcement="none", reason="new month")
    tenancy_services.team_set_status(actor=matrix.platform_admin, team=matrix.team, status="suspended")
    assert policies_needing_reconcile() == [policy_id]
    reconcile_gateway_policy(policy_id)
    [block] = _rules(sandbox)
    assert block["limit"] == {"requests": 0, "unit": "Minute"}
    assert block["clientSelectors"][0]["headers"][0]["value"] == "^alpha\\.[0-9a-f]+$"


def test_managed_provider_backend_and_route_on_the_cluster(world: tuple[RoleMatrix, Sandbox, Cluster]) -> None:
    matrix, sandbox, cluster = world
    ManagedVersionFactory(
        model__slug="gpt-4o-mini", served_model_name="gpt-4o-mini", provider_model_id="gpt-4o-mini-2024-07-18"
    )
    issued = services.credential_issue(actor=matrix.developer, team=matrix.team, name="ci")
    other = services.credential_issue(actor=matrix.outsider, team=matrix.other_team, name="ci")
    response = matrix.client("platform_admin").post(
        f"/api/v1/clusters/{cluster.name}/provider-backends",
        {"name": "openai", "provider": "openai", "hostname": "api.openai.com", "credential": "sk-upstream-secret"},
        format="json",
    )
    assert response.status_code == 201, response.content
    policy_id = _policy_id(cluster)
    assert reconcile_gateway_policy(policy_id).outcome == "applied"
    assert _one(sandbox, AIGW, "AIServiceBackend", "genai-portal-provider-openai")["spec"]["schema"]["name"] == "OpenAI"
    assert _one(sandbox, EG, "Backend", "genai-portal-provider-openai")["spec"]["tls"]["sni"] == "api.openai.com"
    assert _one(sandbox, AIGW, "BackendSecurityPolicy", "genai-portal-provider-openai")["spec"]["type"] == "APIKey"
    route = _one(sandbox, AIGW, "AIGatewayRoute", "genai-portal-managed-0")
    [rule] = route["spec"]["rules"]
    assert rule["backendRefs"][0]["modelNameOverride"] == "gpt-4o-mini-2024-07-18"
    pattern = rule["matches"][0]["headers"][1]["value"]
    assert re.fullmatch(pattern, issued.client_id)
    assert re.fullmatch(pattern, other.client_id)
    shown = matrix.client("platform_admin").get(f"/api/v1/clusters/{cluster.name}/gateway-policy").content.decode()
    assert "sk-upstream-secret" not in shown
    # Removing the provider removes its objects and routes at the next reconcile.
    assert (
        matrix.client("platform_admin").delete(f"/api/v1/clusters/{cluster.name}/provider-backends/openai").status_code
        == 204
    )
    reconcile_gateway_policy(policy_id)
    assert sandbox.objects(AIGW, "AIServiceBackend", namespace=NS) == []
    assert sandbox.objects(AIGW, "AIGatewayRoute", namespace=NS) == []


def test_one_teams_limit_over_the_gateways_maximum_never_withholds_the_others(
    world: tuple[RoleMatrix, Sandbox, Cluster],
) -> None:
    """The API refuses a token limit over a uint32; a row from before that rule may still hold one. That team's
    limit is held at the maximum and the policy is Degraded naming it; every other team's limits still apply."""
    from portal.tenancy.models import TeamQuota

    matrix, sandbox, cluster = world
    TeamQuota.objects.filter(team=matrix.team).update(tokens_per_day=5_000_000_000)
    issued = services.credential_issue(actor=matrix.developer, team=matrix.team, name="ci")
    services.credential_issue(actor=matrix.outsider, team=matrix.other_team, name="ci")
    policy_id = _policy_id(cluster)
    result = reconcile_gateway_policy(policy_id)
    assert result.outcome == "degraded"
    policy = ClusterGatewayPolicy.objects.get(pk=policy_id)
    assert policy.phase == "Degraded"
    assert "team alpha" in policy.message
    assert "4294967295" in policy.message
    assert "withheld" not in policy.message
    assert policy.observed_generation == policy.generation
    limits = {
        (rule["clientSelectors"][0]["headers"][0]["value"], rule["limit"]["unit"]): rule["limit"]["requests"]
        for rule in _rules(sandbox)
    }
    assert limits[("^alpha\\.[0-9a-f]+$", "Day")] == 4_294_967_295
    assert limits[("^beta\\.[0-9a-f]+$", "Day")] == TeamQuota.objects.get(team=matrix.other_team).tokens_per_day
    assert _secret_keys(sandbox, "alpha") == {issued.client_id: issued.key}
    # Retrying the same content cannot fix a limit: the resync leaves it until something changes.
    assert policies_needing_reconcile() == []


def test_over_the_rule_limit_a_revocation_still_reaches_the_secret_in_one_reconcile(
    world: tuple[RoleMatrix, Sandbox, Cluster], settings: Any
) -> None:
    """Lifting a budget block needs no room check (it must never keep a team blocked), so it can push the token
    policy past its rule limit; the keys must keep converging regardless."""
    matrix, sandbox, cluster = world
    settings.GATEWAY_MAX_RATE_LIMIT_RULES = 3
    services.team_budget_enforcement_set(actor=None, team=matrix.other_team, enforcement="block", reason="spent")
    revoked = services.credential_issue(actor=matrix.developer, team=matrix.team, name="one")
    kept = services.credential_issue(actor=matrix.developer, team=matrix.team, name="two")
    beta = services.credential_issue(actor=matrix.outsider, team=matrix.other_team, name="ci")  # 2 + 1 rules
    policy_id = _policy_id(cluster)
    assert reconcile_gateway_policy(policy_id).outcome == "applied"
    old_rules = _rules(sandbox)
    assert len(old_rules) == 3
    services.team_budget_enforcement_set(actor=None, team=matrix.other_team, enforcement="none", reason="new month")
    services.credential_revoke(actor=matrix.developer, credential=revoked.credential)

    result = reconcile_gateway_policy(policy_id)
    assert result.outcome == "degraded"
    assert _secret_keys(sandbox, "alpha") == {kept.client_id: kept.key}
    assert _secret_keys(sandbox, "beta") == {beta.client_id: beta.key}
    assert _rules(sandbox) == old_rules  # the live token policy is kept, not pruned or truncated
    policy = ClusterGatewayPolicy.objects.get(pk=policy_id)
    assert policy.phase == "Degraded"
    assert "needs 4 rules" in policy.message
    assert "at most 3 rules" in policy.message
    assert policy.observed_generation == policy.generation

    # A suspension cannot reach the withheld token policy: the suspended team's keys leave the Secrets instead.
    settings.GATEWAY_MAX_RATE_LIMIT_RULES = 2
    tenancy_services.team_set_status(actor=matrix.platform_admin, team=matrix.other_team, status="suspended")
    assert policies_needing_reconcile() == [policy_id]
    assert reconcile_gateway_policy(policy_id).outcome == "degraded"  # 1 + 2 rules, over a limit of 2
    assert _secret_keys(sandbox, "beta") == {}
    assert _credential_refs(sandbox) == ["genai-portal-keys-alpha"]
    assert _rules(sandbox) == old_rules
    # Within the limit again, the whole policy applies: the block is a rule again, the keys are back.
    settings.GATEWAY_MAX_RATE_LIMIT_RULES = 3
    assert policies_needing_reconcile() == [policy_id]
    assert reconcile_gateway_policy(policy_id).outcome == "applied"
    assert _secret_keys(sandbox, "beta") == {beta.client_id: beta.key}
    assert [rule["limit"]["requests"] for rule in _rules(sandbox)] == [0, 100000, 10000000]
    assert ClusterGatewayPolicy.objects.get(pk=policy_id).phase == "Ready"


def test_bootstrap_applied_only_when_the_cluster_allows_it(world: tuple[RoleMatrix, Sandbox, Cluster]) -> None:
    matrix, sandbox, cluster = world
    services.credential_issue(actor=matrix.developer, team=matrix.team, name="ci")
    policy_id = _policy_id(cluster)
    reconcile_gateway_policy(policy_id)
    assert sandbox.objects(AIGW, "GatewayConfig", namespace=NS) == []
    Cluster.objects.filter(pk=cluster.pk).update(apply_gateway_bootstrap=True)
    assert policies_needing_reconcile() == [policy_id]
    reconcile_gateway_policy(policy_id)
    [config] = sandbox.objects(AIGW, "GatewayConfig", namespace=NS)
    assert config["metadata"]["name"] == "ai-gateway-portal-config"
    [proxy] = sandbox.objects(EG, "EnvoyProxy", namespace=NS)
    # Bound to the Gateway, whose own spec (listeners, class) stays the platform team's.
    [gateway] = sandbox.objects("gateway.networking.k8s.io/v1", "Gateway", namespace=NS)
    assert gateway["metadata"]["annotations"]["aigateway.envoyproxy.io/gateway-config"] == "ai-gateway-portal-config"
    assert gateway["spec"]["infrastructure"]["parametersRef"] == {
        "group": "gateway.envoyproxy.io",
        "kind": "EnvoyProxy",
        "name": proxy["metadata"]["name"],
    }
    assert gateway["spec"]["listeners"]
    assert gateway["spec"]["gatewayClassName"]
    owners = {entry["manager"] for entry in gateway["metadata"]["managedFields"]}
    assert {"installer", "genai-portal"} <= owners
    sandbox.reset_records()
    assert reconcile_gateway_policy(policy_id).writes == 0
    assert sandbox.writes() == []


def test_a_teams_key_cannot_reach_another_teams_deployment(world: tuple[RoleMatrix, Sandbox, Cluster]) -> None:
    from portal.tenancy.models import TeamGpuQuota
    from workers.provisioning.reconciler import reconcile_deployment

    matrix, sandbox, cluster = world
    accelerator_pool_upsert(
        actor=None,
        cluster=cluster,
        accelerator_type="nvidia-l4",
        values={
            "gpu_product": "NVIDIA-L4",
            "node_selector": {"nvidia.com/gpu.product": "NVIDIA-L4"},
            "tolerations": [],
            "gpu_count": 16,
            "gpu_memory_gb": 24,
            "hourly_price_per_gpu": Decimal("0.80"),
        },
    )
    SelfHostedVersionFactory(model__slug="qwen", version="v1", gpus_per_replica=1, min_gpu_memory_gb=16)
    TeamGpuQuota.objects.create(quota=matrix.team.quota, accelerator_type="nvidia-l4", gpus=4)
    own = services.credential_issue(actor=matrix.developer, team=matrix.team, name="own")
    foreign = services.credential_issue(actor=matrix.outsider, team=matrix.other_team, name="foreign")
    body = {"name": "chat", "model": "qwen", "accelerator_type": "nvidia-l4", "max_replicas": 1}
    assert matrix.client("developer").post("/api/v1/teams/alpha/deployments", body, format="json").status_code == 201
    from portal.deployments.models import Deployment

    reconcile_deployment(Deployment.objects.get(name="chat").pk)
    [route] = [
        item
        for item in sandbox.objects(AIGW, "AIGatewayRoute", namespace=NS)
        if item["metadata"]["name"] == "alpha--chat"
    ]
    [rule] = route["spec"]["rules"]
    client_match = next(header for header in rule["matches"][0]["headers"] if header["name"] == "x-portal-client-id")
    assert re.fullmatch(client_match["value"], own.client_id)
    assert not re.fullmatch(client_match["value"], foreign.client_id)
    assert not re.fullmatch(client_match["value"], f"alpha-two.{foreign.key_id}")


def test_per_key_allow_lists_reach_the_deployment_route(world: tuple[RoleMatrix, Sandbox, Cluster]) -> None:
    from portal.deployments.models import Deployment
    from portal.tenancy.models import TeamGpuQuota
    from tests.factories import CatalogModelFactory
    from workers.provisioning.reconciler import reconcile_deployment

    matrix, sandbox, cluster = world
    accelerator_pool_upsert(
        actor=None,
        cluster=cluster,
        accelerator_type="nvidia-l4",
        values={"gpu_product": "NVIDIA-L4", "gpu_count": 16, "gpu_memory_gb": 24, "hourly_price_per_gpu": Decimal("0")},
    )
    SelfHostedVersionFactory(model__slug="qwen", version="v1", gpus_per_replica=1, min_gpu_memory_gb=16)
    CatalogModelFactory(slug="other-model")
    TeamGpuQuota.objects.create(quota=matrix.team.quota, accelerator_type="nvidia-l4", gpus=4)
    everything = services.credential_issue(actor=matrix.developer, team=matrix.team, name="all")
    qwen_only = services.credential_issue(actor=matrix.developer, team=matrix.team, name="q", allowed_models=["qwen"])
    elsewhere = services.credential_issue(
        actor=matrix.developer, team=matrix.team, name="o", allowed_models=["other-model"]
    )
    body = {"name": "chat", "model": "qwen", "accelerator_type": "nvidia-l4", "max_replicas": 1}
    assert matrix.client("developer").post("/api/v1/teams/alpha/deployments", body, format="json").status_code == 201
    deployment = Deployment.objects.get(name="chat")
    reconcile_deployment(deployment.pk)
    route = _one(sandbox, AIGW, "AIGatewayRoute", "alpha--chat")
    pattern = route["spec"]["rules"][0]["matches"][0]["headers"][1]["value"]
    assert re.fullmatch(pattern, everything.client_id)
    assert re.fullmatch(pattern, qwen_only.client_id)
    assert not re.fullmatch(pattern, elsewhere.client_id)
    # The gateway policy blocks the restricted key on every model outside its list, the deployment's included.
    reconcile_gateway_policy(_policy_id(cluster))
    blocking = [rule for rule in _rules(sandbox) if rule["limit"]["requests"] == 0]
    matches = sorted(
        [
            (header["name"], header["value"], header.get("invert", False))
            for header in rule["clientSelectors"][0]["headers"]
        ]
        for rule in blocking
    )
    assert matches == sorted(
        [
            [("x-portal-client-id", elsewhere.client_id, False)],  # its one model is not on this cluster
            [
                ("x-portal-client-id", qwen_only.client_id, False),
                ("x-ai-eg-model", f"^({deployment.served_model_name})$", True),
            ],
        ]
    )
    # Revoking the restricted key widens nothing for others and the route follows at the next reconcile.
    services.credential_revoke(actor=matrix.developer, credential=elsewhere.credential)
    reconcile_deployment(deployment.pk)
    pattern = _one(sandbox, AIGW, "AIGatewayRoute", "alpha--chat")["spec"]["rules"][0]["matches"][0]["headers"][1][
        "value"
    ]
    assert pattern == "^alpha\\..+$"


@pytest.mark.parametrize(
    "fault", [Fault(status=503), Fault(status=429), Fault(drop=True)], ids=["503", "429", "dropped"]
)
def test_a_retryable_fault_leaves_the_policy_behind_and_the_next_pass_converges(
    world: tuple[RoleMatrix, Sandbox, Cluster], fault: Fault
) -> None:
    matrix, sandbox, cluster = world
    issued = services.credential_issue(actor=matrix.developer, team=matrix.team, name="ci")
    policy_id = _policy_id(cluster)
    sandbox.add_fault(Fault(method="PATCH", path="securitypolicies", status=fault.status, drop=fault.drop, times=1))
    with pytest.raises(RetryableClusterError):
        reconcile_gateway_policy(policy_id)
    policy = ClusterGatewayPolicy.objects.get(pk=policy_id)
    assert policy.observed_generation < policy.generation
    assert policies_needing_reconcile() == [policy_id]
    assert reconcile_gateway_policy(policy_id).outcome == "applied"
    assert _secret_keys(sandbox, "alpha") == {issued.client_id: issued.key}
    assert _credential_refs(sandbox) == ["genai-portal-keys-alpha"]
    assert policies_needing_reconcile() == []


def test_a_refused_object_is_a_failed_policy_with_the_servers_message(
    world: tuple[RoleMatrix, Sandbox, Cluster],
) -> None:
    matrix, sandbox, cluster = world
    issued = services.credential_issue(actor=matrix.developer, team=matrix.team, name="ci")
    policy_id = _policy_id(cluster)
    sandbox.add_fault(Fault(method="PATCH", path="backendtrafficpolicies", status=422, message="spec.rateLimit: nope"))
    result = reconcile_gateway_policy(policy_id)
    assert result.outcome == "failed"
    # The header strip, the team Secret and the SecurityPolicy were written before the refusal, and say so.
    assert result.writes == 3
    assert _secret_keys(sandbox, "alpha") == {issued.client_id: issued.key}
    policy = ClusterGatewayPolicy.objects.get(pk=policy_id)
    assert policy.phase == "Failed"
    assert "spec.rateLimit: nope" in policy.message
    assert policy.observed_generation < policy.generation  # not handled: not observed
    assert policies_needing_reconcile() == [policy_id]  # not applied: the resync keeps trying
    assert reconcile_gateway_policy(policy_id).outcome == "applied"
    policy = ClusterGatewayPolicy.objects.get(pk=policy_id)
    assert (policy.phase, policy.observed_generation) == ("Ready", policy.generation)


def test_a_pass_failing_part_way_on_a_new_cluster_leaves_no_route_without_api_key_auth(
    world: tuple[RoleMatrix, Sandbox, Cluster],
) -> None:
    matrix, sandbox, cluster = world
    ManagedVersionFactory(model__slug="gpt-4o-mini", served_model_name="gpt-4o-mini")
    services.credential_issue(actor=matrix.developer, team=matrix.team, name="ci")
    services.provider_backend_create(
        actor=None,
        cluster=cluster,
        values={"name": "openai", "provider": "openai", "hostname": "api.openai.com", "credential": "sk-up"},
    )
    policy_id = _policy_id(cluster)
    sandbox.add_fault(Fault(method="PATCH", path="securitypolicies", status=422, message="refused"))
    assert reconcile_gateway_policy(policy_id).outcome == "failed"
    assert sandbox.objects(AIGW, "AIGatewayRoute", namespace=NS) == []
    [strip] = sandbox.objects(EG, "ClientTrafficPolicy", namespace=NS)
    assert strip["spec"]["headers"] == {"earlyRequestHeaders": {"remove": ["x-portal-client-id"]}}
    assert reconcile_gateway_policy(policy_id).outcome == "applied"
    assert len(sandbox.objects(AIGW, "AIGatewayRoute", namespace=NS)) == 1


def test_two_live_versions_of_a_managed_model_are_one_route_the_cluster_accepts(
    world: tuple[RoleMatrix, Sandbox, Cluster],
) -> None:
    matrix, sandbox, cluster = world
    first = ManagedVersionFactory(model__slug="gpt-4o", served_model_name="gpt-4o", version="2024-08-06")
    ManagedVersionFactory(model=first.model, served_model_name="gpt-4o-2024-11-20", version="2024-11-20")
    services.credential_issue(actor=matrix.developer, team=matrix.team, name="ci")
    services.provider_backend_create(
        actor=None,
        cluster=cluster,
        values={"name": "openai", "provider": "openai", "hostname": "api.openai.com", "credential": "sk-up"},
    )
    policy_id = _policy_id(cluster)
    assert reconcile_gateway_policy(policy_id).outcome == "applied"
    route = _one(sandbox, AIGW, "AIGatewayRoute", "genai-portal-managed-0")
    assert [rule["name"] for rule in route["spec"]["rules"]] == ["gpt-4o", "gpt-4o-2024-11-20"]
    assert ClusterGatewayPolicy.objects.get(pk=policy_id).phase == "Ready"


def test_the_reconcile_task_takes_an_id_and_a_concurrent_run_is_busy(
    world: tuple[RoleMatrix, Sandbox, Cluster],
) -> None:
    from workers.provisioning.gateway import GatewayPolicyBusy, policy_lock
    from workers.tasks import gateway as gateway_tasks

    matrix, _sandbox, cluster = world
    services.credential_issue(actor=matrix.developer, team=matrix.team, name="ci")
    policy_id = _policy_id(cluster)
    with policy_lock(policy_id), pytest.raises(GatewayPolicyBusy):
        reconcile_gateway_policy(policy_id)
    assert gateway_tasks.reconcile(policy_id) == "applied"
    assert gateway_tasks.reconcile(policy_id) == "unchanged"
    assert gateway_tasks.reconcile(999999) == "gone"


def test_a_credential_change_reaches_every_cluster(world: tuple[RoleMatrix, Sandbox, Cluster]) -> None:
    from workers.sandbox.validation import default_crd_dir

    matrix, first_sandbox, first = world
    with Sandbox(crd_dir=default_crd_dir(), ready_delay=0.0, tick=0.02) as second_sandbox:
        second = register_sandbox_cluster(
            second_sandbox, name=f"second-{id(matrix) % 100000}", region="us-east", gateway_namespace=NS
        )
        issued = services.credential_issue(actor=matrix.developer, team=matrix.team, name="ci")
        ids = policies_needing_reconcile()
        assert ids == sorted([_policy_id(first), _policy_id(second)])
        for policy_id in ids:
            reconcile_gateway_policy(policy_id)
        for sandbox in (first_sandbox, second_sandbox):
            assert _secret_keys(sandbox, "alpha") == {issued.client_id: issued.key}
        services.credential_revoke(actor=matrix.developer, credential=issued.credential)
        assert policies_needing_reconcile() == ids
        for policy_id in ids:
            reconcile_gateway_policy(policy_id)
        for sandbox in (first_sandbox, second_sandbox):
            assert _secret_keys(sandbox, "alpha") == {}
            assert _credential_refs(sandbox) == ["genai-portal-keys-none"]


def test_a_blocked_teams_new_key_is_never_live_while_its_block_is_not(
    world: tuple[RoleMatrix, Sandbox, Cluster],
) -> None:
    """Apply order never weakens a block: the pass that carries a team's block and a new key of that team fails on
    the token-limit policy; the key must not have reached the cluster (a retryable failure stops the pass there,
    a refusal converges the keys without the blocked team's)."""
    from workers.kube.errors import RetryableClusterError

    matrix, sandbox, cluster = world
    first = services.credential_issue(actor=matrix.developer, team=matrix.team, name="first")
    policy_id = _policy_id(cluster)
    assert reconcile_gateway_policy(policy_id).outcome == "applied"
    assert _secret_keys(sandbox, "alpha") == {first.client_id: first.key}

    services.team_budget_enforcement_set(actor=None, team=matrix.team, enforcement="block", reason="spent")
    second = services.credential_issue(actor=matrix.developer, team=matrix.team, name="second")
    sandbox.add_fault(Fault(method="PATCH", path="backendtrafficpolicies", status=503, times=1))
    with pytest.raises(RetryableClusterError):
        reconcile_gateway_policy(policy_id)
    assert second.client_id not in _secret_keys(sandbox, "alpha")

    sandbox.add_fault(Fault(method="PATCH", path="backendtrafficpolicies", status=422, message="nope", times=1))
    assert reconcile_gateway_policy(policy_id).outcome == "failed"
    assert _secret_keys(sandbox, "alpha") == {}  # no block on the cluster: none of the team's keys either

    assert reconcile_gateway_policy(policy_id).outcome == "applied"
    assert next(rule["limit"] for rule in _rules(sandbox)) == {"requests": 0, "unit": "Minute"}
    assert set(_secret_keys(sandbox, "alpha")) == {first.client_id, second.client_id}


def test_a_teams_leftover_secret_is_pruned_and_the_policy_is_ready(world: tuple[RoleMatrix, Sandbox, Cluster]) -> None:
    """A real API server lists Secrets without their kind (kubernetes/kubernetes#3030): pruning goes by the kind it
    listed, so the Secret of a team whose keys are all gone is deleted and the pass records Ready."""
    matrix, sandbox, cluster = world
    issued = services.credential_issue(actor=matrix.developer, team=matrix.team, name="ci")
    policy_id = _policy_id(cluster)
    assert reconcile_gateway_policy(policy_id).outcome == "applied"
    assert _secret_keys(sandbox, "alpha") == {issued.client_id: issued.key}
    services.credential_revoke(actor=matrix.developer, credential=issued.credential)

    result = reconcile_gateway_policy(policy_id)
    assert result.outcome == "applied"
    names = [item["metadata"]["name"] for item in sandbox.objects("v1", "Secret", namespace=NS)]
    assert "genai-portal-keys-alpha" not in names
    assert "genai-portal-keys-none" in names
    policy = ClusterGatewayPolicy.objects.get(pk=policy_id)
    assert (policy.phase, policy.message, policy.observed_generation) == ("Ready", "", policy.generation)
    assert policies_needing_reconcile() == []


def test_a_crd_on_the_cluster_without_a_field_the_portal_applies_fails_the_policy_once(
    world: tuple[RoleMatrix, Sandbox, Cluster],
) -> None:
    """An older Envoy Gateway's SecurityPolicy has no forwardClientIDHeader: server-side apply answers 500
    (kubernetes/kubernetes#139253), which is terminal: Failed, naming the field, and the task is not retried."""
    from workers.tasks import gateway as gateway_tasks

    matrix, sandbox, cluster = world
    services.credential_issue(actor=matrix.developer, team=matrix.team, name="ci")
    policy_id = _policy_id(cluster)
    remove_from_crd_schema(
        sandbox_api_client(sandbox), "securitypolicies.gateway.envoyproxy.io", ".spec.apiKeyAuth.forwardClientIDHeader"
    )
    sandbox.reset_records()
    assert gateway_tasks.reconcile.apply(args=(policy_id,)).get() == "failed"
    applies = [
        record.status for record in sandbox.records if "/securitypolicies/" in record.path and record.method == "PATCH"
    ]
    assert applies == [500]  # one attempt: retrying the same body cannot succeed
    assert sandbox.objects(EG, "SecurityPolicy", namespace=NS) == []
    policy = ClusterGatewayPolicy.objects.get(pk=policy_id)
    assert policy.phase == "Failed"
    assert policy.message == (
        "the cluster refused the gateway policy: the cluster's SecurityPolicy CustomResourceDefinition "
        "(gateway.envoyproxy.io/v1alpha1) does not declare .spec.apiKeyAuth.forwardClientIDHeader: it is older or "
        "newer than the portal expects"
    )
