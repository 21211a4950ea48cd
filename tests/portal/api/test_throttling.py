"""Rate limits per principal, counted in Redis."""

from __future__ import annotations

import pytest

from tests.conftest import RoleMatrix, assert_problem


@pytest.mark.django_db
def test_each_principal_has_its_own_budget(matrix: RoleMatrix, settings: object) -> None:
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"principal": "3/minute"}}  # type: ignore[attr-defined]
    developer = matrix.client("developer")
    for _ in range(3):
        assert developer.get("/api/v1/me").status_code == 200
    response = developer.get("/api/v1/me")
    assert_problem(response, 429, "rate_limited")
    assert 1 <= int(response["Retry-After"]) <= 60
    assert matrix.client("viewer").get("/api/v1/me").status_code == 200
