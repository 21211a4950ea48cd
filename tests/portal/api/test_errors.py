"""One error shape for every error, including the ones raised outside views."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from portal.api.errors import flatten_validation_errors
from tests.conftest import RoleMatrix, assert_problem


def test_nested_validation_errors_flatten_to_dotted_fields() -> None:
    detail = {
        "gpus": {"nvidia-l4": ["Must be at least 0."]},
        "items": [{}, {"name": ["Required."]}],
        "non_field_errors": ["Bad."],
    }
    assert flatten_validation_errors(detail) == [
        {"field": "gpus.nvidia-l4", "code": "invalid", "message": "Must be at least 0."},
        {"field": "items[1].name", "code": "invalid", "message": "Required."},
        {"field": "", "code": "invalid", "message": "Bad."},
    ]


@pytest.mark.django_db
def test_unknown_url_is_a_problem() -> None:
    assert_problem(APIClient().get("/api/v1/nothing-here"), 404, "not_found")


@pytest.mark.django_db
def test_malformed_json_is_a_problem(matrix: RoleMatrix) -> None:
    client = matrix.client("developer")
    response = client.post("/api/v1/teams", data=b"{not json", content_type="application/json")
    assert_problem(response, 400, "malformed_request")


@pytest.mark.django_db
def test_wrong_media_type_and_method_are_problems(matrix: RoleMatrix) -> None:
    client = matrix.client("developer")
    assert_problem(client.post("/api/v1/teams", data="a=b", content_type="text/plain"), 415, "unsupported_media_type")
    response = client.delete("/api/v1/teams")
    assert_problem(response, 405, "method_not_allowed")
    assert "GET" in response["Allow"]


@pytest.mark.django_db
def test_a_json_array_body_is_a_validation_problem(matrix: RoleMatrix) -> None:
    response = matrix.client("developer").post("/api/v1/teams", data=[1, 2], format="json")
    assert_problem(response, 400, "validation_failed")


@pytest.mark.django_db
def test_nul_in_query_is_refused(matrix: RoleMatrix) -> None:
    assert_problem(matrix.client("developer").get("/api/v1/catalog/models?q=a%00b"), 400, "nul_character")


@pytest.mark.django_db
def test_nul_in_body_is_a_field_error(matrix: RoleMatrix) -> None:
    response = matrix.client("developer").post("/api/v1/teams", {"slug": "ok", "display_name": "a\x00b"}, format="json")
    body = assert_problem(response, 400, "validation_failed")
    assert body["errors"][0]["field"] == "display_name"
