"""Reads of tenancy, scoped to what the caller may see."""

from __future__ import annotations

from collections.abc import Iterable

from django.db.models import Prefetch, Q, QuerySet, Sum

from portal.core.errors import NotFound
from portal.tenancy.contracts import TeamBudgetTerms, TeamQuotaContract
from portal.tenancy.models import ROLE_RANK, Membership, QuotaRequest, Role, Team, TeamGpuQuota, TeamQuota, User


def normalize_user_ref(reference: str) -> str:
    """A Backstage user ref as the portal stores it: in lowercase, as Backstage's stringifyEntityRef writes
    it (refs are compared ignoring case), with the namespace ('user:jane' means 'user:default/jane').
    Anything that is not a user ref (a username) is only stripped."""
    reference = reference.strip()
    if not reference.lower().startswith("user:"):
        return reference
    reference = reference.lower()
    if "/" not in reference:
        reference = "user:default/" + reference.removeprefix("user:")
    return reference


def normalize_group_ref(reference: str | None) -> str | None:
    """A Backstage group ref as the portal stores it: stripped and in lowercase; blank means none."""
    if reference is None:
        return None
    return reference.strip().lower() or None


def team_list_visible(*, user: User, platform_admin: bool) -> QuerySet[Team]:
    """Platform admins see every team; everybody else the teams they belong to."""
    teams = Team.objects.all()
    if not platform_admin:
        teams = teams.filter(memberships__user=user)
    return teams.order_by("slug")


def team_get_visible(*, slug: str, user: User, platform_admin: bool) -> Team:
    """The team, or NotFound: a team the caller does not belong to does not exist for them."""
    team = team_list_visible(user=user, platform_admin=platform_admin).filter(slug=slug).first()
    if team is None:
        raise NotFound(f"Team '{slug}' not found", code="team_not_found")
    return team


def membership_role(*, team: Team, user: User) -> str | None:
    membership = Membership.objects.filter(team=team, user=user).only("role").first()
    return membership.role if membership is not None else None


def role_at_least(role: str | None, required: str) -> bool:
    return role is not None and ROLE_RANK[Role(role)] >= ROLE_RANK[Role(required)]


def member_may_develop(*, team: Team, user: User) -> bool:
    """Whether the user is a developer or admin of the team (may manage its keys and deployments)."""
    return role_at_least(membership_role(team=team, user=user), Role.DEVELOPER)


def team_is_active(team: Team) -> bool:
    return team.status == Team.Status.ACTIVE


def user_is_service_principal(user: User) -> bool:
    return user.kind == User.Kind.SERVICE


def team_ids_inactive(*, among: Iterable[int]) -> set[int]:
    """Of the given teams, those that are not active (suspended)."""
    return set(Team.objects.filter(pk__in=list(among)).exclude(status=Team.Status.ACTIVE).values_list("pk", flat=True))


def teams_by_slugs(*, slugs: Iterable[str]) -> list[Team]:
    return list(Team.objects.filter(slug__in=list(slugs)))


def user_memberships(*, user: User) -> QuerySet[Membership]:
    return Membership.objects.filter(user=user).select_related("team").order_by("team__slug")


def team_member_list(*, team: Team) -> QuerySet[Membership]:
    return Membership.objects.filter(team=team).select_related("user").order_by("user__username")


def team_membership_get(*, team: Team, user_ref: str) -> Membership:
    """A member by Backstage ref (the namespace may be omitted, as when adding one) or by username."""
    user_ref = normalize_user_ref(user_ref)
    membership = (
        team_member_list(team=team).filter(user__backstage_ref=user_ref).first()
        or team_member_list(team=team).filter(user__username=user_ref).first()
    )
    if membership is None:
        raise NotFound(f"'{user_ref}' is not a member of team '{team.slug}'", code="member_not_found")
    return membership


def team_quota_get(*, team: Team) -> TeamQuota:
    return TeamQuota.objects.prefetch_related(Prefetch("gpu_limits")).get(team=team)


def team_quota_contract(*, team_slug: str) -> TeamQuotaContract:
    quota = TeamQuota.objects.select_related("team").prefetch_related("gpu_limits").filter(team__slug=team_slug).first()
    if quota is None:
        raise NotFound(f"Team '{team_slug}' not found", code="team_not_found")
    return TeamQuotaContract(
        team_slug=quota.team.slug,
        team_active=quota.team.status == Team.Status.ACTIVE,
        max_deployments=quota.max_deployments,
        tokens_per_minute=quota.tokens_per_minute,
        tokens_per_day=quota.tokens_per_day,
        monthly_budget=quota.monthly_budget,
        budget_policy=quota.budget_policy,
        gpus={limit.accelerator_type: limit.gpus for limit in quota.gpu_limits.all()},
        gpu_borrowing_limits={
            limit.accelerator_type: limit.borrowing_limit for limit in quota.gpu_limits.all() if limit.borrowing_limit
        },
        serving_tier=quota.serving_tier,
    )


def team_get(*, team_id: int) -> Team:
    return Team.objects.get(pk=team_id)


def team_ids_with_a_budget() -> list[int]:
    return list(TeamQuota.objects.filter(monthly_budget__gt=0).values_list("team_id", flat=True))


def team_budget_terms(*, team_id: int) -> TeamBudgetTerms | None:
    """The team's monthly budget and policy, or None when it has no quota."""
    return teams_budget_terms(team_ids=[team_id]).get(team_id)


def teams_budget_terms(*, team_ids: Iterable[int]) -> dict[int, TeamBudgetTerms]:
    """The monthly budget and policy of each of these teams that has a quota, by team id."""
    rows = TeamQuota.objects.filter(team_id__in=list(team_ids)).values_list(
        "team_id", "team__slug", "monthly_budget", "budget_policy"
    )
    return {
        team_id: TeamBudgetTerms(team_id=team_id, team_slug=slug, monthly_budget=budget, budget_policy=policy)
        for team_id, slug, budget, policy in rows
    }


def team_quota_contracts(*, accelerator_types: Iterable[str]) -> list[TeamQuotaContract]:
    """The quotas of the active teams holding (or allowed to borrow) GPUs of any of these types: the teams that get
    GPU queues on a Kueue cluster with such pools."""
    slugs = (
        TeamGpuQuota.objects.filter(
            accelerator_type__in=list(accelerator_types), quota__team__status=Team.Status.ACTIVE
        )
        .filter(Q(gpus__gt=0) | Q(borrowing_limit__gt=0))
        .values_list("quota__team__slug", flat=True)
        .distinct()
    )
    return [team_quota_contract(team_slug=slug) for slug in sorted(set(slugs))]


def user_get_by_reference(*, reference: str) -> User | None:
    """A user by Backstage ref (user:default/jane, any case) or by username."""
    reference = normalize_user_ref(reference)
    if reference.startswith("user:"):
        return User.objects.filter(backstage_ref=reference).first()
    return User.objects.filter(username=reference).first()


def team_quota_lock(*, team: Team) -> TeamQuota:
    """Lock a team's quota row for the rest of the transaction: admissions of one team are serialized,
    so two requests that together exceed the quota cannot both pass."""
    return TeamQuota.objects.select_for_update().get(team=team)


def team_gpu_limit(*, quota: TeamQuota, accelerator_type: str) -> int:
    limit = quota.gpu_limits.filter(accelerator_type=accelerator_type).first()
    return limit.gpus if limit is not None else 0


def team_gpu_borrowing_limit(*, quota: TeamQuota, accelerator_type: str) -> int:
    """GPUs of the type the team may borrow beyond its own on a Kueue cluster (0: none)."""
    limit = quota.gpu_limits.filter(accelerator_type=accelerator_type).first()
    return limit.borrowing_limit if limit is not None else 0


def team_serving_tiers(*, team_slugs: Iterable[str]) -> dict[str, str]:
    """Team slug -> its serving tier (one query for many teams)."""
    return dict(TeamQuota.objects.filter(team__slug__in=list(team_slugs)).values_list("team__slug", "serving_tier"))


def team_accelerator_types(*, team: Team) -> set[str]:
    """Accelerator types the team may hold GPUs of (a limit above zero)."""
    return set(
        TeamQuota.objects.filter(team=team, gpu_limits__gpus__gt=0).values_list(
            "gpu_limits__accelerator_type", flat=True
        )
    )


def team_gpu_total(*, team_slug: str) -> int:
    """All GPUs the team may hold, across accelerator types: the cap of its namespace quota on any cluster."""
    limits = TeamQuota.objects.filter(team__slug=team_slug).values_list("gpu_limits__gpus", flat=True)
    return sum(limit or 0 for limit in limits)


def teams_linked_to_groups() -> dict[str, Team]:
    """Teams linked to a Backstage group, by the group ref (stored in lowercase, unique ignoring case)."""
    return {
        team.backstage_group_ref.lower(): team
        for team in Team.objects.exclude(backstage_group_ref=None)
        if team.backstage_group_ref
    }


def team_admin_backstage_refs(*, team: Team) -> set[str]:
    """The Backstage refs of the team's current admins (admins created in the portal have none)."""
    admins = Membership.objects.filter(team=team, role=Role.ADMIN, user__backstage_ref__isnull=False)
    return {reference for reference in admins.values_list("user__backstage_ref", flat=True) if reference}


def team_admins_without_backstage_ref(*, team: Team) -> int:
    """Admins the Backstage sync does not manage (people created in the portal, without a Backstage ref)."""
    return Membership.objects.filter(team=team, role=Role.ADMIN, user__backstage_ref__isnull=True).count()


def team_get_by_slug(*, slug: str) -> Team | None:
    return Team.objects.filter(slug=slug).first()


def team_admin_contacts(*, team: Team, limit: int = 5) -> list[str]:
    """Whom to ask about a team: its admins' Backstage refs (else usernames), a few, in a stable order."""
    admins = Membership.objects.filter(team=team, role=Role.ADMIN).select_related("user").order_by("user__username")
    return [membership.user.backstage_ref or membership.user.username for membership in admins[:limit]]


def quota_request_list(*, team: Team | None = None, status: str | None = None) -> QuerySet[QuotaRequest]:
    """A team's quota requests (or every team's, for platform admins), newest first."""
    requests = QuotaRequest.objects.select_related("team", "requested_by", "decided_by")
    if team is not None:
        requests = requests.filter(team=team)
    if status:
        requests = requests.filter(status=status)
    return requests.order_by("-created_at", "-id")


def quota_request_get(*, team: Team, request_id: int) -> QuotaRequest:
    found = quota_request_list(team=team).filter(pk=request_id).first()
    if found is None:
        raise NotFound(f"Team '{team.slug}' has no quota request {request_id}", code="quota_request_not_found")
    return found


def gpu_quota_by_accelerator_type() -> dict[str, int]:
    """GPUs granted to all teams together, per accelerator type (what the quotas promise against each pool)."""
    rows = (
        TeamGpuQuota.objects.values("accelerator_type")
        .annotate(gpus=Sum("gpus"))
        .values_list("accelerator_type", "gpus")
    )
    return {accelerator_type: int(gpus or 0) for accelerator_type, gpus in rows}
