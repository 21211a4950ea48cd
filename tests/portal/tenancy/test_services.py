"""Tenancy services and selectors called directly: rules the HTTP layer cannot reach, contracts, audit."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from django.db import IntegrityError, transaction

from portal.core.errors import Conflict, NotFound, ValidationFailed
from portal.core.models import AuditEvent
from portal.tenancy import selectors, services
from portal.tenancy.contracts import TeamQuotaContract
from portal.tenancy.models import Membership, Role, Team, TeamGpuQuota, TeamQuota, User
from tests.factories import MembershipFactory, ServicePrincipalFactory, TeamFactory, UserFactory

pytestmark = pytest.mark.django_db


def problem_fields(error: ValidationFailed) -> dict[str, str]:
    return {problem.field: problem.code for problem in error.problems}


# --- users -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("user:default/jane", "user:default/jane"),
        ("user:jane", "user:default/jane"),
        ("  user:default/jane  ", "user:default/jane"),
        # Backstage's entity refs ignore case and it writes them in lowercase (relations, the user token's sub).
        ("user:partners/Jane.Doe", "user:partners/jane.doe"),
        ("User:Default/JANE", "user:default/jane"),
        ("user:Jane", "user:default/jane"),
    ],
)
def test_backstage_users_are_created_once_under_their_normalized_ref(given: str, stored: str) -> None:
    user = services.user_get_or_create_from_backstage_ref(backstage_ref=given)
    again = services.user_get_or_create_from_backstage_ref(backstage_ref=stored)
    assert user.pk == again.pk
    assert (user.backstage_ref, user.username, user.kind) == (stored, stored, User.Kind.PERSON)
    assert not user.has_usable_password()
    assert AuditEvent.objects.filter(action="user.create_from_backstage").count() == 1


@pytest.mark.parametrize(
    "ref", ["jane", "group:default/team-a", "user:default/", "user:/jane", "user:default/ja ne", "user:Default/ja_"]
)
def test_malformed_backstage_refs_create_nobody(ref: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        services.user_get_or_create_from_backstage_ref(backstage_ref=ref)
    assert problem_fields(caught.value) == {"backstage_ref": "invalid_user_ref"}
    assert not User.objects.exists()
    assert not AuditEvent.objects.exists()


def test_a_mixed_case_ref_is_the_same_user_as_its_lowercase_ref() -> None:
    jane = services.user_get_or_create_from_backstage_ref(backstage_ref="user:default/jane")
    assert services.user_get_or_create_from_backstage_ref(backstage_ref="user:default/Jane").pk == jane.pk
    assert selectors.user_get_by_reference(reference="user:Default/JANE") == jane
    assert User.objects.count() == 1


def test_normalize_user_ref_lowercases_refs_and_leaves_usernames_alone() -> None:
    assert selectors.normalize_user_ref(" User:Partners/Kim ") == "user:partners/kim"
    assert selectors.normalize_user_ref("user:Kim") == "user:default/kim"
    assert selectors.normalize_user_ref("Platform-Admin") == "Platform-Admin"


def test_the_database_refuses_backstage_refs_that_are_not_lowercase() -> None:
    with pytest.raises(IntegrityError), transaction.atomic():
        User.objects.create(username="mixed", backstage_ref="user:default/Jane")
    with pytest.raises(IntegrityError), transaction.atomic():
        Team.objects.create(slug="mixed", display_name="Mixed", backstage_group_ref="group:default/Team-A")
    Team.objects.create(slug="first", display_name="First", backstage_group_ref="group:default/team-a")
    with pytest.raises(IntegrityError), transaction.atomic():
        Team.objects.create(slug="second", display_name="Second", backstage_group_ref="group:default/team-a")
    assert list(Team.objects.values_list("slug", flat=True)) == ["first"]


def test_group_refs_are_stored_in_lowercase_and_taken_ignoring_case() -> None:
    person = UserFactory()
    team = services.team_create(
        actor=person, slug="alpha", display_name="A", backstage_group_ref=" Group:Default/Team-A "
    )
    assert Team.objects.get(pk=team.pk).backstage_group_ref == "group:default/team-a"
    other = services.team_create(actor=person, slug="beta", display_name="B")
    with pytest.raises(Conflict) as caught:
        services.team_create(actor=person, slug="gamma", display_name="G", backstage_group_ref="group:default/TEAM-A")
    assert caught.value.code == "group_ref_taken"
    with pytest.raises(Conflict) as caught:
        services.team_update(actor=person, team=other, changes={"backstage_group_ref": "group:default/Team-A"})
    assert caught.value.code == "group_ref_taken"
    assert Team.objects.get(pk=other.pk).backstage_group_ref is None
    assert not Team.objects.filter(slug="gamma").exists()
    services.team_update(actor=person, team=other, changes={"backstage_group_ref": "group:default/Team-B"})
    assert Team.objects.get(pk=other.pk).backstage_group_ref == "group:default/team-b"


def test_service_principals_are_created_once_and_never_take_a_persons_name() -> None:
    first = services.service_principal_get_or_create(actor=None, name="collector")
    second = services.service_principal_get_or_create(actor=None, name="collector")
    assert first.pk == second.pk
    assert (first.username, first.kind, first.has_usable_password()) == ("service:collector", "service", False)
    assert AuditEvent.objects.filter(action="service_principal.create").count() == 1
    UserFactory(username="service:impostor", backstage_ref=None)
    with pytest.raises(Conflict) as caught:
        services.service_principal_get_or_create(actor=None, name="impostor")
    assert caught.value.code == "not_a_service"


# --- teams -----------------------------------------------------------------------------------------


def test_team_create_reports_every_invalid_field_at_once() -> None:
    person = UserFactory()
    with pytest.raises(ValidationFailed) as caught:
        services.team_create(actor=person, slug="Not_A_Label", display_name="  ", backstage_group_ref="team-a")
    assert problem_fields(caught.value) == {
        "slug": "invalid_slug",
        "backstage_group_ref": "invalid_group_ref",
        "display_name": "blank",
    }
    assert not Team.objects.exists()


def test_team_create_by_a_service_principal_leaves_the_team_without_members() -> None:
    service = ServicePrincipalFactory()
    team = services.team_create(actor=service, slug="gamma", display_name="Gamma")
    assert not Membership.objects.filter(team=team).exists()
    assert TeamQuota.objects.filter(team=team).exists()


def test_team_create_may_leave_the_creator_out() -> None:
    person = UserFactory()
    team = services.team_create(actor=person, slug="gamma", display_name="Gamma", add_actor_as_admin=False)
    assert not Membership.objects.filter(team=team).exists()
    assert list(AuditEvent.objects.values_list("action", flat=True)) == ["team.create"]


def test_team_create_conflicts_on_a_taken_slug_and_group_ref() -> None:
    person = UserFactory()
    services.team_create(actor=person, slug="gamma", display_name="Gamma", backstage_group_ref="group:default/gamma")
    with pytest.raises(Conflict) as slug_taken:
        services.team_create(actor=person, slug="gamma", display_name="Again")
    assert slug_taken.value.code == "team_exists"
    with pytest.raises(Conflict) as ref_taken:
        services.team_create(actor=person, slug="delta", display_name="D", backstage_group_ref="group:default/gamma")
    assert ref_taken.value.code == "group_ref_taken"
    assert list(Team.objects.values_list("slug", flat=True)) == ["gamma"]


def test_the_creators_membership_is_audited_under_its_own_id() -> None:
    person = UserFactory()
    team = services.team_create(actor=person, slug="gamma", display_name="Gamma")
    membership = Membership.objects.get(team=team, user=person)
    event = AuditEvent.objects.get(action="membership.add")
    assert (event.target_type, event.target_id) == ("membership", str(membership.pk))


@pytest.mark.parametrize(("field", "code"), [("slug", "read_only"), ("status", "read_only"), ("quota", "read_only")])
def test_team_update_refuses_fields_it_does_not_own(field: str, code: str) -> None:
    team = TeamFactory(slug="gamma")
    with pytest.raises(ValidationFailed) as caught:
        services.team_update(actor=UserFactory(), team=team, changes={field: "x", "display_name": "New"})
    assert problem_fields(caught.value) == {field: code}
    team.refresh_from_db()
    assert team.display_name == "Gamma"
    assert not AuditEvent.objects.exists()


def test_team_update_trims_the_display_name_and_may_keep_its_own_group_ref() -> None:
    team = TeamFactory(slug="gamma", backstage_group_ref="group:default/gamma")
    updated = services.team_update(
        actor=UserFactory(),
        team=team,
        changes={"display_name": "  Gamma Team ", "backstage_group_ref": "group:default/gamma"},
    )
    assert (updated.display_name, updated.backstage_group_ref) == ("Gamma Team", "group:default/gamma")


def test_team_set_status_refuses_an_unknown_status() -> None:
    team = TeamFactory(slug="gamma")
    with pytest.raises(ValidationFailed) as caught:
        services.team_set_status(actor=UserFactory(), team=team, status="archived")
    assert problem_fields(caught.value) == {"status": "invalid_choice"}
    assert Team.objects.get(pk=team.pk).status == Team.Status.ACTIVE


# --- memberships -----------------------------------------------------------------------------------


def test_membership_services_refuse_an_unknown_role() -> None:
    team = TeamFactory(slug="gamma")
    membership = MembershipFactory(team=team, role=Role.VIEWER)
    with pytest.raises(ValidationFailed) as on_add:
        services.membership_add(actor=UserFactory(), team=team, user_ref="user:default/new", role="owner")
    assert problem_fields(on_add.value) == {"role": "invalid_choice"}
    assert not User.objects.filter(backstage_ref="user:default/new").exists()
    with pytest.raises(ValidationFailed) as on_change:
        services.membership_change_role(actor=UserFactory(), membership=membership, role="owner")
    assert problem_fields(on_change.value) == {"role": "invalid_choice"}
    assert Membership.objects.get(pk=membership.pk).role == Role.VIEWER


def test_removing_a_membership_that_is_already_gone_is_not_found() -> None:
    membership = MembershipFactory(role=Role.VIEWER)
    Membership.objects.filter(pk=membership.pk).delete()
    with pytest.raises(NotFound) as caught:
        services.membership_remove(actor=UserFactory(), membership=membership)
    assert caught.value.code == "member_not_found"
    assert not AuditEvent.objects.exists()


def test_a_team_without_admins_can_still_lose_other_members() -> None:
    # Teams created by service principals start without an admin; that is no "last admin" to protect.
    team = TeamFactory(slug="gamma")
    membership = MembershipFactory(team=team, role=Role.DEVELOPER)
    services.membership_remove(actor=UserFactory(), membership=membership)
    assert not Membership.objects.filter(team=team).exists()


# --- quotas ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"team": "beta"}, {"team": "unknown_field"}),
        ({"max_deployments": -1}, {"max_deployments": "invalid"}),
        ({"tokens_per_minute": "100"}, {"tokens_per_minute": "invalid"}),
        ({"tokens_per_day": 1.5}, {"tokens_per_day": "invalid"}),
        ({"monthly_budget": 10.5}, {"monthly_budget": "invalid"}),
        ({"monthly_budget": Decimal("-0.01")}, {"monthly_budget": "invalid"}),
        ({"monthly_budget": Decimal("Infinity")}, {"monthly_budget": "invalid"}),
        ({"budget_policy": "ignore"}, {"budget_policy": "invalid_choice"}),
        ({"gpus": {"Nvidia_L4": 1}}, {"gpus.Nvidia_L4": "invalid"}),
        ({"gpus": {"nvidia-l4": -2, "nvidia-a10": "2"}}, {"gpus.nvidia-l4": "invalid", "gpus.nvidia-a10": "invalid"}),
    ],
)
def test_team_quota_update_refuses_bad_values_and_changes_nothing(
    changes: dict[str, Any], expected: dict[str, str]
) -> None:
    team = TeamFactory(slug="gamma")
    TeamGpuQuota.objects.create(quota=team.quota, accelerator_type="nvidia-l4", gpus=3)
    before = selectors.team_quota_contract(team_slug="gamma")
    with pytest.raises(ValidationFailed) as caught:
        services.team_quota_update(actor=UserFactory(is_staff=True), team=team, changes=changes)
    assert problem_fields(caught.value) == expected
    assert selectors.team_quota_contract(team_slug="gamma") == before
    assert not AuditEvent.objects.exists()


def test_the_quota_contract_follows_updates_and_team_status() -> None:
    team = TeamFactory(slug="gamma")
    admin = UserFactory(is_staff=True)
    services.team_quota_update(
        actor=admin,
        team=team,
        changes={
            "max_deployments": 2,
            "tokens_per_minute": 10,
            "tokens_per_day": 100,
            "monthly_budget": Decimal("12.34"),
            "budget_policy": "block",
            "gpus": {"nvidia-l4": 4, "nvidia-h100-80gb": 2},
        },
    )
    services.team_set_status(actor=admin, team=team, status=Team.Status.SUSPENDED)
    assert selectors.team_quota_contract(team_slug="gamma") == TeamQuotaContract(
        team_slug="gamma",
        team_active=False,
        max_deployments=2,
        tokens_per_minute=10,
        tokens_per_day=100,
        monthly_budget=Decimal("12.34"),
        budget_policy="block",
        gpus={"nvidia-h100-80gb": 2, "nvidia-l4": 4},
    )
    quota = selectors.team_quota_get(team=team)
    assert selectors.team_gpu_limit(quota=quota, accelerator_type="nvidia-l4") == 4
    assert selectors.team_gpu_limit(quota=quota, accelerator_type="nvidia-a100-40gb") == 0
    assert selectors.team_gpu_total(team_slug="gamma") == 6


def test_gpu_totals_are_zero_without_limits_and_unknown_teams_have_no_contract() -> None:
    TeamFactory(slug="gamma")
    assert selectors.team_gpu_total(team_slug="gamma") == 0
    assert selectors.team_gpu_total(team_slug="nope") == 0
    with pytest.raises(NotFound) as caught:
        selectors.team_quota_contract(team_slug="nope")
    assert caught.value.code == "team_not_found"


# --- selectors -------------------------------------------------------------------------------------


def test_team_visibility_follows_membership_unless_platform_admin() -> None:
    alpha, beta = TeamFactory(slug="alpha"), TeamFactory(slug="beta")
    member = MembershipFactory(team=alpha, role=Role.VIEWER).user
    outsider = UserFactory()
    assert list(selectors.team_list_visible(user=member, platform_admin=False)) == [alpha]
    assert list(selectors.team_list_visible(user=outsider, platform_admin=False)) == []
    assert list(selectors.team_list_visible(user=outsider, platform_admin=True)) == [alpha, beta]
    assert selectors.team_get_visible(slug="beta", user=outsider, platform_admin=True) == beta
    with pytest.raises(NotFound) as caught:
        selectors.team_get_visible(slug="beta", user=member, platform_admin=False)
    assert caught.value.code == "team_not_found"
    assert selectors.membership_role(team=alpha, user=member) == "viewer"
    assert selectors.membership_role(team=beta, user=member) is None


@pytest.mark.parametrize(
    ("role", "required", "allowed"),
    [
        (None, "viewer", False),
        ("viewer", "viewer", True),
        ("viewer", "developer", False),
        ("developer", "developer", True),
        ("developer", "admin", False),
        ("admin", "viewer", True),
        ("admin", "admin", True),
    ],
)
def test_roles_include_the_roles_below_them(role: str | None, required: str, allowed: bool) -> None:
    assert selectors.role_at_least(role, required) is allowed


def test_members_are_found_by_full_ref_short_ref_or_username() -> None:
    team = TeamFactory(slug="gamma")
    jane = MembershipFactory(team=team, user=UserFactory(backstage_ref="user:default/jane")).user
    bob = MembershipFactory(team=team, user=UserFactory(username="bob", backstage_ref=None)).user
    for reference in ("user:default/jane", "user:jane"):
        assert selectors.team_membership_get(team=team, user_ref=reference).user == jane
    assert selectors.team_membership_get(team=team, user_ref="bob").user == bob
    with pytest.raises(NotFound) as caught:
        selectors.team_membership_get(team=team, user_ref="user:default/bob")
    assert caught.value.code == "member_not_found"
