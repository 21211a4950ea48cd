"""Resolving the team in a URL for the caller: 404 when they cannot see it, 403 when their role is too low."""

from __future__ import annotations

from rest_framework.request import Request

from portal.api.authentication import acting_user, is_platform_admin, reads_every_team
from portal.core.errors import PermissionDenied
from portal.tenancy import selectors as tenancy_selectors
from portal.tenancy.models import Role, Team

ROLE_NAMES = {Role.VIEWER: "viewer", Role.DEVELOPER: "developer", Role.ADMIN: "admin"}


def team_for_request(
    request: Request, slug: str, *, required_role: str = Role.VIEWER, catalog_read: bool = False
) -> Team:
    """Platform admins act on any team; members need at least `required_role`; others get 404. With
    `catalog_read` (reads of a team and its deployments) a `catalog:read` service principal sees every team."""
    platform_admin = is_platform_admin(request) or (catalog_read and reads_every_team(request))
    team = tenancy_selectors.team_get_visible(slug=slug, user=acting_user(request), platform_admin=platform_admin)
    if platform_admin:
        return team
    role = tenancy_selectors.membership_role(team=team, user=acting_user(request))
    if not tenancy_selectors.role_at_least(role, required_role):
        raise PermissionDenied(
            f"This needs the '{required_role}' role in team '{slug}'; you are '{role}'", code="insufficient_role"
        )
    return team
