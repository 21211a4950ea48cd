"""The console in a real browser: Debian's chromium, headless, driven by Playwright from this test process against
a live portal. Per page: it loads with no console error, every figure read off the page equals the API's answer for
the same range (the API read over HTTP in the same test), an outsider gets 404, axe-core finds no serious or critical
violation, and a screenshot is saved under var/screenshots/ for review.

Playwright's own browser download is never used: executable_path is the system chromium (the machine's network is
closed), started with the flags the machine needs (/work/.library/env/machines/python-svc.md); Playwright gives each
launch a fresh temporary --user-data-dir of its own (launch() without a persistent context, per Playwright's
BrowserType.launch docs)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.conf import settings
from django.test import Client

from portal.console import charts
from portal.tokens.services import api_token_issue
from tests.console.conftest import ConsoleWorld
from tests.console.pages import last_month, shown, this_month

playwright_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
AXE = settings.BASE_DIR / "portal" / "console" / "assets" / "node_modules" / "axe-core" / "axe.min.js"
SCREENSHOTS = settings.BASE_DIR / "var" / "screenshots"
VIEWER_ZONE = "Asia/Tokyo"  # not UTC, so that a time left in UTC would show

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="no chromium installed (make browser installs Debian's)"),
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless chromium for the module; each test opens its own context (cookies, time zone).

    Playwright's sync API keeps an asyncio loop running in this thread, which Django's async-safety check takes for
    an async context; the database calls of these tests are synchronous, so the check is switched off for this module
    only (DJANGO_ALLOW_ASYNC_UNSAFE, Django's documented switch: docs/topics/async.txt, "Async safety")."""
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with playwright_api.sync_playwright() as playwright:
            chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
            yield chromium
            chromium.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def assets_built() -> None:
    if not charts.asset_available() or not AXE.exists():
        pytest.skip("the console's assets are not built: run make console-assets (make test does)")


class Visit:
    """A signed-in browser context on the live portal, recording console errors and failed requests."""

    def __init__(self, browser: Any, base_url: str, session_key: str) -> None:
        self.base_url = base_url
        self.context = browser.new_context(
            base_url=base_url, timezone_id=VIEWER_ZONE, locale="en-US", viewport={"width": 1400, "height": 900}
        )
        host = base_url.split("//")[1].split(":")[0]
        self.context.add_cookies([{"name": "sessionid", "value": session_key, "domain": host, "path": "/"}])
        self.errors: list[str] = []
        self.page = self.context.new_page()
        self.page.on("console", lambda message: message.type == "error" and self.errors.append(message.text))
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))

    def open(self, path: str) -> Any:
        response = self.page.goto(path, wait_until="networkidle")
        return response

    def text(self, selector: str) -> str:
        return self.page.locator(selector).inner_text().strip()

    def screenshot(self, name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"console-{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def accessibility_violations(self) -> list[dict[str, Any]]:
        """axe-core (from the console's npm lock) run in the page: serious and critical violations only."""
        self.page.add_script_tag(content=AXE.read_text())
        result = self.page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
        return [
            {
                "id": violation["id"],
                "impact": violation["impact"],
                "nodes": [node["target"] for node in violation["nodes"]],
            }
            for violation in result["violations"]
            if violation["impact"] in ("serious", "critical")
        ]

    def close(self) -> None:
        self.context.close()


def _session_key(world: ConsoleWorld, who: str) -> str:
    client = Client()
    client.force_login(getattr(world.usage.matrix, who))
    return client.cookies["sessionid"].value


@pytest.fixture
def visit(browser: Any, live_server: Any, console_world: ConsoleWorld, assets_built: None) -> Iterator[Any]:
    opened: list[Visit] = []

    def open_as(who: str) -> Visit:
        found = Visit(browser, live_server.url, _session_key(console_world, who))
        opened.append(found)
        return found

    yield open_as
    for item in opened:
        item.close()


def _api(browser_visit: Visit, world: ConsoleWorld, who: str, path: str, **params: str) -> dict[str, Any]:
    """The API over HTTP from the same browser process, with the same person's token."""
    token = api_token_issue(actor=None, principal=getattr(world.usage.matrix, who), name="browser", scopes=[]).plaintext
    response = browser_visit.context.request.get(
        f"{browser_visit.base_url}{path}", params=params, headers={"Authorization": f"Bearer {token}"}
    )
    assert response.ok, (path, response.status, response.text())
    return response.json()


def _range() -> dict[str, str]:
    start, end = this_month()
    return {"from": start.isoformat(), "to": end.isoformat()}


def _query() -> str:
    return f"?from={_range()['from']}&to={_range()['to']}"


def _page_is_clean(browser_visit: Visit, name: str) -> None:
    """No console error, charts drawn over the tables, axe clean, and a screenshot for review."""
    assert browser_visit.errors == [], browser_visit.errors
    drawn = browser_visit.page.evaluate(
        "() => [...document.querySelectorAll('canvas[data-chart]')].filter(c => !c.parentElement.hidden)"
        ".map(c => !!window.Chart.getChart(c))"
    )
    assert drawn, "the page has chart areas"
    assert all(drawn), "every visible chart area holds a Chart.js chart"
    assert browser_visit.accessibility_violations() == []
    assert browser_visit.screenshot(name).stat().st_size > 10_000


def test_overview_in_the_browser(visit: Any, console_world: ConsoleWorld) -> None:
    staff = visit("platform_admin")
    assert staff.open(f"/console/{_query()}").status == 200
    by_team = _api(staff, console_world, "platform_admin", "/api/v1/costs", **_range(), group_by="team")
    assert staff.text('[data-figure="range-total"]') == shown(by_team["totals"]["total_cost"])
    for item in by_team["series"]:
        row = f'#top-teams tr[data-team="{item["team"]}"]'
        assert staff.text(f'{row} [data-field="total_cost"]') == shown(item["total_cost"])
        assert staff.text(f'{row} [data-field="gpu_cost"]') == shown(item["gpu_cost"])
    start, end = this_month()
    month = _api(staff, console_world, "platform_admin", "/api/v1/costs", **{"from": str(start), "to": str(end)})
    assert staff.text('[data-figure="this-month"]') == shown(month["totals"]["total_cost"])
    start, end = last_month()
    previous = _api(staff, console_world, "platform_admin", "/api/v1/costs", **{"from": str(start), "to": str(end)})
    assert staff.text('[data-figure="last-month"]') == shown(previous["totals"]["total_cost"])
    by_model = _api(staff, console_world, "platform_admin", "/api/v1/costs", **_range(), group_by="model")
    for item in by_model["series"]:
        assert staff.text(f'#top-models tr[data-model="{item["model"]}"] [data-field="token_cost"]') == shown(
            item["token_cost"]
        )
    by_day = _api(staff, console_world, "platform_admin", "/api/v1/costs", **_range(), group_by="day")
    for item in by_day["series"]:
        row = f'#tokens-per-day tr[data-day="{item["day"]}"]'
        assert staff.text(f'{row} [data-field="input_tokens"]') == f"{item['input_tokens']:,}"
        assert staff.text(f'{row} [data-field="total_cost"]') == shown(item["total_cost"])
        assert staff.text(f'[data-day-total="{item["day"]}"]') == shown(item["total_cost"])
    for team in ("alpha", "beta"):
        budget = _api(staff, console_world, "platform_admin", f"/api/v1/teams/{team}/budget")
        row = f'#budgets tr[data-team="{team}"]'
        assert staff.text(f'{row} [data-field="spend"]') == shown(budget["spend"])
        assert staff.text(f'{row} [data-field="percent"]') == f"{Decimal(budget['percent']):,.2f} %"
    quarantine = _api(staff, console_world, "platform_admin", "/api/v1/usage/quarantine")
    assert staff.text('[data-figure="quarantined"]') == f"{quarantine['count']:,}"
    assert "ImagePullBackOff" in staff.text('#not-ready tr[data-deployment="alpha/batch"]')
    # The burn bar is coloured at the thresholds: alpha is over 50 % of its 10.00 (its spend says by how much).
    assert "burn-" in staff.page.locator('#budgets tr[data-team="alpha"] .burn').get_attribute("class")
    aligned = staff.page.evaluate(
        "() => [...document.querySelectorAll('#top-teams thead th, #top-teams tbody tr:first-child > *')]"
        ".map(cell => getComputedStyle(cell).textAlign)"
    )
    assert aligned == ["left", "right", "right", "right", "right"] * 2  # numeric headers over numeric cells
    _page_is_clean(staff, "overview")


def test_team_page_in_the_browser(visit: Any, console_world: ConsoleWorld) -> None:
    member = visit("admin")
    assert member.open(f"/console/teams/alpha/{_query()}").status == 200
    by_day = _api(member, console_world, "admin", "/api/v1/teams/alpha/costs", **_range(), group_by="day")
    for name in ("total_cost", "token_cost", "gpu_cost"):
        assert member.text(f'[data-figure="{name}"]') == shown(by_day["totals"][name])
    for item in by_day["series"]:
        assert member.text(f'#cost-by-day tr[data-day="{item["day"]}"] [data-field="total_cost"]') == shown(
            item["total_cost"]
        )
    by_model = _api(member, console_world, "admin", "/api/v1/teams/alpha/costs", **_range(), group_by="model")
    for item in by_model["series"]:
        assert member.text(f'#cost-by-model tr[data-model="{item["model"]}"] [data-field="token_cost"]') == shown(
            item["token_cost"]
        )
    by_key = _api(member, console_world, "admin", "/api/v1/teams/alpha/costs", **_range(), group_by="credential")
    for item in by_key["series"]:
        assert member.text(f'#cost-by-key tr[data-key="{item["client_id"]}"] [data-field="token_cost"]') == shown(
            item["token_cost"]
        )
    budget = _api(member, console_world, "admin", "/api/v1/teams/alpha/budget")
    assert member.text('#budget [data-field="spend"]') == shown(budget["spend"])
    assert member.text('#budget [data-field="budget"]') == shown(budget["budget"])
    deployments = _api(member, console_world, "admin", "/api/v1/teams/alpha/deployments")
    for item in deployments.get("results", deployments):
        assert member.text(f'#deployments tr[data-deployment="{item["name"]}"]').count(item["status"]["phase"]) == 1
    gpu = next(item for item in by_day["gpu"] if item["deployment"] == "chat")
    assert (
        member.text('#deployments tr[data-deployment="chat"] [data-field="gpu_hours"]')
        == f"{Decimal(gpu['gpu_hours']):,.2f}"
    )
    members = _api(member, console_world, "admin", "/api/v1/teams/alpha/members")
    assert member.page.locator("#members tbody tr").count() == len(members.get("results", members))
    _page_is_clean(member, "team")


def test_deployment_page_in_the_browser_and_times_in_the_viewers_zone(visit: Any, console_world: ConsoleWorld) -> None:
    member = visit("viewer")
    assert member.open(f"/console/teams/alpha/deployments/chat/{_query()}").status == 200
    detail = _api(member, console_world, "viewer", "/api/v1/teams/alpha/deployments/chat")
    assert member.text('#status [data-field="phase"]') == detail["status"]["phase"] == "Ready"
    costs = _api(member, console_world, "viewer", "/api/v1/teams/alpha/costs", **_range(), group_by="day")
    gpu = next(item for item in costs["gpu"] if item["deployment"] == "chat")
    assert member.text('[data-figure="gpu_cost"]') == shown(gpu["cost"])
    assert member.text('[data-figure="gpu_hours"]') == f"{Decimal(gpu['gpu_hours']):,.2f} GPU-hours"
    reconciled = member.page.locator("#status time[data-local]").first
    utc = datetime.fromisoformat(reconciled.get_attribute("datetime").replace("Z", "+00:00"))
    local = utc.astimezone(ZoneInfo(VIEWER_ZONE))
    shown_text = reconciled.inner_text()
    assert "UTC" not in shown_text
    assert f"{local.hour % 12 or 12}:{local.minute:02d}" in shown_text
    _page_is_clean(member, "deployment")


def test_fleet_in_the_browser(visit: Any, console_world: ConsoleWorld) -> None:
    staff = visit("platform_admin")
    assert staff.open(f"/console/fleet/{_query()}").status == 200
    clusters = _api(staff, console_world, "platform_admin", "/api/v1/clusters")
    for cluster in clusters["results"]:
        for pool in cluster["pools"]:
            row = f'#pools tr[data-pool="{cluster["name"]}/{pool["accelerator_type"]}"]'
            assert staff.text(f'{row} [data-field="allocated"]') == str(pool["capacity"]["allocated"])
            assert staff.text(f'{row} [data-field="total"]') == str(pool["capacity"]["total"])
    costs = _api(staff, console_world, "platform_admin", "/api/v1/costs", **_range(), group_by="team")
    assert staff.text('#pools tr[data-pool="gpu-eu/nvidia-l4"] [data-field="cost"]') == shown(
        costs["totals"]["gpu_cost"]
    )
    _page_is_clean(staff, "fleet")


def test_model_page_in_the_browser(visit: Any, console_world: ConsoleWorld) -> None:
    member = visit("viewer")
    assert member.open(f"/console/models/qwen/{_query()}").status == 200
    by_model = _api(member, console_world, "viewer", "/api/v1/teams/alpha/costs", **_range(), group_by="model")
    qwen = next(item for item in by_model["series"] if item["model"] == "qwen")
    assert member.text('#model-spend tr[data-team="alpha"] [data-field="token_cost"]') == shown(qwen["token_cost"])
    assert member.page.locator("#model-spend tbody tr[data-team]").count() == 1
    _page_is_clean(member, "model")


def test_request_health_page_in_the_browser(visit: Any, console_world: ConsoleWorld) -> None:
    member = visit("viewer")
    assert member.open("/console/requests/").status == 200
    assert member.errors == []
    assert member.page.locator("#health tbody tr[data-row]").count() == 1  # the viewer's team, one day
    assert member.text('#health [data-field="requests"]') == "3"
    assert member.accessibility_violations() == []
    member.screenshot("requests")


def test_another_teams_pages_are_404_in_the_browser(visit: Any, console_world: ConsoleWorld) -> None:
    outsider = visit("outsider")
    for path in ("/console/teams/alpha/", "/console/teams/alpha/deployments/chat/", "/console/fleet/"):
        response = outsider.open(path)
        assert response.status == 404, path
        assert "Not found" in outsider.text("h1")
        assert "Team alpha" not in outsider.page.content()
        assert outsider.page.locator("#deployments, #pools").count() == 0
    member = visit("viewer")
    assert member.open("/console/teams/beta/").status == 404


def test_a_member_signs_in_and_walks_from_team_to_deployment_to_csv(
    browser: Any, live_server: Any, console_world: ConsoleWorld, assets_built: None
) -> None:
    """As a developer would from a Backstage link: sign in, land on the team, open a deployment, come back, download
    the cost CSV, and get the API's CSV for the same range."""
    person = console_world.usage.matrix.developer
    person.set_password("a long enough password")
    person.save()
    context = browser.new_context(base_url=live_server.url, timezone_id=VIEWER_ZONE, locale="en-US")
    try:
        page = context.new_page()
        errors: list[str] = []
        page.on("console", lambda message: message.type == "error" and errors.append(message.text))
        page.goto("/console/teams/alpha/")
        assert "/console/login/" in page.url
        page.fill("#id_username", person.username)
        page.fill("#id_password", "a long enough password")
        page.click("button[type=submit]")
        page.wait_for_url("**/console/teams/alpha/")
        page.fill("#range-from", _range()["from"])
        page.fill("#range-to", _range()["to"])
        page.click("form.range button[type=submit]")
        page.wait_for_load_state("networkidle")
        page.click('#deployments a:text("chat")')
        page.wait_for_url("**/console/teams/alpha/deployments/chat/")
        assert page.locator('#status [data-field="phase"]').inner_text().strip() == "Ready"
        page.go_back()
        with page.expect_download() as download:
            page.click('#cost-by-model caption a:text("CSV")')
        body = Path(download.value.path()).read_bytes()
        token = api_token_issue(actor=None, principal=person, name="walk", scopes=[]).plaintext
        api = context.request.get(
            f"{live_server.url}/api/v1/teams/alpha/costs",
            params={**_range(), "group_by": "model", "format": "csv"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert body == api.body()
        assert b"qwen" in body
        with page.expect_download() as download:  # a list table: the deployments API's CSV, through the console
            page.click('#deployments caption a:text("CSV")')
        listed = context.request.get(
            f"{live_server.url}/api/v1/teams/alpha/deployments",
            params={"format": "csv"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert Path(download.value.path()).read_bytes() == listed.body()
        assert b"chat" in listed.body()
        assert errors == []
    finally:
        context.close()
