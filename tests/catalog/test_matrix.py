"""Catalog API: reads for everyone signed in, writes for platform admins, visibility, filters, prices in force,
validation problems, and the starter catalog loading idempotently."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.utils import timezone

from catalog.models import CatalogModel, ModelPrice, ModelVersion, Visibility
from portal.core.models import AuditEvent
from tests.conftest import ROLES, RoleMatrix, assert_problem
from tests.factories import CatalogModelFactory, ManagedVersionFactory, PriceFactory, SelfHostedVersionFactory

pytestmark = pytest.mark.django_db

READ = {"anonymous": 401, "outsider": 200, "viewer": 200, "developer": 200, "admin": 200, "platform_admin": 200}
WRITE = {"anonymous": 401, "outsider": 403, "viewer": 403, "developer": 403, "admin": 403}


@pytest.fixture
def catalog(matrix: RoleMatrix) -> RoleMatrix:
    SelfHostedVersionFactory(model__slug="llama", version="v1")
    PriceFactory(model__slug="gpt", usage_type="input", price_per_million=Decimal("2.5"))
    ManagedVersionFactory(model=CatalogModel.objects.get(slug="gpt"), version="v1")
    return matrix


def _counts() -> tuple[int, int, int, int]:
    return (
        CatalogModel.objects.count(),
        ModelVersion.objects.count(),
        ModelPrice.objects.count(),
        AuditEvent.objects.filter(action__regex=r"^(catalog_model|model_version|model_price)\.").count(),
    )


@pytest.mark.parametrize("who", ROLES)
@pytest.mark.parametrize(
    "path",
    ["/api/v1/catalog/models", "/api/v1/catalog/models/llama", "/api/v1/catalog/models/llama/versions",
     "/api/v1/catalog/models/llama/versions/v1", "/api/v1/catalog/models/gpt/prices"],
)  # fmt: skip
def test_reads(catalog: RoleMatrix, who: str, path: str) -> None:
    response = catalog.client(who).get(path)
    assert response.status_code == READ[who], response.content


WRITES = [
    ("post", "/api/v1/catalog/models", {"slug": "new-model", "display_name": "N", "publisher": "P", "license": "mit",
                                         "capabilities": ["chat"], "context_window": 4096, "hosting": "self_hosted"}, 201),
    ("patch", "/api/v1/catalog/models/llama", {"display_name": "Llama renamed"}, 200),
    ("post", "/api/v1/catalog/models/llama/versions", {"version": "v2", "served_model_name": "llama-v2",
                                                        "artifact_uri": "hf://org/llama", "gpus_per_replica": 1}, 201),
    ("patch", "/api/v1/catalog/models/llama/versions/v1", {"lifecycle": "deprecated"}, 200),
    ("post", "/api/v1/catalog/models/gpt/prices", {"usage_type": "output", "price_per_million": "10.000000",
                                                    "effective_from": "2026-02-01T00:00:00Z"}, 201),
]  # fmt: skip


@pytest.mark.parametrize("who", ROLES)
@pytest.mark.parametrize(("method", "path", "body", "created"), WRITES, ids=[f"{m} {p}" for m, p, _, _ in WRITES])
def test_writes_are_for_platform_admins(
    catalog: RoleMatrix, who: str, method: str, path: str, body: dict[str, object], created: int
) -> None:
    client = catalog.client(who)
    before = _counts()
    response = getattr(client, method)(path, body, format="json")
    expected = WRITE.get(who, created)
    assert response.status_code == expected, response.content
    if expected >= 400:
        assert_problem(response, expected)
        assert _counts() == before
        assert CatalogModel.objects.get(slug="llama").display_name != "Llama renamed"
    else:
        assert _counts()[3] == before[3] + 1  # audited


def test_team_visibility(catalog: RoleMatrix) -> None:
    private = CatalogModelFactory(slug="private", visibility=Visibility.TEAMS)
    private.visible_to_teams.set([catalog.team])
    for who, visible in (("viewer", True), ("outsider", False), ("platform_admin", True)):
        client = catalog.client(who)
        slugs = {item["slug"] for item in client.get("/api/v1/catalog/models?page_size=200").json()["results"]}
        assert ("private" in slugs) is visible
        assert client.get("/api/v1/catalog/models/private").status_code == (200 if visible else 404)


def test_filters(catalog: RoleMatrix) -> None:
    client = catalog.client("viewer")

    def slugs(query: str) -> list[str]:
        response = client.get(f"/api/v1/catalog/models?{query}")
        assert response.status_code == 200, response.content
        return sorted(item["slug"] for item in response.json()["results"])

    assert slugs("hosting=managed") == ["gpt"]
    assert slugs("hosting=self_hosted") == ["llama"]
    assert slugs("q=llama") == ["llama"]
    assert_problem(client.get("/api/v1/catalog/models?hosting=martian"), 400)
    assert_problem(client.get("/api/v1/catalog/models?capability=telepathy"), 400)


def test_detail_shows_the_price_in_force_now(catalog: RoleMatrix) -> None:
    gpt = CatalogModel.objects.get(slug="gpt")
    now = timezone.now()
    PriceFactory(
        model=gpt, usage_type="input", price_per_million=Decimal("2.0"), effective_from=now - timedelta(seconds=1)
    )
    PriceFactory(
        model=gpt, usage_type="input", price_per_million=Decimal("1.0"), effective_from=now + timedelta(days=1)
    )
    body = catalog.client("viewer").get("/api/v1/catalog/models/gpt").json()
    inputs = [price for price in body["prices"] if price["usage_type"] == "input"]
    assert [price["price_per_million"] for price in inputs] == ["2.000000"]
    assert body["versions"][0]["provider"]


def test_prices_are_exact_and_non_overlapping(catalog: RoleMatrix) -> None:
    client = catalog.client("platform_admin")
    path = "/api/v1/catalog/models/gpt/prices"
    body = {"usage_type": "cached_input", "price_per_million": "0.075", "effective_from": "2026-03-01T00:00:00Z"}
    assert client.post(path, body, format="json").status_code == 201
    assert ModelPrice.objects.get(usage_type="cached_input").price_per_million == Decimal("0.075")
    before = _counts()
    assert_problem(client.post(path, body | {"price_per_million": "0.08"}, format="json"), 409, "price_exists")
    problem = assert_problem(client.post(path, body | {"price_per_million": "0.0000001"}, format="json"), 400)
    assert "price_per_million" in {entry["field"] for entry in problem["errors"]}
    assert _counts() == before


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/v1/catalog/models", {"slug": "Bad Slug", "display_name": "x", "publisher": "p", "license": "l",
                                    "capabilities": ["chat"], "context_window": 1, "hosting": "managed"}, "slug"),
        ("/api/v1/catalog/models", {"slug": "ok", "display_name": "x", "publisher": "p", "license": "l",
                                    "capabilities": ["telepathy"], "context_window": 1, "hosting": "managed"}, "capabilities"),
        ("/api/v1/catalog/models/llama/versions", {"version": "v3", "served_model_name": "x-y"}, "artifact_uri"),
        ("/api/v1/catalog/models/llama/versions", {"version": "v3", "served_model_name": "x-y",
                                                    "artifact_uri": "hf://a/b", "cpu": "four"}, "cpu"),
        ("/api/v1/catalog/models/gpt/versions", {"version": "v3", "served_model_name": "x-y", "provider": "martians",
                                                  "provider_model_id": "m"}, "provider"),
    ],
)  # fmt: skip
def test_validation_problems_name_the_field(
    catalog: RoleMatrix, path: str, body: dict[str, object], field: str
) -> None:
    client = catalog.client("platform_admin")
    before = _counts()
    problem = assert_problem(client.post(path, body, format="json"), 400)
    assert any(entry["field"].split(".")[0].split("[")[0] == field for entry in problem["errors"]), problem
    assert _counts() == before


def test_starter_catalog_loads_and_reloading_changes_nothing(db: None) -> None:
    call_command("load_catalog", verbosity=0)
    first = _counts()
    assert first[0] >= 10
    assert CatalogModel.objects.filter(hosting="self_hosted").count() >= 5
    assert ModelPrice.objects.get(model__slug="gpt-4o-mini", usage_type="cached_input").price_per_million == Decimal(
        "0.075"
    )
    call_command("load_catalog", verbosity=0)
    assert _counts() == first


def test_a_changed_price_for_the_same_start_stops_the_whole_load(tmp_path: object, db: None) -> None:
    from pathlib import Path

    call_command("load_catalog", verbosity=0)
    before = _counts()
    document = (
        "models:\n"
        "  - {slug: brand-new, display_name: New, publisher: P, license: mit, capabilities: [chat],\n"
        "     context_window: 1000, hosting: managed}\n"
        "  - slug: gpt-4o-mini\n"
        "    prices: [{usage_type: input, price_per_million: '9.99', currency: USD,"
        " effective_from: '2026-01-01T00:00:00Z'}]\n"
    )
    path = Path(str(tmp_path)) / "catalog.yaml"
    path.write_text(document)
    with pytest.raises(Exception, match="price"):
        call_command("load_catalog", str(path), verbosity=0)
    assert _counts() == before
    assert not CatalogModel.objects.filter(slug="brand-new").exists()
