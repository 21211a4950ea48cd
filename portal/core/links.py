"""Links shown to people: the console's pages (and other human pages) on the portal's public URL, in one place.

The console serves exactly these paths; the Backstage plugin builds the same shapes (backstage-plugin consoleUrl):
`/console/`, `/console/fleet/`, `/console/teams/<team>/`, `/console/teams/<team>/deployments/<deployment>/`,
`/console/models/<model>/`.
"""

from __future__ import annotations

from urllib.parse import quote

from django.conf import settings
from django.http import HttpRequest


def console_path(*, team: str | None = None, deployment: str | None = None, model: str | None = None) -> str:
    """The console page of a team, a team's deployment or a catalog model; with nothing named, the console's home."""
    if deployment is not None and team is None:
        raise ValueError("a deployment's console page needs its team")
    if model is not None and team is not None:
        raise ValueError("a console page is of a team (and deployment) or of a model, not both")
    if model is not None:
        return f"/console/models/{_segment(model)}/"
    if team is not None and deployment is not None:
        return f"/console/teams/{_segment(team)}/deployments/{_segment(deployment)}/"
    if team is not None:
        return f"/console/teams/{_segment(team)}/"
    return "/console/"


FLEET_PATH = "/console/fleet/"


def public_url(path: str, *, request: HttpRequest | None = None) -> str:
    """An absolute URL for a person: on PORTAL_PUBLIC_URL when set, else on the address the request came in on."""
    if not path.startswith("/"):
        raise ValueError(f"a portal path starts with '/', got {path!r}")
    if settings.PUBLIC_URL:
        return f"{settings.PUBLIC_URL}{path}"
    if request is not None:
        return request.build_absolute_uri(path)
    return f"http://{settings.PORTAL_HOST}:{settings.PORTAL_PORT}{path}"


def console_url(
    *,
    team: str | None = None,
    deployment: str | None = None,
    model: str | None = None,
    request: HttpRequest | None = None,
) -> str:
    return public_url(console_path(team=team, deployment=deployment, model=model), request=request)


def _segment(value: str) -> str:
    # Slugs and names are DNS labels already; quoting keeps anything else from changing the path's shape.
    return quote(value, safe="")
