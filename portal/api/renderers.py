"""CSV for the API's paginated lists: the same page as the JSON answer, one row per item, chosen by `?format=csv` or
`Accept: text/csv` on any list view that adds `LIST_RENDERERS` to its renderer classes."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping
from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.urls import Resolver404, resolve
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import renderers, serializers

from portal.api.authentication import Caller
from portal.tenancy.models import User

CSV_LIST_DESCRIPTION = (
    "JSON, or CSV with ?format=csv or Accept: text/csv: the page's items, a header of the JSON items' fields (nested "
    "objects as parent.child, lists as JSON), one row per item, values exactly as in the JSON (null is empty); the "
    "next page's address in a Link header and the item count in X-Total-Count."
)
# A string, not a paginated object (what a list view's schema would otherwise wrap it in).
CSV_LIST_SCHEMA = OpenApiResponse(response=OpenApiTypes.STR, description=CSV_LIST_DESCRIPTION)


def csv_list_schema(
    output: type[serializers.BaseSerializer], *, summary: str, parameters: list[Any] | None = None
) -> Any:
    """The schema of a list view that renders LIST_RENDERERS: its items as JSON (paginated where the view paginates)
    or, asked for it, as CSV. One decorator instead of the same four lines on every such view."""
    return extend_schema(
        parameters=parameters,
        responses={(200, "application/json"): output(many=True), (200, "text/csv"): CSV_LIST_SCHEMA},
        description=CSV_LIST_DESCRIPTION,
        summary=summary,
    )


def _flat(item: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    row: dict[str, Any] = {}
    for key, value in item.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            row.update(_flat(value, prefix=f"{name}."))
        else:
            row[name] = value
    return row


def _cell(value: Any) -> str:
    """As the JSON answer writes it: strings as they are, so money keeps its digits; no float ever reaches here."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)
    return str(value)


def items_csv(items: list[Mapping[str, Any]]) -> str:
    """Columns in the order of the items' fields, every field any item has (an item without one leaves it empty)."""
    rows = [_flat(item) for item in items]
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    output = io.StringIO()
    writer = csv.writer(output, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(_cell(row.get(column)) for column in columns)
    return output.getvalue()


class PaginatedCsvRenderer(renderers.BaseRenderer):
    """A paginated list's page (or an unpaginated list) as CSV; anything else (a problem, one object) as its JSON."""

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None) -> bytes:
        paginated = isinstance(data, Mapping) and isinstance(data.get("results"), list)
        whole = isinstance(data, list) and all(isinstance(item, Mapping) for item in data)  # an unpaginated list
        if not (paginated or whole):
            return renderers.JSONRenderer().render(data)
        items = data["results"] if paginated else data
        response = (renderer_context or {}).get("response")
        if response is not None:
            if paginated and data.get("next"):
                response["Link"] = f'<{data["next"]}>; rel="next"'
            response["X-Total-Count"] = str(data.get("count", len(items)) if paginated else len(items))
            request = (renderer_context or {}).get("request")
            name = request.path.rstrip("/").rsplit("/", 1)[-1] if request is not None else "list"
            response["Content-Disposition"] = f'attachment; filename="{name}.csv"'
        return items_csv(items).encode()


LIST_RENDERERS = [renderers.JSONRenderer, PaginatedCsvRenderer]


# The lists the console links to as CSV (URL names of the API's list views that render CSV).
CONSOLE_CSV_LISTS = frozenset(
    {
        "deployment-list",
        "credential-list",
        "team-members",
        "cluster-list",
        "audit-events",
        "request-health",
        "deployment-events",
        "catalog-model-versions",
        "model-deployments",
    }
)


@login_required(login_url="console:login")
def console_list_csv(request: HttpRequest, api_path: str) -> HttpResponse:
    """The API's CSV of one list for a person signed in to the console: the API view itself answers, as that person
    (the API takes sessions from staff only, so a member's session reaches it through here). DRF's forced
    authentication (rest_framework.request.ForcedAuthentication) hands the view the same caller a staff session
    would be; the view's own permissions and team scoping decide, so another team's list is its 404."""
    path = f"/api/v1/{api_path}"
    try:
        match = resolve(path)
    except Resolver404 as error:
        raise Http404(path) from error
    if match.url_name not in CONSOLE_CSV_LISTS:
        raise Http404(path)
    user = request.user
    if not isinstance(user, User) or request.method != "GET" or request.GET.get("format", "csv") != "csv":
        raise Http404(path)
    request._force_auth_user = user  # type: ignore[attr-defined]
    request._force_auth_token = Caller(token=None, principal=user)  # type: ignore[attr-defined]
    request.META["HTTP_ACCEPT"] = "text/csv"
    response = match.func(request, *match.args, **match.kwargs)
    response.render()
    return response
