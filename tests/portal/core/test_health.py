"""Operations endpoints: liveness, readiness (database and broker), Prometheus metrics."""

from __future__ import annotations

import pytest
from django.test import Client


def test_healthz_needs_nothing() -> None:
    response = Client().get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_readyz_checks_database_and_broker() -> None:
    response = Client().get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"database": "ok", "broker": "ok"}}


@pytest.mark.django_db
def test_readyz_reports_an_unreachable_broker(settings: object) -> None:
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:9/0"  # type: ignore[attr-defined]
    response = Client().get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["broker"] != "ok"


@pytest.mark.django_db
def test_metrics_count_requests_by_route() -> None:
    client = Client()
    client.get("/healthz")
    body = client.get("/metrics").content.decode()
    assert 'portal_http_requests_total{method="GET",route="healthz",status="2xx"}' in body
    assert "portal_http_request_duration_seconds_bucket" in body


@pytest.mark.django_db
def test_openapi_schema_and_docs_are_served() -> None:
    client = Client()
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert schema.status_code == 200
    document = schema.json()
    assert document["openapi"].startswith("3.")
    assert "/api/v1/teams/{team}/quota" in document["paths"]
    assert "/api/v1/catalog/models" in document["paths"]
    assert client.get("/api/docs/").status_code == 200
