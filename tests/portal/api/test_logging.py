"""Expected conditions (bad input, throttling, conflicts, a lost rate limiter) log one line at WARNING or INFO, never
an ERROR and never a traceback."""

from __future__ import annotations

import logging

import pytest

from tests.conftest import RoleMatrix, assert_problem
from tests.factories import TeamFactory


def _assert_quiet(records: list[logging.LogRecord], *, expected: int) -> None:
    """Nothing at ERROR, no traceback, every message one line; and the condition was logged (expected lines)."""
    loud = [record for record in records if record.levelno >= logging.ERROR or record.exc_info]
    assert loud == [], [(record.name, record.levelname, record.getMessage()) for record in loud]
    assert all("\n" not in record.getMessage() for record in records), [record.getMessage() for record in records]
    assert len([record for record in records if record.levelno >= logging.INFO]) >= expected


@pytest.mark.django_db
def test_client_errors_log_one_warning_line(
    matrix: RoleMatrix, settings: object, caplog: pytest.LogCaptureFixture
) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 4096  # type: ignore[attr-defined]
    developer = matrix.client("developer")
    caplog.set_level(logging.DEBUG)
    assert_problem(developer.post("/api/v1/teams", {"slug": "Not A Slug"}, format="json"), 400, "validation_failed")
    assert_problem(developer.get("/api/v1/teams/nope"), 404)
    assert_problem(developer.patch("/api/v1/teams/alpha", {"display_name": "x"}, format="json"), 403)
    assert_problem(
        developer.post("/api/v1/teams", "[" * 1000 + "]" * 1000, content_type="application/json"),
        400,
        "malformed_request",
    )
    too_big = {"slug": "big", "display_name": "x" * 5000}
    assert_problem(developer.post("/api/v1/teams", too_big, format="json"), 413, "payload_too_large")
    _assert_quiet(caplog.records, expected=5)
    assert {record.levelname for record in caplog.records if record.name == "django.request"} == {"WARNING"}


@pytest.mark.django_db
def test_a_conflict_logs_one_line(matrix: RoleMatrix, caplog: pytest.LogCaptureFixture) -> None:
    TeamFactory(slug="taken")
    caplog.set_level(logging.DEBUG)
    response = matrix.client("developer").post(
        "/api/v1/teams", {"slug": "taken", "display_name": "Taken"}, format="json"
    )
    assert response.status_code == 409
    _assert_quiet(caplog.records, expected=1)


@pytest.mark.django_db
def test_throttled_logs_one_warning_line(
    matrix: RoleMatrix, settings: object, caplog: pytest.LogCaptureFixture
) -> None:
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"principal": "1/minute"}}  # type: ignore[attr-defined]
    developer = matrix.client("developer")
    assert developer.get("/api/v1/me").status_code == 200
    caplog.set_level(logging.DEBUG)
    assert_problem(developer.get("/api/v1/me"), 429, "rate_limited")
    _assert_quiet(caplog.records, expected=1)


@pytest.mark.django_db
def test_a_lost_rate_limiter_logs_one_warning_line_and_lets_the_request_through(
    matrix: RoleMatrix, settings: object, caplog: pytest.LogCaptureFixture
) -> None:
    developer = matrix.client("developer")
    # A real Redis client against a port where nothing listens: the limiter's store is gone.
    settings.CACHES = {  # type: ignore[attr-defined]
        "default": {"BACKEND": "portal.core.cache.RedisCache", "LOCATION": "redis://127.0.0.1:9/0"}
    }
    caplog.set_level(logging.DEBUG)
    assert developer.get("/api/v1/me").status_code == 200
    _assert_quiet(caplog.records, expected=1)
    assert any("rate limiter unavailable" in record.getMessage() for record in caplog.records)
