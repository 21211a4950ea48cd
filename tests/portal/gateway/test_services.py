"""Gateway services and selectors: the contracts other apps rely on (issue, client ids, last use, budget
enforcement), rotation, revocation, and that a key never reaches the audit log or the database in clear."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.utils import timezone

from portal.core.errors import Conflict, ValidationFailed
from portal.core.models import AuditEvent
from portal.gateway import selectors, services
from portal.gateway.contracts import CredentialRef
from portal.gateway.models import ClusterGatewayPolicy, Credential, TeamGatewayPolicy
from portal.tenancy.models import Team
from tests.conftest import RoleMatrix, assert_problem, client_with_token
from tests.factories import CatalogModelFactory, ClusterFactory, TeamFactory

pytestmark = pytest.mark.django_db


def test_issue_returns_the_key_once_and_stores_only_hash_and_ciphertext(matrix: RoleMatrix) -> None:
    issued = services.credential_issue(actor=matrix.developer, team=matrix.team, name="ci")
    assert re.fullmatch(r"[0-9a-f]{12}", issued.key_id)
    assert issued.client_id == f"alpha.{issued.key_id}"
    assert issued.key.startswith(f"gpk_{issued.key_id}_")
    assert len(issued.key) > 50
    row = Credential.objects.get(pk=issued.credential_id)
    assert row.key_hash == hashlib.sha256(issued.key.encode()).hexdigest()
    assert issued.key not in row.key_ciphertext
    assert row.key_prefix == f"gpk_{issued.key_id}"
    assert row.created_by == matrix.developer
    assert issued.key not in repr(issued)
    event = AuditEvent.objects.get(action="credential.issue", target_id=str(issued.credential_id))
    assert issued.key not in json.dumps([event.before, event.after])
    assert event.after["client_id"] == issued.client_id


def test_every_issued_key_has_its_own_key_id(matrix: RoleMatrix) -> None:
    first = services.credential_issue(actor=matrix.developer, team=matrix.team, name="one")
    second = services.credential_issue(actor=matrix.developer, team=matrix.team, name="two")
    rotated = services.credential_rotate(actor=matrix.developer, credential=first.credential)
    assert len({first.key_id, second.key_id, rotated.key_id}) == 3
    assert len({first.key, second.key, rotated.key}) == 3


def test_credential_by_client_id_resolves_every_state_and_only_unknown_is_none(matrix: RoleMatrix) -> None:
    active = services.credential_issue(actor=matrix.developer, team=matrix.team, name="active")
    revoked = services.credential_issue(actor=matrix.developer, team=matrix.team, name="revoked")
    services.credential_revoke(actor=matrix.developer, credential=revoked.credential)
    old = services.credential_issue(actor=matrix.developer, team=matrix.team, name="rotated")
    services.credential_rotate(actor=matrix.developer, credential=old.credential, overlap=timedelta(0))
    expired = services.credential_issue(
        actor=matrix.developer, team=matrix.team, name="expired", expires_at=timezone.now() + timedelta(seconds=30)
    )
    Credential.objects.filter(pk=expired.credential_id).update(expires_at=timezone.now() - timedelta(days=1))
    for issued in (active, revoked, old, expired):
        ref = selectors.credential_by_client_id(issued.client_id)
        assert ref == CredentialRef(
            credential_id=issued.credential_id,
            key_id=issued.key_id,
            team_id=matrix.team.pk,
            team_slug="alpha",
            name=issued.credential.name,
            client_id=issued.client_id,
            revoked_at=Credential.objects.get(pk=issued.credential_id).revoked_at,
            expires_at=Credential.objects.get(pk=issued.credential_id).expires_at,
        )
    assert selectors.credential_by_client_id("alpha.000000000000") is None
    assert selectors.credential_by_client_id(f"beta.{active.key_id}") is None  # right key id, wrong team
    assert selectors.credential_by_client_id("nonsense") is None
    assert selectors.credential_by_client_id("") is None


def test_mark_used_only_moves_forward(matrix: RoleMatrix) -> None:
    one = services.credential_issue(actor=None, team=matrix.team, name="one")
    two = services.credential_issue(actor=None, team=matrix.team, name="two")
    noon = datetime(2026, 11, 1, 12, tzinfo=UTC)
    services.credential_mark_used(last_used={one.credential_id: noon, two.credential_id: noon})
    services.credential_mark_used(last_used={one.credential_id: noon - timedelta(hours=1)})
    services.credential_mark_used(last_used={two.credential_id: noon + timedelta(hours=1)})
    assert Credential.objects.get(pk=one.credential_id).last_used_at == noon
    assert Credential.objects.get(pk=two.credential_id).last_used_at == noon + timedelta(hours=1)
    audits = AuditEvent.objects.filter(action__startswith="credential.").exclude(action="credential.issue")
    assert audits.count() == 0


def test_budget_enforcement_bumps_every_cluster_policy_and_audits(matrix: RoleMatrix) -> None:
    clusters = [ClusterFactory(), ClusterFactory()]
    ClusterGatewayPolicy.objects.create(cluster=clusters[0], generation=4, observed_generation=4)
    changed = services.team_budget_enforcement_set(
        actor=None, team=matrix.team, enforcement="block", reason="budget of November spent"
    )
    assert changed is True
    policy = TeamGatewayPolicy.objects.get(team=matrix.team)
    assert (policy.budget_enforcement, policy.reason, policy.generation) == ("block", "budget of November spent", 2)
    generations = dict(ClusterGatewayPolicy.objects.values_list("cluster_id", "generation"))
    assert generations == {clusters[0].pk: 5, clusters[1].pk: 1}
    event = AuditEvent.objects.get(action="team.gateway_enforcement")
    assert event.before == {"budget_enforcement": "none", "reason": ""}
    assert event.after == {"budget_enforcement": "block", "reason": "budget of November spent"}
    # The same value again changes nothing: no bump, no audit.
    assert services.team_budget_enforcement_set(actor=None, team=matrix.team, enforcement="block", reason="x") is False
    assert dict(ClusterGatewayPolicy.objects.values_list("cluster_id", "generation")) == generations
    assert AuditEvent.objects.filter(action="team.gateway_enforcement").count() == 1
    assert services.team_budget_enforcement_set(actor=None, team=matrix.team, enforcement="throttle", reason="") is True
    assert TeamGatewayPolicy.objects.get(team=matrix.team).budget_enforcement == "throttle"


def test_budget_enforcement_refuses_unknown_values_and_changes_nothing(matrix: RoleMatrix) -> None:
    with pytest.raises(ValidationFailed) as refused:
        services.team_budget_enforcement_set(actor=None, team=matrix.team, enforcement="alert", reason="")
    assert refused.value.problems[0].field == "enforcement"
    assert not TeamGatewayPolicy.objects.filter(team=matrix.team, budget_enforcement="alert").exists()
    assert not AuditEvent.objects.filter(action="team.gateway_enforcement").exists()


def test_allowed_models_must_be_models_the_team_may_use(matrix: RoleMatrix) -> None:
    CatalogModelFactory(slug="open-model")
    hidden = CatalogModelFactory(slug="hidden-model", visibility="teams")
    hidden.visible_to_teams.add(matrix.other_team)
    issued = services.credential_issue(actor=None, team=matrix.team, name="ok", allowed_models=["open-model"])
    assert issued.credential.allowed_models == ["open-model"]
    with pytest.raises(ValidationFailed) as refused:
        services.credential_issue(actor=None, team=matrix.team, name="bad", allowed_models=["hidden-model", "nope"])
    assert [(p.field, p.code) for p in refused.value.problems] == [("allowed_models", "model_not_allowed")]
    assert "hidden-model" in refused.value.problems[0].message
    assert not Credential.objects.filter(name="bad").exists()


def test_rotation_keeps_the_old_key_for_the_overlap_only(matrix: RoleMatrix) -> None:
    old = services.credential_issue(actor=None, team=matrix.team, name="svc")
    before = timezone.now()
    new = services.credential_rotate(actor=None, credential=old.credential, overlap=timedelta(hours=2))
    old_row = Credential.objects.get(pk=old.credential_id)
    assert old_row.replaced_by_id == new.credential_id
    assert old_row.rotated_at is not None
    assert before + timedelta(hours=2) <= old_row.expires_at <= timezone.now() + timedelta(hours=2)
    assert selectors.credential_state(old_row) == "rotating"
    assert new.credential.name == "svc"
    with pytest.raises(Conflict):
        services.credential_rotate(actor=None, credential=old_row)
    with pytest.raises(ValidationFailed):
        services.credential_rotate(actor=None, credential=new.credential, overlap=timedelta(days=365))


def test_duplicate_current_name_is_a_conflict(matrix: RoleMatrix) -> None:
    services.credential_issue(actor=None, team=matrix.team, name="dup")
    with pytest.raises(Conflict):
        services.credential_issue(actor=None, team=matrix.team, name="dup")
    assert Credential.objects.filter(name="dup").count() == 1


def test_suspended_team_gets_no_new_keys(matrix: RoleMatrix) -> None:
    Team.objects.filter(pk=matrix.team.pk).update(status="suspended")
    matrix.team.refresh_from_db()
    with pytest.raises(Conflict):
        services.credential_issue(actor=None, team=matrix.team, name="x")
    assert not Credential.objects.exists()


def test_changes_nudge_the_reconcile_of_every_cluster_policy_after_commit(
    matrix: RoleMatrix, django_capture_on_commit_callbacks: Any
) -> None:
    clusters = [ClusterFactory(), ClusterFactory()]
    with django_capture_on_commit_callbacks() as callbacks:
        issued = services.credential_issue(actor=None, team=matrix.team, name="ci")
    assert len(callbacks) == len(clusters)  # one gateway.reconcile per cluster policy, ids only
    policies = ClusterGatewayPolicy.objects.order_by("cluster_id")
    assert [policy.cluster_id for policy in policies] == [cluster.pk for cluster in clusters]
    with django_capture_on_commit_callbacks() as callbacks:
        services.credential_revoke(actor=None, credential=issued.credential)
    assert len(callbacks) == 2
    assert list(policies.values_list("generation", flat=True)) == [2, 2]
    with django_capture_on_commit_callbacks() as callbacks:
        services.credential_revoke(actor=None, credential=issued.credential)  # already revoked: nothing to do
    assert callbacks == []
    assert list(policies.values_list("generation", flat=True)) == [2, 2]


def test_a_key_that_would_overflow_the_token_limit_policy_is_refused_naming_the_limit(matrix: RoleMatrix) -> None:
    for index in range(127):
        services.credential_issue(actor=None, team=TeamFactory(slug=f"full-{index}"), name="k")
    services.credential_issue(actor=None, team=matrix.team, name="k")  # 128 teams: 256 rules, exactly the limit
    assert selectors.rate_limit_rules_needed() == 256
    services.credential_issue(actor=None, team=matrix.team, name="second")  # same team: no new rule
    response = client_with_token(matrix.outsider).post(
        "/api/v1/teams/beta/credentials", {"name": "one-too-many"}, format="json"
    )
    body = assert_problem(response, 409, "gateway_rule_limit")
    assert "at most 256" in body["detail"]
    assert not Credential.objects.filter(team=matrix.other_team).exists()
    CatalogModelFactory(slug="m")
    with pytest.raises(Conflict, match="at most 256"):  # a model allow-list needs a rule of its own
        services.credential_issue(actor=None, team=matrix.team, name="restricted", allowed_models=["m"])
    assert not Credential.objects.filter(name="restricted").exists()


def test_a_key_change_marks_dirty_only_the_deployments_whose_routes_it_changes(
    matrix: RoleMatrix, django_capture_on_commit_callbacks: Any
) -> None:
    """A route lists key ids only when some key of the team may not call its model: a key change that leaves every
    route as it was bumps nothing; one that changes a route bumps its deployment's generation, with an event."""
    from portal.deployments.models import Deployment, DeploymentEvent
    from tests.factories import AcceleratorPoolFactory, SelfHostedVersionFactory
    from workers.provisioning.reconciler import redis_client
    from workers.tasks.deployments import team_key_routes_changed

    pool = AcceleratorPoolFactory()
    version = SelfHostedVersionFactory(model__slug="qwen")
    CatalogModelFactory(slug="other")
    deployment = Deployment.objects.create(
        team=matrix.team,
        name="chat",
        model_version=version,
        cluster=pool.cluster,
        accelerator_type=pool.accelerator_type,
        served_model_name="qwen",
        gpus_per_replica=1,
    )

    def issue(name: str, allowed: list[str]) -> tuple[list[str], int]:
        """The tasks the issue names on commit, and the deployment's generation once they have run. Marking the
        deployments dirty is the deployments app's: the gateway names its task (independent siblings), for the
        models whose routes the change alters; the task marks the team's deployments of those models."""
        redis_client().delete("reconcile")
        with django_capture_on_commit_callbacks(execute=True):
            services.credential_issue(actor=None, team=matrix.team, name=name, allowed_models=allowed)
        queued = [json.loads(raw) for raw in reversed(redis_client().lrange("reconcile", 0, -1))]
        redis_client().delete("reconcile")
        for message in queued:
            if message["headers"]["task"] == "deployments.team_key_routes_changed":
                with django_capture_on_commit_callbacks():
                    team_key_routes_changed(*json.loads(base64.b64decode(message["body"]))[0])
        deployment.refresh_from_db()
        return sorted(message["headers"]["task"] for message in queued), deployment.generation

    policy, routes = "gateway.reconcile", "deployments.team_key_routes_changed"
    assert issue("plain", []) == ([policy], 1)  # the cluster's gateway policy only: every key may call any model
    # Every key may still call qwen: its route is unchanged. Other models' routes now list 'plain' only (the team has
    # no deployment of them: the task finds none to mark).
    assert issue("narrow", ["qwen"]) == ([routes, policy], 1)
    assert issue("elsewhere", ["other"]) == ([routes, policy], 2)  # now qwen's route lists the keys that may
    assert issue("plain-two", []) == ([routes, policy], 3)  # and the new key must be added to it
    events = DeploymentEvent.objects.filter(deployment=deployment, reason="InputsChanged").order_by("id")
    assert [(event.generation, event.message) for event in events] == [
        (2, "key 'elsewhere' of team alpha issued"),
        (3, "key 'plain-two' of team alpha issued"),
    ]


def test_rotating_a_restricted_key_needs_room_for_its_overlap_rule(matrix: RoleMatrix, settings: Any) -> None:
    """Through the overlap the old restricted key is still current: its blocking rule is needed twice."""
    CatalogModelFactory(slug="m")
    restricted = services.credential_issue(actor=None, team=matrix.team, name="r", allowed_models=["m"])
    plain = services.credential_issue(actor=None, team=matrix.team, name="p")
    assert selectors.rate_limit_rules_needed() == 3
    settings.GATEWAY_MAX_RATE_LIMIT_RULES = 3
    with pytest.raises(Conflict, match=r"would need 4 rules.*at most 3") as refused:
        services.credential_rotate(actor=None, credential=restricted.credential)
    assert refused.value.code == "gateway_rule_limit"
    assert Credential.objects.get(pk=restricted.credential_id).rotated_at is None
    assert Credential.objects.count() == 2
    services.credential_rotate(actor=None, credential=plain.credential)  # an unrestricted key needs no new rule
    assert selectors.rate_limit_rules_needed() == 3


@pytest.mark.django_db(transaction=True)
def test_the_rule_room_check_and_its_insert_hold_one_lock_until_commit(matrix: RoleMatrix) -> None:
    """Two concurrent issues cannot both see the last free rule: the check takes a transaction-scoped advisory
    lock that a second connection cannot get until the first transaction ends."""
    import psycopg
    from django.db import connection, transaction

    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    with psycopg.connect(**params, autocommit=True) as other:

        def other_gets_the_lock() -> bool:
            row = other.execute("SELECT pg_try_advisory_lock(%s)", [services.RATE_LIMIT_ROOM_LOCK]).fetchone()
            assert row is not None
            if row[0]:
                other.execute("SELECT pg_advisory_unlock(%s)", [services.RATE_LIMIT_ROOM_LOCK])
            return bool(row[0])

        with transaction.atomic():
            services.credential_issue(actor=None, team=matrix.team, name="ci")
            assert not other_gets_the_lock()
        assert other_gets_the_lock()


def test_an_expired_key_does_not_hold_its_name(matrix: RoleMatrix) -> None:
    old = services.credential_issue(actor=None, team=matrix.team, name="nightly")
    Credential.objects.filter(pk=old.credential_id).update(expires_at=timezone.now() - timedelta(seconds=1))
    new = services.credential_issue(actor=matrix.developer, team=matrix.team, name="nightly")
    retired = Credential.objects.get(pk=old.credential_id)
    assert selectors.credential_state(retired) == "expired"
    assert retired.replaced_by_id == new.credential_id
    assert selectors.credential_state(new.credential) == "active"
    event = AuditEvent.objects.get(action="credential.retire")
    assert (event.target_id, event.after["replaced_by"]) == (str(old.credential_id), new.credential_id)
    # A key that still works keeps its name.
    with pytest.raises(Conflict):
        services.credential_issue(actor=None, team=matrix.team, name="nightly")
    assert Credential.objects.filter(name="nightly").count() == 2


def test_the_resync_bumps_a_drifted_policy_once_and_leaves_a_pending_one(matrix: RoleMatrix) -> None:
    cluster = ClusterFactory()
    policy_id = services.gateway_policy_ensure(cluster=cluster).pk
    ClusterGatewayPolicy.objects.filter(pk=policy_id).update(generation=4, observed_generation=4)
    assert services.gateway_policies_bump_drifted(policy_ids=[policy_id]) == [policy_id]
    assert ClusterGatewayPolicy.objects.filter(pk=policy_id).values_list("generation", "observed_generation").get() == (
        5,
        4,
    )
    assert services.gateway_policies_bump_drifted(policy_ids=[policy_id]) == []  # already pending
    assert ClusterGatewayPolicy.objects.get(pk=policy_id).generation == 5
