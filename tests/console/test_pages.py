"""Console pages as Django renders them: who may open which page, and that each figure shown is the API's answer for
the same range (the API read in the same test, through a token, as Backstage or a script would)."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from django.contrib import admin
from django.contrib.staticfiles import finders
from django.test import Client

from portal.console import charts
from portal.usage import selectors as usage_selectors
from tests.conftest import client_with_token
from tests.console.conftest import ConsoleWorld
from tests.console.pages import figure, last_month, row, row_keys, row_text, shown, this_month

pytestmark = pytest.mark.django_db

EVERY_PAGE = [
    "/console/",
    "/console/fleet/",
    "/console/requests/",
    "/console/teams/alpha/",
    "/console/teams/alpha/deployments/chat/",
    "/console/models/qwen/",
]


def _api(world: ConsoleWorld, who: str = "platform_admin"):
    return client_with_token(getattr(world.usage.matrix, who))


def _range() -> dict[str, str]:
    start, end = this_month()
    return {"from": start.isoformat(), "to": end.isoformat()}


# --- who may open what ------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", EVERY_PAGE)
def test_anonymous_is_sent_to_the_console_login(console_world: ConsoleWorld, path: str) -> None:
    response = Client().get(path)
    assert response.status_code == 302
    assert response["Location"] == f"/console/login/?next={path}"


@pytest.mark.parametrize(
    ("who", "expected"),
    [
        (
            "outsider",
            {"/console/fleet/": 404, "/console/teams/alpha/": 404, "/console/teams/alpha/deployments/chat/": 404},
        ),
        (
            "viewer",
            {"/console/fleet/": 404, "/console/teams/alpha/": 200, "/console/teams/alpha/deployments/chat/": 200},
        ),
        (
            "developer",
            {"/console/fleet/": 404, "/console/teams/alpha/": 200, "/console/teams/alpha/deployments/chat/": 200},
        ),
        (
            "admin",
            {"/console/fleet/": 404, "/console/teams/alpha/": 200, "/console/teams/alpha/deployments/chat/": 200},
        ),
        (
            "platform_admin",
            {"/console/fleet/": 200, "/console/teams/alpha/": 200, "/console/teams/alpha/deployments/chat/": 200},
        ),
    ],
)
def test_the_role_matrix(console_world: ConsoleWorld, who: str, expected: dict[str, int]) -> None:
    client = console_world.browser_client(who)
    for path, status in expected.items():
        response = client.get(path)
        assert response.status_code == status, (who, path)
        if status == 404:
            assert b"Not found" in response.content
            assert b"Team alpha" not in response.content
    assert client.get("/console/requests/").status_code == 200
    assert client.get("/console/models/qwen/").status_code == 200


def test_members_get_their_teams_at_the_console_root_and_admins_the_overview(console_world: ConsoleWorld) -> None:
    viewer = console_world.browser_client("viewer").get("/console/").content.decode()
    assert "Your teams" in viewer
    assert 'href="/console/teams/alpha/"' in viewer
    assert "Company overview" not in viewer
    assert "/console/teams/beta/" not in viewer
    staff = console_world.browser_client("platform_admin").get("/console/").content.decode()
    assert "Company overview" in staff


def test_unknown_team_deployment_and_model_are_404(console_world: ConsoleWorld) -> None:
    client = console_world.browser_client("platform_admin")
    for path in ("/console/teams/nope/", "/console/teams/alpha/deployments/nope/", "/console/models/nope/"):
        assert client.get(path).status_code == 404, path
    # Another team's deployment under one's own team's path does not exist either.
    assert console_world.browser_client("outsider").get("/console/teams/beta/deployments/chat/").status_code == 404


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"from": "yesterday"}, "from"),
        ({"to": "2026-13-01"}, "to"),
        ({"from": "2026-03-02", "to": "2026-03-01"}, "to"),
        ({"from": "2024-01-01", "to": "2026-01-01"}, "to"),
        ({"from": "1999-01-01"}, "from"),
    ],
)
def test_a_bad_range_is_a_400_that_names_the_field(
    console_world: ConsoleWorld, query: dict[str, str], field: str
) -> None:
    client = console_world.browser_client("platform_admin")
    for path in ("/console/", "/console/teams/alpha/", "/console/fleet/"):
        response = client.get(path, query)
        assert response.status_code == 400
        assert f"{field}: " in response.content.decode()


def test_bad_groupings_are_400(console_world: ConsoleWorld) -> None:
    client = console_world.browser_client("viewer")
    assert client.get("/console/requests/", {"group_by": "planet"}).status_code == 400
    assert "bucket: must be one of day, hour" in client.get("/console/requests/", {"bucket": "week"}).content.decode()
    assert client.get("/console/teams/alpha/costs.csv", {"group_by": "team"}).status_code == 400


def test_budget_is_for_team_admins_and_audit_for_platform_admins_as_in_the_api(console_world: ConsoleWorld) -> None:
    viewer = console_world.browser_client("viewer").get("/console/teams/alpha/").content.decode()
    assert 'id="budget-heading"' not in viewer
    assert 'id="audit"' not in viewer
    assert _api(console_world, "viewer").get("/api/v1/teams/alpha/budget").status_code == 403
    admin_page = console_world.browser_client("admin").get("/console/teams/alpha/").content.decode()
    assert 'id="budget-heading"' in admin_page
    assert 'id="audit"' not in admin_page
    staff = console_world.browser_client("platform_admin").get("/console/teams/alpha/").content.decode()
    assert 'id="budget-heading"' in staff
    assert 'id="audit"' in staff
    assert "deployment.create" in staff  # the audit trail of the team's deployments


def test_keys_show_prefix_and_never_a_secret(console_world: ConsoleWorld) -> None:
    page = console_world.browser_client("viewer").get("/console/teams/alpha/").content.decode()
    credential = console_world.usage.team.credentials.get(name="ci")
    assert f"<code>{credential.key_prefix}…</code>" in page
    assert credential.key_hash not in page


def test_the_admin_and_the_console_link_both_ways(console_world: ConsoleWorld) -> None:
    assert admin.site.site_url == "/console/"
    staff = console_world.browser_client("platform_admin")
    assert 'href="/console/"' in staff.get("/admin/").content.decode()  # the admin's "View site"
    team_page = staff.get("/console/teams/alpha/").content.decode()
    assert f'href="/admin/tenancy/team/{console_world.usage.team.pk}/change/"' in team_page
    assert 'href="/admin/"' in team_page
    assert "/admin/" not in console_world.browser_client("admin").get("/console/teams/alpha/").content.decode()


def test_the_console_login_signs_a_member_in(console_world: ConsoleWorld) -> None:
    member = console_world.usage.matrix.viewer
    member.set_password("a long enough password")
    member.save()
    client = Client()
    response = client.post(
        "/console/login/?next=/console/teams/alpha/",
        {"username": member.username, "password": "a long enough password", "next": "/console/teams/alpha/"},
    )
    assert (response.status_code, response["Location"]) == (302, "/console/teams/alpha/")
    assert client.get("/console/teams/alpha/").status_code == 200


# --- figures equal the API's ------------------------------------------------------------------------------


def test_team_page_figures_are_the_team_cost_apis(console_world: ConsoleWorld) -> None:
    api = _api(console_world, "viewer")
    page = console_world.browser_client("viewer").get("/console/teams/alpha/", _range()).content.decode()
    by_day = api.get("/api/v1/teams/alpha/costs", {**_range(), "group_by": "day"}).json()
    assert Decimal(by_day["totals"]["total_cost"]) > 0
    assert Decimal(by_day["totals"]["gpu_cost"]) > 0
    for name in ("total_cost", "token_cost", "gpu_cost"):
        assert figure(page, name) == shown(by_day["totals"][name])
    assert figure(page, "requests") == f"{by_day['totals']['requests']:,}"
    assert row_keys(page, "cost-by-day", "day") == [item["day"] for item in by_day["series"]]
    for item in by_day["series"]:
        cells = row(page, "cost-by-day", "day", item["day"])
        assert cells["total_cost"] == shown(item["total_cost"])
        assert cells["token_cost"] == shown(item["token_cost"])
        assert cells["input_tokens"] == f"{item['input_tokens']:,}"
    by_model = api.get("/api/v1/teams/alpha/costs", {**_range(), "group_by": "model"}).json()
    assert (
        row_keys(page, "cost-by-model", "model")
        == [item["model"] for item in by_model["series"]]
        == ["gpt-test", "qwen"]
    )
    for item in by_model["series"]:
        assert row(page, "cost-by-model", "model", item["model"])["token_cost"] == shown(item["token_cost"])
    by_key = api.get("/api/v1/teams/alpha/costs", {**_range(), "group_by": "credential"}).json()
    for item in by_key["series"]:
        assert row(page, "cost-by-key", "key", item["client_id"])["token_cost"] == shown(item["token_cost"])
    gpu = {item["deployment"]: item for item in by_day["gpu"]}
    assert row(page, "deployments", "deployment", "chat")["gpu_hours"] == f"{Decimal(gpu['chat']['gpu_hours']):,.2f}"
    assert row(page, "deployments", "deployment", "chat")["gpu_cost"] == shown(gpu["chat"]["cost"])


def test_team_budget_is_the_budget_apis(console_world: ConsoleWorld) -> None:
    budget = _api(console_world, "admin").get("/api/v1/teams/alpha/budget").json()
    page = console_world.browser_client("admin").get("/console/teams/alpha/").content.decode()
    assert Decimal(budget["spend"]) > 0
    cells = dict(__import__("re").findall(r'data-field="([a-z_]+)">([^<]*)<', page.split('id="budget-heading"')[1]))
    assert cells["spend"] == shown(budget["spend"])
    assert cells["budget"] == shown(budget["budget"]) == "USD 10.00"
    assert cells["percent"] == f"{Decimal(budget['percent']):,.2f} %"
    # The projection moves with the clock between the two reads: equal to the cent, or a cent apart at most.
    assert abs(
        Decimal(cells["projected_spend"].split()[1].replace(",", "")) - Decimal(budget["projected_spend"])
    ) <= Decimal("0.01")


def test_overview_figures_are_the_platform_cost_apis(console_world: ConsoleWorld) -> None:
    api = _api(console_world)
    page = console_world.browser_client("platform_admin").get("/console/", _range()).content.decode()
    by_team = api.get("/api/v1/costs", {**_range(), "group_by": "team"}).json()
    assert figure(page, "range-total") == shown(by_team["totals"]["total_cost"])
    assert row_keys(page, "top-teams", "team") == [item["team"] for item in by_team["series"]] == ["alpha", "beta"]
    for item in by_team["series"]:
        cells = row(page, "top-teams", "team", item["team"])
        assert (cells["token_cost"], cells["gpu_cost"], cells["total_cost"]) == (
            shown(item["token_cost"]),
            shown(item["gpu_cost"]),
            shown(item["total_cost"]),
        )
    start, end = this_month()
    month = api.get("/api/v1/costs", {"from": start.isoformat(), "to": end.isoformat(), "group_by": "team"}).json()
    assert figure(page, "this-month") == shown(month["totals"]["total_cost"])
    start, end = last_month()
    previous = api.get("/api/v1/costs", {"from": start.isoformat(), "to": end.isoformat(), "group_by": "team"}).json()
    assert figure(page, "last-month") == shown(previous["totals"]["total_cost"]) == "USD 0.00"
    by_model = api.get("/api/v1/costs", {**_range(), "group_by": "model"}).json()
    for item in by_model["series"]:
        assert row(page, "top-models", "model", item["model"])["token_cost"] == shown(item["token_cost"])
    by_day = api.get("/api/v1/costs", {**_range(), "group_by": "day"}).json()
    for item in by_day["series"]:
        cells = row(page, "tokens-per-day", "day", item["day"])
        assert (cells["input_tokens"], cells["output_tokens"], cells["total_cost"]) == (
            f"{item['input_tokens']:,}",
            f"{item['output_tokens']:,}",
            shown(item["total_cost"]),
        )
        # Each day of the stacked chart's table adds up to the API's day.
        assert f'data-day-total="{item["day"]}">{shown(item["total_cost"])}<' in page
    # Highest burn first: alpha spent against 10.00, beta a little against the default budget.
    assert row_keys(page, "budgets", "team") == ["alpha", "beta"]
    for team in ("alpha", "beta"):
        budget = api.get(f"/api/v1/teams/{team}/budget").json()
        cells = row(page, "budgets", "team", team)
        assert (cells["spend"], cells["budget"], cells["percent"]) == (
            shown(budget["spend"]),
            shown(budget["budget"]),
            f"{Decimal(budget['percent']):,.2f} %",
        )
    assert figure(page, "quarantined") == f"{api.get('/api/v1/usage/quarantine').json()['count']:,}" == "1"
    assert row_keys(page, "not-ready", "deployment") == ["alpha/batch"]
    assert "ImagePullBackOff: the model server image was not found" in page


def test_deployment_page_is_the_deployment_and_cost_apis(console_world: ConsoleWorld) -> None:
    api = _api(console_world, "viewer")
    page = (
        console_world.browser_client("viewer").get("/console/teams/alpha/deployments/chat/", _range()).content.decode()
    )
    detail = api.get("/api/v1/teams/alpha/deployments/chat").json()
    status = detail["status"]
    assert row_text(page, "status") == {
        "phase": status["phase"],
        "message": status["message"] or "—",
        "replicas": f"{status['observed_replicas']} running, {detail['min_replicas']}–{detail['max_replicas']} wanted, "  # noqa: RUF001 (the page writes ranges with an en dash)
        f"{detail['gpus_per_replica']} GPU each",
    }
    assert f"<code>{status['endpoint']}</code>" in page
    assert status["endpoint"]
    costs = api.get("/api/v1/teams/alpha/costs", {**_range(), "group_by": "day"}).json()
    gpu = next(item for item in costs["gpu"] if item["deployment"] == "chat")
    assert figure(page, "gpu_hours") == f"{Decimal(gpu['gpu_hours']):,.2f} GPU-hours"
    assert figure(page, "gpu_cost") == shown(gpu["cost"])
    events = api.get("/api/v1/teams/alpha/deployments/chat/events").json()
    events = events.get("results", events)
    assert events
    assert all(event["reason"] in page for event in events)
    failed = console_world.browser_client("viewer").get("/console/teams/alpha/deployments/batch/").content.decode()
    assert "ImagePullBackOff: the model server image was not found" in failed
    assert "phase-failed" in failed


def test_model_page_shows_spend_only_of_teams_the_viewer_sees(console_world: ConsoleWorld) -> None:
    staff = console_world.browser_client("platform_admin").get("/console/models/gpt-test/", _range()).content.decode()
    assert row_keys(staff, "model-spend", "team") == ["alpha", "beta"]
    for team in ("alpha", "beta"):
        series = (
            _api(console_world).get(f"/api/v1/teams/{team}/costs", {**_range(), "group_by": "model"}).json()["series"]
        )
        expected = next(item for item in series if item["model"] == "gpt-test")
        assert row(staff, "model-spend", "team", team)["token_cost"] == shown(expected["token_cost"])
    outsider = console_world.browser_client("outsider").get("/console/models/gpt-test/", _range()).content.decode()
    assert row_keys(outsider, "model-spend", "team") == ["beta"]
    hosted = console_world.browser_client("outsider").get("/console/models/qwen/").content.decode()
    assert row_keys(hosted, "model-deployments", "deployment") == []
    assert row_keys(
        console_world.browser_client("viewer").get("/console/models/qwen/").content.decode(),
        "model-deployments",
        "deployment",
    ) == ["alpha/batch", "alpha/chat"]


def test_fleet_is_the_clusters_api_and_the_gpu_accrual(console_world: ConsoleWorld) -> None:
    api = _api(console_world)
    page = console_world.browser_client("platform_admin").get("/console/fleet/", _range()).content.decode()
    clusters = api.get("/api/v1/clusters").json()["results"]
    for cluster in clusters:
        for pool in cluster["pools"]:
            cells = row(page, "pools", "pool", f"{cluster['name']}/{pool['accelerator_type']}")
            assert (int(cells["allocated"]), int(cells["total"]), int(cells["free"])) == (
                pool["capacity"]["allocated"],
                pool["capacity"]["total"],
                pool["capacity"]["free"],
            )
    assert row(page, "pools", "pool", "gpu-eu/nvidia-l4")["allocated"] == "2"  # two deployments x 1 GPU
    costs = api.get("/api/v1/costs", {**_range(), "group_by": "team"}).json()
    assert row(page, "pools", "pool", "gpu-eu/nvidia-l4")["cost"] == shown(costs["totals"]["gpu_cost"])
    assert row(page, "quota-by-type", "type", "nvidia-l4") == {"quota": "4", "allocated": "2", "capacity": "8"}


def test_members_csv_is_the_team_cost_apis_csv_byte_for_byte(console_world: ConsoleWorld) -> None:
    viewer = console_world.browser_client("viewer")
    page = viewer.get("/console/teams/alpha/", _range()).content.decode()
    query = f"from={_range()['from']}&amp;to={_range()['to']}&amp;group_by=model&amp;format=csv"
    assert f'href="/console/teams/alpha/costs.csv?{query}"' in page
    for group_by in ("day", "model", "credential"):
        params = {**_range(), "group_by": group_by, "format": "csv"}
        door = viewer.get("/console/teams/alpha/costs.csv", params)
        assert door["Content-Type"] == "text/csv; charset=utf-8"
        assert door.content == _api(console_world, "viewer").get("/api/v1/teams/alpha/costs", params).content
    assert console_world.browser_client("outsider").get("/console/teams/alpha/costs.csv").status_code == 404
    staff_page = console_world.browser_client("platform_admin").get("/console/teams/alpha/", _range()).content.decode()
    assert f'href="/api/v1/teams/alpha/costs?{query}"' in staff_page  # staff sessions read the API itself


def _csv_links(html: str) -> list[str]:
    return [link.replace("&amp;", "&") for link in re.findall(r'<a href="([^"]*format=csv[^"]*)"', html)]


def test_every_list_tables_csv_is_the_list_apis_csv_byte_for_byte(console_world: ConsoleWorld) -> None:
    """Deployments, keys and members link to their list API's CSV (members through the console's door, staff to the
    API), the same bytes the API gives a token; another team's list is a 404 through the door too."""
    viewer = console_world.browser_client("viewer")
    links = _csv_links(viewer.get("/console/teams/alpha/").content.decode())
    links += _csv_links(viewer.get("/console/teams/alpha/deployments/chat/").content.decode())
    lists = {
        "/console/csv/teams/alpha/deployments?format=csv&page_size=200": "/api/v1/teams/alpha/deployments",
        "/console/csv/teams/alpha/credentials?format=csv&page_size=200": "/api/v1/teams/alpha/credentials",
        "/console/csv/teams/alpha/members?format=csv&page_size=200": "/api/v1/teams/alpha/members",
        "/console/csv/teams/alpha/deployments/chat/events?format=csv&page_size=200": (
            "/api/v1/teams/alpha/deployments/chat/events"
        ),
    }
    assert set(lists) <= set(links)
    api = _api(console_world, "viewer")
    for link, api_path in lists.items():
        door = viewer.get(link)
        assert (door.status_code, door["Content-Type"]) == (200, "text/csv; charset=utf-8")
        assert door.content == api.get(api_path, {"format": "csv", "page_size": 200}).content
        assert door.content == api.get(api_path, {"page_size": 200}, HTTP_ACCEPT="text/csv").content
    header, *rows = viewer.get("/console/csv/teams/alpha/deployments").content.decode().splitlines()
    assert header.split(",")[:2] == ["name", "team"]
    assert sorted(line.split(",")[0] for line in rows) == sorted(
        item["name"] for item in api.get("/api/v1/teams/alpha/deployments").json()["results"]
    )
    outsider = console_world.browser_client("outsider")
    for link in lists:
        assert outsider.get(link).status_code == 404
        assert b"chat" not in outsider.get(link).content
    assert viewer.get("/console/csv/teams/alpha/costs?format=csv").status_code == 404  # only the list views
    assert viewer.get("/console/csv/teams/alpha/members?format=json").status_code == 404  # the door gives CSV only
    assert viewer.get("/console/csv/clusters?format=csv").content == api.get("/api/v1/clusters?format=csv").content
    staff_page = console_world.browser_client("platform_admin").get("/console/teams/alpha/").content.decode()
    assert "/api/v1/teams/alpha/deployments?format=csv&page_size=200" in _csv_links(staff_page)
    fleet = console_world.browser_client("platform_admin").get("/console/fleet/").content.decode()
    assert "/api/v1/clusters?format=csv&page_size=200" in _csv_links(fleet)


def test_the_budget_burn_tables_csv_is_the_budgets_apis(console_world: ConsoleWorld) -> None:
    overview = console_world.browser_client("platform_admin").get("/console/").content.decode()
    assert "/api/v1/budgets?format=csv&page_size=200" in _csv_links(overview)
    staff_api = _api(console_world)
    body = staff_api.get("/api/v1/budgets", {"format": "csv", "page_size": 200}).content.decode()
    header, *lines = body.splitlines()
    assert header.startswith("team,month,currency,budget,spend,")
    assert [line.split(",")[0] for line in lines] == row_keys(overview, "budgets", "team")  # the table's rows, in order
    for line in lines:
        team, spend = line.split(",")[0], line.split(",")[4]
        assert spend == staff_api.get(f"/api/v1/teams/{team}/budget").json()["spend"]  # exact, not rounded
    assert _api(console_world, "admin").get("/api/v1/budgets", {"format": "csv"}).status_code == 403


def test_numeric_columns_have_right_aligned_headers_over_right_aligned_numbers(console_world: ConsoleWorld) -> None:
    admin_client = console_world.browser_client("platform_admin")
    checked = 0
    for path in EVERY_PAGE:
        html = admin_client.get(path).content.decode()
        for table_id in re.findall(r'<table id="([^"]+)"', html):
            html_table = re.search(rf'<table id="{table_id}".*?</table>', html, re.S).group(0)
            headers = re.findall(r'<th scope="col"( class="num")?>', html_table)
            for body_row in re.findall(r"<tr data-[^>]*>.*?</tr>", html_table, re.S):
                cells = re.findall(r'<(?:th scope="row"|td)( class="num")?[ >]', body_row)
                assert [bool(cell) for cell in cells] == [bool(header) for header in headers], (path, table_id)
                checked += 1
    assert checked > 20
    stylesheet = Path(finders.find("console/console.css")).read_text()
    assert "th.num, td.num { text-align: right;" in stylesheet  # the browser test reads the computed alignment


def test_money_is_shown_with_currency_and_two_decimals_and_times_as_utc_iso(console_world: ConsoleWorld) -> None:
    page = console_world.browser_client("platform_admin").get("/console/teams/alpha/").content.decode()
    amounts = __import__("re").findall(r"USD -?[\d,]+\.(\d+)", page)
    assert amounts
    assert all(len(decimals) == 2 for decimals in amounts)
    stamp = console_world.deployment.last_reconciled_at.astimezone(UTC).isoformat().replace("+00:00", "Z")
    deployment_page = console_world.browser_client("platform_admin").get("/console/teams/alpha/deployments/chat/")
    assert f'<time datetime="{stamp}" data-local>' in deployment_page.content.decode()


def test_pages_are_tables_without_the_chart_asset(console_world: ConsoleWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Python lane does not need the npm build: without the asset a page is its tables, with no script that
    would 404 (console.js then hides the empty chart areas)."""
    client = console_world.browser_client("platform_admin")
    monkeypatch.setattr(charts, "CHART_ASSET", "console/vendor/not-built.js")
    page = client.get("/console/").content.decode()
    assert "chart.umd.min.js" not in page
    assert 'id="top-teams"' in page
    assert "console/console.js" in page
    monkeypatch.undo()
    if charts.asset_available():
        assert "console/vendor/chart.umd.min.js" in client.get("/console/").content.decode()


def test_request_health_shows_the_rollups_figures_for_the_viewers_teams_only(console_world: ConsoleWorld) -> None:
    """Requests, errors and latency come from the events' status, duration and time to first token (the hourly
    request-health rollup, read by the same selector a report would use); a member sees their teams only."""
    alpha = console_world.usage.team.pk
    days = {"from": console_world.started.date().isoformat(), "to": datetime.now(UTC).date().isoformat()}
    start = datetime.combine(console_world.started.date(), datetime.min.time(), tzinfo=UTC)
    end = datetime.combine(datetime.now(UTC).date(), datetime.min.time(), tzinfo=UTC) + timedelta(days=1)
    expected = usage_selectors.request_health(team_ids=[alpha], start=start, end=end, group_by="team", bucket="day")
    assert [(item.key, item.requests, item.errors) for item in expected] == [("alpha", 3, 1)]
    page = console_world.browser_client("viewer").get("/console/requests/", days).content.decode()
    only = expected[0]
    assert row(page, "health", "row", f"{only.bucket_start.isoformat()}/alpha") == {
        "requests": "3",
        "errors": "1",
        "error_rate": "33.33 %",
        "p50_ms": f"{round(only.p50_ms):,}",
        "p95_ms": f"{round(only.p95_ms):,}",
        "ttft_p50_ms": f"{round(only.ttft_p50_ms):,}",
        "ttft_p95_ms": f"{round(only.ttft_p95_ms):,}",
    }
    assert only.p50_ms is not None
    assert only.ttft_p50_ms is not None
    assert "/beta" not in page  # the other team's request, seen by platform admins only
    staff = console_world.browser_client("platform_admin").get("/console/requests/", days).content.decode()
    assert f"{only.bucket_start.isoformat()}/beta" in staff
    bad = console_world.browser_client("viewer").get("/console/requests/", {**days, "group_by": "route"})
    assert bad.status_code == 400


def test_request_health_and_audit_tables_csv_are_their_apis_over_the_pages_range(console_world: ConsoleWorld) -> None:
    """The request-health table links to GET /api/v1/request-health with the page's range, grouping and bucket (a
    member's own teams, through the console's door); the audit trail to the audit API over the same range."""
    days = {"from": console_world.started.date().isoformat(), "to": datetime.now(UTC).date().isoformat()}
    viewer = console_world.browser_client("viewer")
    health = {**days, "group_by": "team", "bucket": "day"}
    link = f"/console/csv/request-health?format=csv&page_size=200&{urlencode(health)}"
    assert link in _csv_links(viewer.get("/console/requests/", health).content.decode())
    api = _api(console_world, "viewer")
    door = viewer.get(link)
    assert door.content == api.get("/api/v1/request-health", {**health, "format": "csv", "page_size": 200}).content
    header, *lines = door.content.decode().splitlines()
    assert header == "bucket_start,key,requests,errors,error_rate,p50_ms,p95_ms,ttft_p50_ms,ttft_p95_ms"
    assert [line.split(",")[1:4] for line in lines] == [["alpha", "3", "1"]]  # the table's row, not beta's
    assert api.get("/api/v1/request-health", {**days, "team": "beta"}).status_code == 404
    bad = api.get("/api/v1/request-health", {**days, "bucket": "week"})
    assert (bad.status_code, bad["Content-Type"]) == (400, "application/problem+json")
    assert "bucket" in bad.content.decode()
    staff = console_world.browser_client("platform_admin")
    staff_link = f"/api/v1/request-health?format=csv&page_size=200&{urlencode(health)}"
    assert staff_link in _csv_links(staff.get("/console/requests/", health).content.decode())
    assert ",beta," in _api(console_world).get(staff_link).content.decode()
    team_page = staff.get("/console/teams/alpha/", days).content.decode()
    (audit_link,) = [link for link in _csv_links(team_page) if link.startswith("/api/v1/audit-events?")]
    since, until = parse_qs(urlsplit(audit_link).query)["since"][0], parse_qs(urlsplit(audit_link).query)["until"][0]
    assert (since[:10], until[:10]) == (days["from"], (date.fromisoformat(days["to"]) + timedelta(days=1)).isoformat())
    header, *events = _api(console_world).get(audit_link).content.decode().splitlines()
    assert "action" in header.split(",")
    audit_table = re.search(r'<table id="audit".*?<tbody>(.*?)</tbody>', team_page, re.S).group(1)
    assert len(events) == audit_table.count("<tr><td>") > 0  # the table's events, all of them (fewer than 50)
    assert any("deployment.create" in event for event in events)
    assert viewer.get("/console/csv/audit-events?format=csv&team=alpha").status_code in (403, 404)


def test_the_not_ready_tables_csv_is_the_not_ready_deployments_api(console_world: ConsoleWorld) -> None:
    overview = console_world.browser_client("platform_admin").get("/console/").content.decode()
    link = "/api/v1/deployments/not-ready?format=csv&page_size=200"
    assert link in _csv_links(overview)
    staff_api = _api(console_world)
    header, *lines = staff_api.get(link).content.decode().splitlines()
    assert header.split(",")[:2] == ["name", "team"]
    deployments = [f"{line.split(',')[1]}/{line.split(',')[0]}" for line in lines]
    assert deployments == row_keys(overview, "not-ready", "deployment") == ["alpha/batch"]  # the table's rows, in order
    assert staff_api.get(link, HTTP_ACCEPT="text/csv").content == staff_api.get(link).content
    assert staff_api.get("/api/v1/deployments/not-ready", {"phase": "Ready"}).json()["results"] == []
    bad = staff_api.get("/api/v1/deployments/not-ready", {"phase": "Sleeping"})
    assert (bad.status_code, bad["Content-Type"]) == (400, "application/problem+json")
    assert _api(console_world, "admin").get(link).status_code == 403  # a team admin: not the platform's list


def test_the_quota_by_type_tables_csv_is_the_accelerator_types_api(console_world: ConsoleWorld) -> None:
    fleet = console_world.browser_client("platform_admin").get("/console/fleet/").content.decode()
    link = "/api/v1/accelerator-types?format=csv&page_size=200"
    assert link in _csv_links(fleet)
    staff_api = _api(console_world)
    header, *lines = staff_api.get(link).content.decode().splitlines()
    assert header == "accelerator_type,quota,allocated,capacity"
    assert [line.split(",")[0] for line in lines] == row_keys(fleet, "quota-by-type", "type")  # in the table's order
    table = {
        line.split(",")[0]: dict(zip(["quota", "allocated", "capacity"], line.split(",")[1:], strict=True))
        for line in lines
    }
    assert table["nvidia-l4"] == row(fleet, "quota-by-type", "type", "nvidia-l4")
    assert staff_api.get("/api/v1/accelerator-types").json()["results"][0].keys() == {
        "accelerator_type",
        "quota",
        "allocated",
        "capacity",
    }
    assert _api(console_world, "admin").get(link).status_code == 403  # quotas across teams: the platform's


def test_the_model_pages_tables_csv_are_the_versions_and_model_deployments_apis(console_world: ConsoleWorld) -> None:
    viewer = console_world.browser_client("viewer")
    page = viewer.get("/console/models/qwen/").content.decode()
    lists = {
        "/console/csv/catalog/models/qwen/versions?format=csv&page_size=200": "/api/v1/catalog/models/qwen/versions",
        "/console/csv/catalog/models/qwen/deployments?format=csv&page_size=200": (
            "/api/v1/catalog/models/qwen/deployments"
        ),
    }
    assert set(lists) <= set(_csv_links(page))
    api = _api(console_world, "viewer")
    for link, api_path in lists.items():
        door = viewer.get(link)
        assert (door.status_code, door["Content-Type"]) == (200, "text/csv; charset=utf-8")
        assert door.content == api.get(api_path, {"format": "csv", "page_size": 200}).content
    header, *rows = viewer.get(next(iter(lists))).content.decode().splitlines()
    assert header.split(",")[0] == "version"
    versions = [item["version"] for item in api.get("/api/v1/catalog/models/qwen/versions").json()]
    assert versions
    assert [row.split(",")[0] for row in rows] == versions  # one row per version, in the API's order
    deployments = api.get("/api/v1/catalog/models/qwen/deployments").json()["results"]
    header, *rows = viewer.get(list(lists)[1]).content.decode().splitlines()
    assert header.split(",")[:2] == ["name", "team"]
    assert [tuple(row.split(",")[:2]) for row in rows] == [(item["name"], item["team"]) for item in deployments]
    assert {item["team"] for item in deployments} == {"alpha"}  # the viewer's team only
    # Another team's member sees none of alpha's deployments of the same model.
    outsider = _api(console_world, "outsider").get("/api/v1/catalog/models/qwen/deployments").json()["results"]
    assert "alpha" not in {item["team"] for item in outsider}
    staff = console_world.browser_client("platform_admin").get("/console/models/qwen/").content.decode()
    assert "/api/v1/catalog/models/qwen/deployments?format=csv&page_size=200" in _csv_links(staff)
