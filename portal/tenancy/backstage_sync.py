"""Teams and memberships from Backstage groups: the portal reads Backstage's catalog and mirrors it.

How groups map to teams:
- A team is linked to a group by `Team.backstage_group_ref` (`group:default/team-a`), set when the
  team is created (API, onboarding template) or by a team admin. Linked teams get their members
  from the group; a group only reaches teams that are linked to it.
- A group annotated `genai-portal.dev/team: <slug>` that no team is linked to yet creates that team
  (when PORTAL_BACKSTAGE_SYNC_CREATE_TEAMS is on). An existing team with that slug that is linked
  elsewhere or not at all is never taken over: the sync reports it and leaves it alone.

How roles map:
- Members are the group's `hasMember` relations (its `spec.members` and the users whose `memberOf`
  names it), plus any user named in a role annotation.
- A group that declares roles (`genai-portal.dev/admins`, `.../developers`, `.../viewers`: user refs or
  names, comma or space separated) decides every role; members it does not name get the default role
  (PORTAL_BACKSTAGE_SYNC_DEFAULT_ROLE, developer).
- A group that declares no roles leaves roles to the portal: existing members keep theirs, new
  members get the default role.
- Members of a linked team who are not in the group anymore are removed. Portal users without a
  Backstage ref (created by admins) are not Backstage's to manage and are left alone.
- The last admin is never removed or demoted: when the group would leave a team without an admin,
  the current admins stay admins and the report says so.

Every change goes through the tenancy services, so each one is audited with the `service:backstage-sync`
principal as actor; a summary event per changed team records what the sync did.
"""

from __future__ import annotations

import json
import logging
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import transaction

from portal.core.audit import audit_record
from portal.core.errors import DomainError
from portal.tenancy import selectors, services
from portal.tenancy.models import BACKSTAGE_USER_REF_PATTERN, TEAM_SLUG_PATTERN, Role, Team, User

logger = logging.getLogger(__name__)

TEAM_ANNOTATION = "genai-portal.dev/team"
ROLE_ANNOTATIONS = {
    Role.ADMIN: "genai-portal.dev/admins",
    Role.DEVELOPER: "genai-portal.dev/developers",
    Role.VIEWER: "genai-portal.dev/viewers",
}
SYNC_PRINCIPAL = "backstage-sync"
PAGE_LIMIT = 500
_USER_REF = re.compile(BACKSTAGE_USER_REF_PATTERN)
_TEAM_SLUG = re.compile(TEAM_SLUG_PATTERN)


class BackstageCatalogError(Exception):
    """Backstage's catalog could not be read; nothing was changed."""


@dataclass(frozen=True)
class BackstageGroup:
    ref: str
    title: str
    description: str
    team_slug: str | None
    members: frozenset[str]
    declared_roles: Mapping[str, str] | None


@dataclass
class TeamSyncReport:
    team: str
    group: str
    created: bool = False
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    kept_admins: list[str] = field(default_factory=list)

    @property
    def changes(self) -> bool:
        return self.created or bool(self.added or self.changed or self.removed)


@dataclass
class SyncReport:
    groups_read: int = 0
    teams: list[TeamSyncReport] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _user_ref(value: str, namespace: str) -> str | None:
    """`user:default/jane`, `default/jane` or `jane` (in the group's namespace) as a full user ref."""
    value = value.strip()
    if not value:
        return None
    if ":" in value:
        kind, _, rest = value.partition(":")
        if kind.lower() != "user":
            return None
        value = rest
    if "/" not in value:
        value = f"{namespace}/{value}"
    entity_namespace, _, name = value.partition("/")
    reference = f"user:{entity_namespace.lower()}/{name}"
    return reference if _USER_REF.fullmatch(reference) else None


def group_from_entity(entity: Mapping[str, Any]) -> BackstageGroup | None:
    """A Backstage Group entity as the sync needs it, or None for anything that is not a usable group."""
    if str(entity.get("kind", "")).lower() != "group":
        return None
    metadata = entity.get("metadata") or {}
    spec = entity.get("spec") or {}
    name = metadata.get("name")
    if not name:
        return None
    namespace = str(metadata.get("namespace") or "default").lower()
    annotations = metadata.get("annotations") or {}
    members: set[str] = set()
    for relation in entity.get("relations") or []:
        if relation.get("type") == "hasMember":
            reference = _user_ref(str(relation.get("targetRef", "")), namespace)
            if reference:
                members.add(reference)
    for member in spec.get("members") or []:
        reference = _user_ref(str(member), namespace)
        if reference:
            members.add(reference)
    declared: dict[str, str] | None = None
    # Lowest rank first, so a user named under several roles gets the highest one.
    for role in (Role.VIEWER, Role.DEVELOPER, Role.ADMIN):
        raw = annotations.get(ROLE_ANNOTATIONS[role])
        if raw is None:
            continue
        declared = declared if declared is not None else {}
        for item in re.split(r"[\s,]+", str(raw)):
            reference = _user_ref(item, namespace)
            if reference:
                declared[reference] = role
    if declared:
        members.update(declared)
    team_slug = annotations.get(TEAM_ANNOTATION)
    profile = spec.get("profile") or {}
    return BackstageGroup(
        ref=f"group:{namespace}/{name}",
        title=str(profile.get("displayName") or metadata.get("title") or name)[:200],
        description=str(metadata.get("description") or "")[:5000],
        team_slug=str(team_slug).strip() if team_slug else None,
        members=frozenset(members),
        declared_roles=declared,
    )


def backstage_groups_fetch(*, base_url: str, token: str, group_filter: str, timeout: float) -> list[BackstageGroup]:
    """Every group of Backstage's catalog (`GET /api/catalog/entities/by-query`, cursor pagination)."""
    groups: list[BackstageGroup] = []
    cursor: str | None = None
    endpoint = base_url.rstrip("/") + "/api/catalog/entities/by-query"
    for _ in range(10_000):
        query = {"cursor": cursor} if cursor else {"filter": group_filter, "limit": str(PAGE_LIMIT)}
        if cursor:
            query["limit"] = str(PAGE_LIMIT)
        request = urllib.request.Request(  # noqa: S310 (the configured Backstage URL, http or https)
            f"{endpoint}?{urllib.parse.urlencode(query)}",
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (configured URL)
                page = json.loads(response.read())
        except urllib.error.HTTPError as error:
            detail = error.read()[:300].decode("utf-8", "replace")
            raise BackstageCatalogError(f"Backstage answered {error.code} reading groups: {detail}") from None
        except (OSError, ValueError) as error:
            raise BackstageCatalogError(f"Backstage's catalog could not be read at {base_url}: {error}") from None
        if not isinstance(page, dict) or not isinstance(page.get("items"), list):
            raise BackstageCatalogError("Backstage's catalog answered something that is not an entity page")
        for entity in page["items"]:
            group = group_from_entity(entity) if isinstance(entity, dict) else None
            if group is not None:
                groups.append(group)
        cursor = (page.get("pageInfo") or {}).get("nextCursor")
        if not cursor:
            return groups
    raise BackstageCatalogError("Backstage's catalog kept paginating; giving up")


def _desired_roles(group: BackstageGroup, current: Mapping[str, str], default_role: str) -> dict[str, str]:
    desired: dict[str, str] = {}
    for reference in group.members:
        if group.declared_roles is not None:
            desired[reference] = group.declared_roles.get(reference, default_role)
        else:
            desired[reference] = current.get(reference, default_role)
    return desired


def _team_sync(
    *, actor: Callable[[], User], team: Team, group: BackstageGroup, default_role: str, report: TeamSyncReport
) -> None:
    """Make the team's Backstage-managed memberships match the group (one transaction per team)."""
    Team.objects.select_for_update().filter(pk=team.pk).first()
    memberships = {
        membership.user.backstage_ref: membership
        for membership in selectors.team_member_list(team=team).select_related("user")
        if membership.user.backstage_ref
    }
    current = {reference: membership.role for reference, membership in memberships.items()}
    desired = _desired_roles(group, current, default_role)
    unmanaged_admins = selectors.team_admins_without_backstage_ref(team=team)
    if unmanaged_admins == 0 and Role.ADMIN not in desired.values():
        for reference, role in current.items():
            if role == Role.ADMIN:
                desired[reference] = Role.ADMIN
                report.kept_admins.append(reference)
    # Adds and promotions first, removals and demotions last, so an admin is always there.
    for reference, role in sorted(desired.items()):
        if reference not in memberships:
            services.membership_add(actor=actor(), team=team, user_ref=reference, role=role)
            report.added.append(f"{reference} as {role}")
    rank = {Role.VIEWER: 1, Role.DEVELOPER: 2, Role.ADMIN: 3}
    changes = [
        (reference, role) for reference, role in desired.items() if reference in current and current[reference] != role
    ]
    for reference, role in sorted(changes, key=lambda item: -rank[Role(item[1])]):
        services.membership_change_role(actor=actor(), membership=memberships[reference], role=role)
        report.changed.append(f"{reference}: {current[reference]} -> {role}")
    for reference in sorted(set(memberships) - set(desired)):
        services.membership_remove(actor=actor(), membership=memberships[reference])
        report.removed.append(reference)


def backstage_teams_sync(
    *, groups: Iterable[BackstageGroup], default_role: str = Role.DEVELOPER, create_teams: bool = True
) -> SyncReport:
    """Apply Backstage's groups to the linked teams (and create annotated ones); see the module docstring."""
    groups = list(groups)
    report = SyncReport(groups_read=len(groups))
    principal: list[User] = []

    def actor() -> User:
        # Created on the first change only: a sync that changes nothing writes nothing.
        if not principal:
            principal.append(services.service_principal_get_or_create(actor=None, name=SYNC_PRINCIPAL))
        return principal[0]

    linked = selectors.teams_linked_to_groups()
    for group in sorted(groups, key=lambda g: g.ref):
        team = linked.get(group.ref.lower())
        created = False
        if team is None:
            if not group.team_slug or not create_teams:
                continue
            if not _TEAM_SLUG.fullmatch(group.team_slug):
                report.problems.append(f"{group.ref}: '{group.team_slug}' is not a valid team slug")
                continue
            existing = selectors.team_get_by_slug(slug=group.team_slug)
            if existing is not None:
                linked_to = existing.backstage_group_ref or "no group"
                report.problems.append(
                    f"{group.ref}: team '{group.team_slug}' exists and is linked to {linked_to}; "
                    "a team admin links it by setting its backstage_group_ref"
                )
                continue
        team_report = TeamSyncReport(team=group.team_slug or "", group=group.ref)
        try:
            with transaction.atomic():
                if team is None:
                    assert group.team_slug is not None
                    team = services.team_create(
                        actor=actor(),
                        slug=group.team_slug,
                        display_name=group.title,
                        description=group.description,
                        backstage_group_ref=group.ref,
                    )
                    created = True
                team_report.team = team.slug
                team_report.created = created
                _team_sync(actor=actor, team=team, group=group, default_role=default_role, report=team_report)
                if team_report.changes:
                    audit_record(
                        actor=actor(),
                        action="team.backstage_sync",
                        target_type="team",
                        target_id=team.pk,
                        target_label=team.slug,
                        team_slug=team.slug,
                        after={
                            "group": group.ref,
                            "created": created,
                            "added": team_report.added,
                            "changed": team_report.changed,
                            "removed": team_report.removed,
                            "kept_admins": team_report.kept_admins,
                        },
                    )
        except DomainError as error:
            report.problems.append(f"{group.ref}: {error.detail}")
            continue
        if team_report.kept_admins and not team_report.changes:
            logger.info("Backstage group %s names no admin; %s keeps its admins", group.ref, team_report.team)
        report.teams.append(team_report)
    return report


def backstage_sync_run() -> SyncReport | None:
    """One sync with the configured Backstage; None when PORTAL_BACKSTAGE_URL is not set."""
    if not settings.BACKSTAGE_URL or not settings.BACKSTAGE_CATALOG_TOKEN:
        return None
    groups = backstage_groups_fetch(
        base_url=settings.BACKSTAGE_URL,
        token=settings.BACKSTAGE_CATALOG_TOKEN,
        group_filter=settings.BACKSTAGE_SYNC_GROUP_FILTER,
        timeout=settings.BACKSTAGE_SYNC_TIMEOUT_SECONDS,
    )
    report = backstage_teams_sync(
        groups=groups,
        default_role=settings.BACKSTAGE_SYNC_DEFAULT_ROLE,
        create_teams=settings.BACKSTAGE_SYNC_CREATE_TEAMS,
    )
    for problem in report.problems:
        logger.warning("Backstage team sync: %s", problem)
    return report
