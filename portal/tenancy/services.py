"""Writes of tenancy: users from Backstage, teams, memberships and quotas; each one audited."""

from __future__ import annotations

import logging
import re
from decimal import Decimal
from typing import Any

from celery import current_app
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from portal.core.audit import audit_record
from portal.core.errors import Conflict, FieldProblem, NotFound, ValidationFailed
from portal.tenancy.contracts import SERVING_TIERS
from portal.tenancy.models import (
    ACCELERATOR_TYPE_PATTERN,
    BACKSTAGE_GROUP_REF_PATTERN,
    BACKSTAGE_USER_REF_PATTERN,
    TEAM_SLUG_PATTERN,
    TEAM_SLUG_RESERVED_PREFIX,
    TOKEN_LIMIT_MAX,
    Membership,
    QuotaRequest,
    Role,
    Team,
    TeamGpuQuota,
    TeamQuota,
    User,
)
from portal.tenancy.selectors import (
    normalize_group_ref,
    normalize_user_ref,
    team_admin_contacts,
    user_get_by_reference,
)

_USER_REF = re.compile(BACKSTAGE_USER_REF_PATTERN)
_GROUP_REF = re.compile(BACKSTAGE_GROUP_REF_PATTERN)
_TEAM_SLUG = re.compile(TEAM_SLUG_PATTERN)
_ACCELERATOR = re.compile(ACCELERATOR_TYPE_PATTERN)


def user_get_or_create_from_backstage_ref(*, backstage_ref: str) -> User:
    """The user behind a Backstage identity, created on first sight (safe under concurrent first sights)."""
    reference = normalize_user_ref(backstage_ref)
    if not _USER_REF.fullmatch(reference):
        raise ValidationFailed.for_field(
            "backstage_ref", "must be a Backstage user entity ref like 'user:default/jane'", code="invalid_user_ref"
        )
    user, created = User.objects.get_or_create(
        backstage_ref=reference, defaults={"username": reference[:150], "kind": User.Kind.PERSON}
    )
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
        audit_record(
            actor=None,
            action="user.create_from_backstage",
            target_type="user",
            target_id=user.pk,
            target_label=reference,
            after={"backstage_ref": reference},
        )
    return user


def _team_snapshot(team: Team) -> dict[str, Any]:
    return {
        "slug": team.slug,
        "display_name": team.display_name,
        "description": team.description,
        "backstage_group_ref": team.backstage_group_ref,
        "cost_center": team.cost_center,
        "status": team.status,
    }


def _validate_team_fields(
    *, slug: str | None = None, backstage_group_ref: str | None = None, display_name: str | None = None
) -> None:
    problems: list[FieldProblem] = []
    if slug is not None and not _TEAM_SLUG.fullmatch(slug):
        problems.append(
            FieldProblem(
                "slug",
                "must be a DNS-1123 label of at most 40 characters: lowercase letters, digits and '-', "
                "starting and ending with a letter or digit",
                "invalid_slug",
            )
        )
    elif slug is not None and slug.startswith(TEAM_SLUG_RESERVED_PREFIX):
        problems.append(
            FieldProblem(
                "slug", f"must not start with '{TEAM_SLUG_RESERVED_PREFIX}' (reserved for the portal)", "reserved_slug"
            )
        )
    if backstage_group_ref is not None and backstage_group_ref and not _GROUP_REF.fullmatch(backstage_group_ref):
        problems.append(
            FieldProblem(
                "backstage_group_ref", "must be a Backstage group ref like 'group:default/team-a'", "invalid_group_ref"
            )
        )
    if display_name is not None and not display_name.strip():
        problems.append(FieldProblem("display_name", "must not be blank", "blank"))
    if problems:
        raise ValidationFailed(problems)


def _team_exists(team: Team) -> Conflict:
    """The slug is taken: whom to ask to join (its admins' Backstage refs, its group), so a person onboarding a
    team that exists knows where to go. A 409 already says the slug exists; these are names, never members' roles."""
    contacts = team_admin_contacts(team=team)
    ask = f"; ask one of its admins ({', '.join(contacts)}) to add you" if contacts else ""
    return Conflict(
        f"Team '{team.slug}' already exists{ask}",
        code="team_exists",
        extra={"admins": contacts, "backstage_group_ref": team.backstage_group_ref},
    )


def _default_quota_create(*, team: Team) -> TeamQuota:
    """A new team's quota from the configured defaults (settings.QUOTA_DEFAULTS, PORTAL_DEFAULT_* variables): with
    PORTAL_DEFAULT_GPU_QUOTA set, a team onboarded through Backstage can deploy without waiting for an admin."""
    defaults: dict[str, Any] = settings.QUOTA_DEFAULTS
    quota = TeamQuota.objects.create(
        team=team,
        max_deployments=defaults["max_deployments"],
        tokens_per_minute=defaults["tokens_per_minute"],
        tokens_per_day=defaults["tokens_per_day"],
        monthly_budget=defaults["monthly_budget"],
        budget_policy=defaults["budget_policy"],
    )
    TeamGpuQuota.objects.bulk_create(
        TeamGpuQuota(quota=quota, accelerator_type=accelerator, gpus=gpus)
        for accelerator, gpus in sorted(defaults["gpus"].items())
    )
    return quota


@transaction.atomic
def team_create(
    *,
    actor: User,
    slug: str,
    display_name: str,
    description: str = "",
    backstage_group_ref: str | None = None,
    cost_center: str = "",
    add_actor_as_admin: bool = True,
) -> Team:
    """Create a team with the default quota; the creating person becomes its first admin."""
    backstage_group_ref = normalize_group_ref(backstage_group_ref)
    _validate_team_fields(slug=slug, backstage_group_ref=backstage_group_ref, display_name=display_name)
    existing = Team.objects.filter(slug=slug).first()
    if existing is not None:
        raise _team_exists(existing)
    if backstage_group_ref and Team.objects.filter(backstage_group_ref=backstage_group_ref).exists():
        raise Conflict(f"Another team is linked to '{backstage_group_ref}'", code="group_ref_taken")
    try:
        with transaction.atomic():
            team = Team.objects.create(
                slug=slug,
                display_name=display_name.strip(),
                description=description,
                backstage_group_ref=backstage_group_ref or None,
                cost_center=cost_center,
            )
    except IntegrityError:
        if backstage_group_ref and Team.objects.filter(backstage_group_ref=backstage_group_ref).exists():
            raise Conflict(f"Another team is linked to '{backstage_group_ref}'", code="group_ref_taken") from None
        raise _team_exists(Team.objects.get(slug=slug)) from None
    _default_quota_create(team=team)
    audit_record(
        actor=actor,
        action="team.create",
        target_type="team",
        target_id=team.pk,
        target_label=team.slug,
        team_slug=team.slug,
        after=_team_snapshot(team),
    )
    if add_actor_as_admin and actor.kind == User.Kind.PERSON:
        membership = Membership.objects.create(team=team, user=actor, role=Role.ADMIN)
        audit_record(
            actor=actor,
            action="membership.add",
            target_type="membership",
            target_id=membership.pk,
            target_label=f"{actor} in {team.slug}",
            team_slug=team.slug,
            after={"user": str(actor), "role": Role.ADMIN},
        )
    return team


_TEAM_EDITABLE = ("display_name", "description", "backstage_group_ref", "cost_center")


@transaction.atomic
def team_update(*, actor: User, team: Team, changes: dict[str, Any]) -> Team:
    """Change a team's descriptive fields; the slug is immutable and status has its own service."""
    unknown = sorted(set(changes) - set(_TEAM_EDITABLE))
    if unknown:
        raise ValidationFailed([FieldProblem(name, "cannot be changed", "read_only") for name in unknown])
    team = Team.objects.select_for_update().get(pk=team.pk)
    if "backstage_group_ref" in changes:
        changes = {**changes, "backstage_group_ref": normalize_group_ref(changes["backstage_group_ref"])}
    _validate_team_fields(
        backstage_group_ref=changes.get("backstage_group_ref"), display_name=changes.get("display_name")
    )
    group_ref = changes.get("backstage_group_ref")
    if group_ref and Team.objects.filter(backstage_group_ref=group_ref).exclude(pk=team.pk).exists():
        raise Conflict(f"Another team is linked to '{group_ref}'", code="group_ref_taken")
    before = _team_snapshot(team)
    for name, value in changes.items():
        if name == "display_name":
            value = value.strip()
        setattr(team, name, value)
    after = _team_snapshot(team)
    if after == before:
        return team
    try:
        with transaction.atomic():
            team.save()
    except IntegrityError:
        # Another team took the group between the check above and this write (the constraint ignores case).
        raise Conflict(f"Another team is linked to '{group_ref}'", code="group_ref_taken") from None
    audit_record(
        actor=actor,
        action="team.update",
        target_type="team",
        target_id=team.pk,
        target_label=team.slug,
        team_slug=team.slug,
        before=before,
        after=after,
    )
    return team


@transaction.atomic
def team_set_status(*, actor: User, team: Team, status: str) -> Team:
    """Suspend or reactivate a team (platform admins)."""
    if status not in Team.Status.values:
        raise ValidationFailed.for_field(
            "status", f"must be one of {', '.join(Team.Status.values)}", code="invalid_choice"
        )
    team = Team.objects.select_for_update().get(pk=team.pk)
    if team.status == status:
        return team
    before = _team_snapshot(team)
    team.status = status
    team.save(update_fields=["status", "updated_at"])
    audit_record(
        actor=actor,
        action="team.suspend" if status == Team.Status.SUSPENDED else "team.reactivate",
        target_type="team",
        target_id=team.pk,
        target_label=team.slug,
        team_slug=team.slug,
        before=before,
        after=_team_snapshot(team),
    )
    return team


def _resolve_member(user_ref: str) -> User:
    reference = user_ref.strip()
    if reference.lower().startswith("user:"):
        try:
            return user_get_or_create_from_backstage_ref(backstage_ref=reference)
        except ValidationFailed as error:
            # Name the field of this request, not the user model's.
            problem = error.problems[0]
            raise ValidationFailed.for_field("user", problem.message, code=problem.code) from None
    user = user_get_by_reference(reference=reference)
    if user is None:
        raise ValidationFailed.for_field(
            "user", f"no user '{reference}'; use a Backstage ref like 'user:default/jane'", code="unknown_user"
        )
    return user


def _check_role(role: str) -> None:
    if role not in Role.values:
        raise ValidationFailed.for_field("role", f"must be one of {', '.join(Role.values)}", code="invalid_choice")


@transaction.atomic
def membership_add(*, actor: User, team: Team, user_ref: str, role: str) -> Membership:
    _check_role(role)
    user = _resolve_member(user_ref)
    if user.kind != User.Kind.PERSON:
        raise ValidationFailed.for_field("user", "service principals cannot be team members", code="not_a_person")
    Team.objects.select_for_update().filter(pk=team.pk).first()
    if Membership.objects.filter(team=team, user=user).exists():
        raise Conflict(f"'{user}' is already a member of team '{team.slug}'", code="already_member")
    membership = Membership.objects.create(team=team, user=user, role=role)
    audit_record(
        actor=actor,
        action="membership.add",
        target_type="membership",
        target_id=membership.pk,
        target_label=f"{user} in {team.slug}",
        team_slug=team.slug,
        after={"user": str(user), "role": role},
    )
    return membership


def _admin_count_locked(team: Team) -> int:
    # The team row lock serializes membership changes of one team, so "last admin" checks cannot race.
    Team.objects.select_for_update().filter(pk=team.pk).first()
    return Membership.objects.filter(team=team, role=Role.ADMIN).count()


@transaction.atomic
def membership_change_role(*, actor: User, membership: Membership, role: str) -> Membership:
    _check_role(role)
    admins = _admin_count_locked(membership.team)
    membership = Membership.objects.select_for_update().select_related("team", "user").get(pk=membership.pk)
    if membership.role == role:
        return membership
    if membership.role == Role.ADMIN and admins <= 1:
        raise Conflict(f"'{membership.user}' is the last admin of team '{membership.team.slug}'", code="last_admin")
    before = {"user": str(membership.user), "role": membership.role}
    membership.role = role
    membership.save(update_fields=["role", "updated_at"])
    audit_record(
        actor=actor,
        action="membership.change_role",
        target_type="membership",
        target_id=membership.pk,
        target_label=f"{membership.user} in {membership.team.slug}",
        team_slug=membership.team.slug,
        before=before,
        after={"user": str(membership.user), "role": role},
    )
    return membership


@transaction.atomic
def membership_remove(*, actor: User, membership: Membership) -> None:
    admins = _admin_count_locked(membership.team)
    locked = Membership.objects.select_for_update().select_related("team", "user").filter(pk=membership.pk).first()
    if locked is None:
        raise NotFound("membership not found", code="member_not_found")
    if locked.role == Role.ADMIN and admins <= 1:
        raise Conflict(f"'{locked.user}' is the last admin of team '{locked.team.slug}'", code="last_admin")
    before = {"user": str(locked.user), "role": locked.role}
    membership_id = locked.pk
    locked.delete()
    audit_record(
        actor=actor,
        action="membership.remove",
        target_type="membership",
        target_id=membership_id,
        target_label=f"{before['user']} in {locked.team.slug}",
        team_slug=locked.team.slug,
        before=before,
    )


def _quota_snapshot(quota: TeamQuota) -> dict[str, Any]:
    return {
        "max_deployments": quota.max_deployments,
        "tokens_per_minute": quota.tokens_per_minute,
        "tokens_per_day": quota.tokens_per_day,
        "monthly_budget": str(quota.monthly_budget),
        "budget_policy": quota.budget_policy,
        "gpus": {limit.accelerator_type: limit.gpus for limit in quota.gpu_limits.order_by("accelerator_type")},
        "serving_tier": quota.serving_tier,
        "gpu_borrowing_limits": {
            limit.accelerator_type: limit.borrowing_limit
            for limit in quota.gpu_limits.order_by("accelerator_type")
            if limit.borrowing_limit
        },
    }


logger = logging.getLogger(__name__)
# A team's GPU quota is applied to each of its clusters with its deployments (the namespace's ResourceQuota); the
# deployments app marks them dirty (tenancy depends on no other app, so it names the task, as apps nudge workers).
TEAM_GPU_QUOTA_CHANGED_TASK = "deployments.team_gpu_quota_changed"


def _nudge_gpu_quota_changed(team_id: int) -> None:
    def send() -> None:
        try:
            current_app.send_task(TEAM_GPU_QUOTA_CHANGED_TASK, args=[team_id])
        except Exception as error:  # the 10-minute drift sweep repairs the ResourceQuota anyway: latency, not loss
            logger.warning("could not enqueue %s for team %s: %s", TEAM_GPU_QUOTA_CHANGED_TASK, team_id, error)

    transaction.on_commit(send)


_QUOTA_FIELDS = (
    "max_deployments",
    "tokens_per_minute",
    "tokens_per_day",
    "monthly_budget",
    "budget_policy",
    "gpus",
    "serving_tier",
    "gpu_borrowing_limits",
)


@transaction.atomic
def team_quota_update(*, actor: User, team: Team, changes: dict[str, Any]) -> TeamQuota:
    """Set a team's limits (platform admins). `gpus` replaces the whole per-accelerator map."""
    unknown = sorted(set(changes) - set(_QUOTA_FIELDS))
    if unknown:
        raise ValidationFailed([FieldProblem(name, "is not a quota field", "unknown_field") for name in unknown])
    problems: list[FieldProblem] = []
    for name in ("max_deployments", "tokens_per_minute", "tokens_per_day"):
        if name in changes and (not isinstance(changes[name], int) or changes[name] < 0):
            problems.append(FieldProblem(name, "must be a whole number, 0 or more", "invalid"))
        elif name != "max_deployments" and name in changes and changes[name] > TOKEN_LIMIT_MAX:
            problems.append(
                FieldProblem(
                    name, f"must be at most {TOKEN_LIMIT_MAX}, the most a gateway token limit holds", "too_large"
                )
            )
    if "monthly_budget" in changes:
        budget = changes["monthly_budget"]
        if not isinstance(budget, Decimal) or not budget.is_finite() or budget < 0:
            problems.append(FieldProblem("monthly_budget", "must be a non-negative amount", "invalid"))
    if "budget_policy" in changes and changes["budget_policy"] not in TeamQuota.BudgetPolicy.values:
        problems.append(
            FieldProblem(
                "budget_policy", f"must be one of {', '.join(TeamQuota.BudgetPolicy.values)}", "invalid_choice"
            )
        )
    gpus = changes.get("gpus")
    if gpus is not None:
        for accelerator, count in gpus.items():
            if not _ACCELERATOR.fullmatch(accelerator):
                problems.append(FieldProblem(f"gpus.{accelerator}", "is not a valid accelerator type", "invalid"))
            elif not isinstance(count, int) or count < 0:
                problems.append(FieldProblem(f"gpus.{accelerator}", "must be a whole number, 0 or more", "invalid"))
    if "serving_tier" in changes and changes["serving_tier"] not in SERVING_TIERS:
        problems.append(FieldProblem("serving_tier", f"must be one of {', '.join(SERVING_TIERS)}", "invalid_choice"))
    borrowing = changes.get("gpu_borrowing_limits")
    if borrowing is not None:
        for accelerator, count in borrowing.items():
            if not _ACCELERATOR.fullmatch(accelerator):
                problems.append(
                    FieldProblem(f"gpu_borrowing_limits.{accelerator}", "is not a valid accelerator type", "invalid")
                )
            elif not isinstance(count, int) or count < 0:
                problems.append(
                    FieldProblem(f"gpu_borrowing_limits.{accelerator}", "must be a whole number, 0 or more", "invalid")
                )
    if problems:
        raise ValidationFailed(problems)
    quota = TeamQuota.objects.select_for_update().get(team=team)
    before = _quota_snapshot(quota)
    for name in (
        "max_deployments",
        "tokens_per_minute",
        "tokens_per_day",
        "monthly_budget",
        "budget_policy",
        "serving_tier",
    ):
        if name in changes:
            setattr(quota, name, changes[name])
    quota.save()
    if gpus is not None:
        quota.gpu_limits.exclude(accelerator_type__in=list(gpus)).delete()
        for accelerator, count in gpus.items():
            TeamGpuQuota.objects.update_or_create(quota=quota, accelerator_type=accelerator, defaults={"gpus": count})
    if borrowing is not None:
        # What the team may borrow on Kueue clusters beyond its own (a type it has no GPUs of gets a 0 quota row).
        quota.gpu_limits.exclude(accelerator_type__in=list(borrowing)).update(borrowing_limit=0)
        for accelerator, count in borrowing.items():
            TeamGpuQuota.objects.update_or_create(
                quota=quota,
                accelerator_type=accelerator,
                defaults={"borrowing_limit": count},
                create_defaults={"gpus": 0, "borrowing_limit": count},
            )
    after = _quota_snapshot(quota)
    if after != before:
        audit_record(
            actor=actor,
            action="team_quota.update",
            target_type="team_quota",
            target_id=quota.pk,
            target_label=team.slug,
            team_slug=team.slug,
            before=before,
            after=after,
        )
    if any(after[name] != before[name] for name in ("gpus", "serving_tier", "gpu_borrowing_limits")):
        # Built from them: the ResourceQuota or the team's ClusterQueue, and its llm-d objectives' priority.
        _nudge_gpu_quota_changed(team.pk)
    return quota


def service_principal_get_or_create(*, actor: User | None, name: str) -> User:
    """A named service principal (Backstage, a usage collector); it holds tokens, never memberships."""
    username = f"service:{name}"
    user, created = User.objects.get_or_create(username=username, defaults={"kind": User.Kind.SERVICE})
    if user.kind != User.Kind.SERVICE:
        raise Conflict(f"'{username}' exists and is not a service principal", code="not_a_service")
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
        audit_record(
            actor=actor,
            action="service_principal.create",
            target_type="user",
            target_id=user.pk,
            target_label=username,
            after={"username": username, "kind": User.Kind.SERVICE},
        )
    return user


# ---------------------------------------------------------------------------------------------- quota requests

QUOTA_REQUEST_MAX_GPUS = 100_000


def _quota_request_snapshot(request: QuotaRequest) -> dict[str, Any]:
    return {
        "gpus": dict(sorted(request.gpus.items())),
        "max_deployments": request.max_deployments,
        "reason": request.reason,
        "status": request.status,
        "decision_note": request.decision_note,
    }


def _validate_quota_request(*, gpus: dict[str, Any], max_deployments: int | None, reason: str) -> None:
    problems: list[FieldProblem] = []
    for accelerator, count in gpus.items():
        if not _ACCELERATOR.fullmatch(str(accelerator)):
            problems.append(FieldProblem(f"gpus.{accelerator}", "is not a valid accelerator type", "invalid"))
        elif isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= QUOTA_REQUEST_MAX_GPUS:
            problems.append(
                FieldProblem(
                    f"gpus.{accelerator}", f"must be a whole number from 0 to {QUOTA_REQUEST_MAX_GPUS}", "invalid"
                )
            )
    if max_deployments is not None and (
        isinstance(max_deployments, bool) or not isinstance(max_deployments, int) or max_deployments < 0
    ):
        problems.append(FieldProblem("max_deployments", "must be a whole number, 0 or more", "invalid"))
    if not gpus and max_deployments is None:
        problems.append(
            FieldProblem(
                "gpus", "ask for GPUs per accelerator type, or for max_deployments, or both", "nothing_requested"
            )
        )
    if not reason.strip():
        problems.append(FieldProblem("reason", "must say what the quota is for", "blank"))
    if problems:
        raise ValidationFailed(problems)


@transaction.atomic
def quota_request_create(
    *, actor: User, team: Team, gpus: dict[str, Any], max_deployments: int | None = None, reason: str
) -> QuotaRequest:
    """A team member asks for more quota; a platform admin decides. The values are totals the team wants (GPUs per
    accelerator type named, max deployments), not increments, so an approval is the same whenever it happens."""
    _validate_quota_request(gpus=gpus, max_deployments=max_deployments, reason=reason)
    # The team row lock serializes a team's requests; the partial unique constraint backs it.
    Team.objects.select_for_update().filter(pk=team.pk).first()
    pending = QuotaRequest.objects.filter(team=team, status=QuotaRequest.Status.PENDING).first()
    if pending is not None:
        raise Conflict(
            f"Team '{team.slug}' already has a pending quota request ({pending.pk}); withdraw it or wait for a decision",
            code="quota_request_pending",
            extra={"pending_request": pending.pk},
        )
    request = QuotaRequest.objects.create(
        team=team, requested_by=actor, gpus=dict(gpus), max_deployments=max_deployments, reason=reason.strip()
    )
    audit_record(
        actor=actor,
        action="quota_request.create",
        target_type="quota_request",
        target_id=request.pk,
        target_label=str(request),
        team_slug=team.slug,
        after=_quota_request_snapshot(request),
    )
    return request


_DECISION_ACTIONS: dict[str, str] = {
    QuotaRequest.Status.APPROVED: "quota_request.approve",
    QuotaRequest.Status.REJECTED: "quota_request.reject",
    QuotaRequest.Status.WITHDRAWN: "quota_request.withdraw",
}


def _decide(*, actor: User, request: QuotaRequest, status: str, note: str) -> QuotaRequest:
    locked = QuotaRequest.objects.select_for_update().select_related("team").get(pk=request.pk)
    if locked.status != QuotaRequest.Status.PENDING:
        raise Conflict(f"Quota request {locked.pk} is already {locked.status}", code="quota_request_decided")
    before = _quota_request_snapshot(locked)
    locked.status = status
    locked.decided_by = actor
    locked.decided_at = timezone.now()
    locked.decision_note = note.strip()
    locked.save(update_fields=["status", "decided_by", "decided_at", "decision_note", "updated_at"])
    audit_record(
        actor=actor,
        action=_DECISION_ACTIONS[status],
        target_type="quota_request",
        target_id=locked.pk,
        target_label=str(locked),
        team_slug=locked.team.slug,
        before=before,
        after=_quota_request_snapshot(locked),
    )
    return locked


@transaction.atomic
def quota_request_approve(*, actor: User, request: QuotaRequest, note: str = "") -> QuotaRequest:
    """Approve (platform admins): the team's quota gets the requested totals; accelerator types the request does not
    name keep their limits. The quota change is audited as team_quota.update, the decision as quota_request.approve."""
    decided = _decide(actor=actor, request=request, status=QuotaRequest.Status.APPROVED, note=note)
    quota = TeamQuota.objects.select_for_update().get(team=decided.team)
    changes: dict[str, Any] = {}
    if decided.gpus:
        current = {limit.accelerator_type: limit.gpus for limit in quota.gpu_limits.all()}
        changes["gpus"] = {**current, **decided.gpus}
    if decided.max_deployments is not None:
        changes["max_deployments"] = decided.max_deployments
    team_quota_update(actor=actor, team=decided.team, changes=changes)
    return decided


@transaction.atomic
def quota_request_reject(*, actor: User, request: QuotaRequest, note: str) -> QuotaRequest:
    """Reject (platform admins), saying why: the team reads the note and may ask again."""
    if not note.strip():
        raise ValidationFailed.for_field("note", "say why the request is rejected", code="blank")
    return _decide(actor=actor, request=request, status=QuotaRequest.Status.REJECTED, note=note)


@transaction.atomic
def quota_request_withdraw(*, actor: User, request: QuotaRequest) -> QuotaRequest:
    """The team takes a pending request back (its requester or a team admin; the view checks who)."""
    return _decide(actor=actor, request=request, status=QuotaRequest.Status.WITHDRAWN, note="")
