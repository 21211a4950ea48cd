"""Teams and memberships from Backstage groups: the portal reads Backstage's catalog and mirrors it.

Which groups are trusted:
- Every group the filter reads, unless PORTAL_BACKSTAGE_SYNC_TRUSTED_ORIGINS names prefixes of the
  `backstage.io/managed-by-origin-location` annotation: then only groups from those origins; others are
  ignored (counted in the report).
- Entity refs are compared ignoring case, as Backstage does, and stored in lowercase (what
  stringifyEntityRef writes in relations and in user tokens), whatever case `spec.members` and the
  annotations were written in.

How groups map to teams:
- A team is linked to a group by `Team.backstage_group_ref` (`group:default/team-a`), set when the
  team is created (API, onboarding template) or by a team admin. Anyone who administers a team can
  write any ref there, so the link alone proves nothing: the group's members reach a linked team only
  when the link is trusted, that is when the group names the team (`genai-portal.dev/team: <slug>`) or
  at least one of the team's current admins is a member of the group. An untrusted link is skipped,
  logged and counted in the report; the team is left as it is.
- A group annotated `genai-portal.dev/team: <slug>` that no team is linked to yet creates that team
  (when PORTAL_BACKSTAGE_SYNC_CREATE_TEAMS is on, and never when PORTAL_TEAM_CREATION=admins: then
  only platform admins create teams, and the sync follows the teams they link, when the link is trusted
  as above). An existing team with that slug that is linked elsewhere or not at all is never taken
  over: the sync reports it and leaves it alone.

How roles map:
- Members are the group's `hasMember` relations (its `spec.members` and the users whose `memberOf`
  names it). Nobody else: a role annotation gives a role to members only, and the people it names who
  are not members are ignored (logged, listed in the report).
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
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import transaction

from portal.core.audit import audit_record
from portal.core.errors import DomainError
from portal.tenancy import selectors, services
from portal.tenancy.models import (
    BACKSTAGE_USER_REF_PATTERN,
    ROLE_RANK,
    TEAM_SLUG_PATTERN,
    TEAM_SLUG_RESERVED_PREFIX,
    Role,
    Team,
    User,
)

logger = logging.getLogger(__name__)

TEAM_ANNOTATION = "genai-portal.dev/team"
ORIGIN_ANNOTATION = "backstage.io/managed-by-origin-location"
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
    # Members only: the hasMember relations and spec.members, never the people role annotations name.
    members: frozenset[str]
    # The role annotations, restricted to members; None when the group declares no roles.
    declared_roles: Mapping[str, str] | None
    # People a role annotation names who are not members: ignored.
    annotated_non_members: frozenset[str] = frozenset()
    origin_location: str | None = None


@dataclass
class TeamSyncReport:
    team: str
    group: str
    created: bool = False
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    kept_admins: list[str] = field(default_factory=list)
    ignored_non_members: list[str] = field(default_factory=list)

    @property
    def changes(self) -> bool:
        return self.created or bool(self.added or self.changed or self.removed)


@dataclass
class SyncReport:
    groups_read: int = 0
    teams: list[TeamSyncReport] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    # Linked teams the group's members did not reach because the link is not trusted (one line each).
    untrusted_links: list[str] = field(default_factory=list)
    # Groups from an origin that PORTAL_BACKSTAGE_SYNC_TRUSTED_ORIGINS does not name.
    untrusted_groups: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, int]:
        return {
            "groups": self.groups_read,
            "teams": len(self.teams),
            "created": sum(1 for team in self.teams if team.created),
            "changed": sum(1 for team in self.teams if team.changes),
            "problems": len(self.problems),
            "untrusted_links": len(self.untrusted_links),
            "untrusted_groups": len(self.untrusted_groups),
            "ignored_non_members": sum(len(team.ignored_non_members) for team in self.teams),
        }


def _user_ref(value: str, namespace: str) -> str | None:
    """`user:default/jane`, `default/jane` or `jane` (in the group's namespace) as a full user ref, in
    lowercase as Backstage's stringifyEntityRef writes it (`Jane` in spec.members is `user:default/jane`)."""
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
    reference = f"user:{entity_namespace}/{name}".lower()
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
    annotated_non_members: set[str] = set()
    # Lowest rank first, so a user named under several roles gets the highest one.
    for role in (Role.VIEWER, Role.DEVELOPER, Role.ADMIN):
        raw = annotations.get(ROLE_ANNOTATIONS[role])
        if raw is None:
            continue
        declared = declared if declared is not None else {}
        for item in re.split(r"[\s,]+", str(raw)):
            reference = _user_ref(item, namespace)
            if reference in members:
                declared[reference] = role
            elif reference:
                # Whoever edits the group's annotations could otherwise add anyone to the team.
                annotated_non_members.add(reference)
    team_slug = annotations.get(TEAM_ANNOTATION)
    origin = annotations.get(ORIGIN_ANNOTATION)
    profile = spec.get("profile") or {}
    return BackstageGroup(
        ref=f"group:{namespace}/{name}".lower(),
        title=str(profile.get("displayName") or metadata.get("title") or name)[:200],
        description=str(metadata.get("description") or "")[:5000],
        team_slug=str(team_slug).strip() if team_slug else None,
        members=frozenset(members),
        declared_roles=declared,
        annotated_non_members=frozenset(annotated_non_members),
        origin_location=str(origin) if origin else None,
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
    """Make the team's Backstage-managed memberships match the group (one transaction per team; the caller holds
    the team's row lock)."""
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
    changes = [
        (reference, role) for reference, role in desired.items() if reference in current and current[reference] != role
    ]
    for reference, role in sorted(changes, key=lambda item: -ROLE_RANK[Role(item[1])]):
        services.membership_change_role(actor=actor(), membership=memberships[reference], role=role)
        report.changed.append(f"{reference}: {current[reference]} -> {role}")
    for reference in sorted(set(memberships) - set(desired)):
        services.membership_remove(actor=actor(), membership=memberships[reference])
        report.removed.append(reference)


def _group_origin_trusted(group: BackstageGroup, trusted_origins: Sequence[str]) -> bool:
    if not trusted_origins:
        return True
    return group.origin_location is not None and group.origin_location.startswith(tuple(trusted_origins))


def _link_trusted(*, team: Team, group: BackstageGroup) -> bool:
    """A team admin can link a team to any group; the group's members reach the team only when the group
    names the team, or one of the team's admins really is a member of the group."""
    if group.team_slug == team.slug:
        return True
    return not selectors.team_admin_backstage_refs(team=team).isdisjoint(group.members)


def backstage_teams_sync(
    *,
    groups: Iterable[BackstageGroup],
    default_role: str = Role.DEVELOPER,
    create_teams: bool = True,
    trusted_origins: Sequence[str] | None = None,
) -> SyncReport:
    """Apply Backstage's groups to the linked teams (and create annotated ones); see the module docstring.
    `trusted_origins` defaults to PORTAL_BACKSTAGE_SYNC_TRUSTED_ORIGINS; PORTAL_TEAM_CREATION=admins
    turns creation off whatever `create_teams` says."""
    groups = list(groups)
    report = SyncReport(groups_read=len(groups))
    if trusted_origins is None:
        trusted_origins = settings.BACKSTAGE_SYNC_TRUSTED_ORIGINS
    # The API lets only platform admins create teams then; the sync acts for nobody, so it creates none.
    creation_allowed = create_teams and settings.TEAM_CREATION != "admins"
    principal: list[User] = []

    def actor() -> User:
        # Created on the first change only: a sync that changes nothing writes nothing.
        if not principal:
            principal.append(services.service_principal_get_or_create(actor=None, name=SYNC_PRINCIPAL))
        return principal[0]

    linked = selectors.teams_linked_to_groups()
    for group in sorted(groups, key=lambda g: g.ref):
        if not _group_origin_trusted(group, trusted_origins):
            report.untrusted_groups.append(group.ref)
            logger.info(
                "Backstage team sync: ignoring %s, its origin %s is not a trusted one",
                group.ref,
                group.origin_location or "(none)",
            )
            continue
        team = linked.get(group.ref.lower())
        created = False
        if team is None:
            if not group.team_slug or not create_teams:
                continue
            if not creation_allowed:
                logger.info(
                    "Backstage team sync: %s names team '%s', which does not exist; with PORTAL_TEAM_CREATION=admins "
                    "a platform admin creates it and links it to the group",
                    group.ref,
                    group.team_slug,
                )
                continue
            if not _TEAM_SLUG.fullmatch(group.team_slug) or group.team_slug.startswith(TEAM_SLUG_RESERVED_PREFIX):
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
                else:
                    # Locked before the trust check, so the admins it looks at are the ones the sync changes.
                    Team.objects.select_for_update().filter(pk=team.pk).first()
                    if not _link_trusted(team=team, group=group):
                        report.untrusted_links.append(
                            f"{group.ref}: team '{team.slug}' is linked to it, but the group does not name the team "
                            f"({TEAM_ANNOTATION}) and none of the team's admins is a member; left alone"
                        )
                        logger.warning("Backstage team sync: %s", report.untrusted_links[-1])
                        continue
                team_report.team = team.slug
                team_report.created = created
                team_report.ignored_non_members = sorted(group.annotated_non_members)
                if group.annotated_non_members:
                    logger.info(
                        "Backstage team sync: %s names %s in a role annotation but not as members; ignored",
                        group.ref,
                        ", ".join(team_report.ignored_non_members),
                    )
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
