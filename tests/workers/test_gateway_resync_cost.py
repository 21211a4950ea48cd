"""The gateway resync's cost grows with what changed: a policy whose inputs are those of its last apply is skipped
without decrypting, rendering or hashing a single key, in the same number of queries however many keys there are;
a change (a quota edit in tenancy, which knows nothing of the gateway; a key's expiry; a revocation) is still found
within one resync, and only then is the policy rendered whole."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from portal.clusters.models import Cluster
from portal.clusters.services import cluster_register
from portal.gateway import selectors as gateway_selectors
from portal.gateway import services
from portal.gateway.models import ClusterGatewayPolicy, Credential
from portal.tenancy import services as tenancy_services
from tests.conftest import RoleMatrix
from tests.factories import TeamFactory
from workers.provisioning import gateway as gateway_reconciler
from workers.provisioning.gateway import policies_needing_reconcile, reconcile_gateway_policy
from workers.provisioning.reconciler import redis_client
from workers.sandbox.server import Sandbox

pytestmark = pytest.mark.django_db


@pytest.fixture
def cluster(matrix: RoleMatrix, clean_sandbox: Sandbox) -> Cluster:
    for key in redis_client().scan_iter("portal:gateway-inputs:*"):
        redis_client().delete(key)
    return cluster_register(
        actor=None,
        name="gw-cost",
        api_server=clean_sandbox.url,
        auth_kind="token",
        token="sandbox-token",
        region="eu-west",
        gateway_namespace="genai-gateway",
        gateway_name="ai-gateway",
    )


@pytest.fixture
def decryptions(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every key and provider credential the gateway selectors decrypt (a spy: the real function still runs)."""
    seen: list[str] = []
    real: Callable[[str], str] = gateway_selectors.decrypt_secret

    def counting(ciphertext: str) -> str:
        seen.append(ciphertext)
        return real(ciphertext)

    monkeypatch.setattr(gateway_selectors, "decrypt_secret", counting)
    return seen


def _renders(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = gateway_reconciler.render

    def counting(spec: Any) -> Any:
        calls.append(spec.policy_id)
        return real(spec)

    monkeypatch.setattr(gateway_reconciler, "render", counting)
    return calls


def _keys(teams: int, per_team: int, *, prefix: str = "cost") -> None:
    for index in range(teams):
        team = TeamFactory(slug=f"{prefix}-{index}")
        for key in range(per_team):
            services.credential_issue(actor=None, team=team, name=f"key-{key}")


def _unchanged_resync_queries() -> int:
    with CaptureQueriesContext(connection) as queries:
        assert policies_needing_reconcile() == []
    return len(queries)


def test_an_unchanged_policy_costs_no_decryption_and_the_same_queries_for_any_number_of_keys(
    matrix: RoleMatrix, cluster: Cluster, decryptions: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    renders = _renders(monkeypatch)
    _keys(teams=5, per_team=2)
    policy_id = ClusterGatewayPolicy.objects.get(cluster=cluster).pk
    assert reconcile_gateway_policy(policy_id).outcome == "applied"
    assert len(decryptions) == 10  # the reconcile itself decrypts every key it writes into the Secrets
    decryptions.clear()
    renders.clear()
    small = _unchanged_resync_queries()
    assert (decryptions, renders) == ([], [])

    _keys(teams=10, per_team=3, prefix="more")  # four times the keys
    assert policies_needing_reconcile() == [policy_id]  # (their issue bumped the generation)
    reconcile_gateway_policy(policy_id)
    decryptions.clear()
    renders.clear()
    assert _unchanged_resync_queries() == small
    assert (decryptions, renders) == ([], [])


def test_changes_made_elsewhere_are_still_found_in_one_resync(
    matrix: RoleMatrix, cluster: Cluster, decryptions: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    renders = _renders(monkeypatch)
    _keys(teams=3, per_team=2)
    soon = services.credential_issue(
        actor=None, team=matrix.team, name="short-lived", expires_at=timezone.now() + timedelta(hours=1)
    )
    policy_id = ClusterGatewayPolicy.objects.get(cluster=cluster).pk
    reconcile_gateway_policy(policy_id)
    assert policies_needing_reconcile() == []

    def found_once() -> list[int]:
        decryptions.clear()
        renders.clear()
        found = policies_needing_reconcile()
        assert renders == [policy_id]  # rendered whole, once, because its inputs changed
        assert len(decryptions) == Credential.objects.filter(revoked_at__isnull=True).count() - expired()
        reconcile_gateway_policy(policy_id)
        return found

    def expired() -> int:
        return Credential.objects.filter(expires_at__lte=timezone.now()).count()

    # A quota edit in tenancy, which never calls the gateway.
    tenancy_services.team_quota_update(actor=matrix.platform_admin, team=matrix.team, changes={"tokens_per_minute": 7})
    assert found_once() == [policy_id]
    # A key that expires: no row changes, time passes.
    Credential.objects.filter(pk=soon.credential_id).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert found_once() == [policy_id]
    # Nothing else changed: skipped again.
    decryptions.clear()
    renders.clear()
    assert policies_needing_reconcile() == []
    assert (decryptions, renders) == ([], [])


def test_a_lost_fingerprint_costs_one_full_check_then_none(
    matrix: RoleMatrix, cluster: Cluster, decryptions: list[str]
) -> None:
    _keys(teams=2, per_team=2)
    policy_id = ClusterGatewayPolicy.objects.get(cluster=cluster).pk
    reconcile_gateway_policy(policy_id)
    redis_client().delete(f"portal:gateway-inputs:{policy_id}")  # Redis restarted, or the kept one expired
    decryptions.clear()
    assert policies_needing_reconcile() == []
    assert len(decryptions) == 4  # rendered whole once, found unchanged, its inputs kept again
    decryptions.clear()
    assert policies_needing_reconcile() == []
    assert decryptions == []
