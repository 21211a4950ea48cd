"""The OpenAPI document describes the API: every operation answers 2xx with a typed body (never a free-form object),
documents the problems it can answer, declares the query filters its view reads, and describes stored values as
they are (a Backstage username, null where null is returned); real answers validate against it."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest
from drf_spectacular.generators import SchemaGenerator

from portal.core.problems import PROBLEM_CONTENT_TYPE
from tests.conftest import RoleMatrix, assert_problem
from tests.factories import AcceleratorPoolFactory, MembershipFactory, UserFactory


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return SchemaGenerator().get_schema(request=None, public=True)  # type: ignore[no-any-return]


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in ("get", "post", "put", "patch", "delete")
    ]


def _resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def _free_form(document: dict[str, Any], schema: dict[str, Any], seen: frozenset[str] = frozenset()) -> list[str]:
    """Where a schema says no more than 'some object' (or nothing at all): the places a client learns nothing."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return [] if name in seen else _free_form(document, _resolve(document, schema), seen | {name})
    if not schema:
        return ["{}"]
    found = []
    if (
        schema.get("type") == "object"
        and not schema.get("properties")
        and not schema.get("additionalProperties")
        and not any(key in schema for key in ("allOf", "oneOf", "anyOf"))
    ):
        found.append("object")
    if schema.get("additionalProperties") == {}:
        found.append("object of anything")
    for name, child in schema.get("properties", {}).items():
        found += [f"{name}.{where}" for where in _free_form(document, child, seen)]
    if isinstance(schema.get("items"), dict):
        found += [f"[].{where}" for where in _free_form(document, schema["items"], seen)]
    if isinstance(schema.get("additionalProperties"), dict) and schema["additionalProperties"]:
        found += [f"*.{where}" for where in _free_form(document, schema["additionalProperties"], seen)]
    for key in ("allOf", "oneOf", "anyOf"):
        for child in schema.get(key, []):
            found += _free_form(document, child, seen)
    return found


def test_every_operation_answers_2xx_with_a_typed_body(document: dict[str, Any]) -> None:
    operations = _operations(document)
    assert len(operations) >= 60
    untyped = []
    for method, path, operation in operations:
        successes = {code: answer for code, answer in operation["responses"].items() if code.startswith("2")}
        assert successes, f"{method} {path} documents no success"
        for code, answer in successes.items():
            if code == "204":
                assert "content" not in answer
                continue
            for media_type, body in answer.get("content", {}).items():
                if media_type in ("application/x-protobuf", "text/csv"):
                    continue  # not JSON: a binary message or a CSV text
                untyped += [f"{method} {path} {code}: {where}" for where in _free_form(document, body["schema"])]
            assert answer.get("content"), f"{method} {path} {code} has no body"
    assert untyped == []


def test_every_operation_documents_its_problems(document: dict[str, Any]) -> None:
    for method, path, operation in _operations(document):
        responses = operation["responses"]
        expected = {"400", "401", "403", "404", "429"} | (
            {"409", "413", "415"} if method in ("POST", "PUT", "PATCH") else set()
        )
        assert expected <= set(responses), f"{method} {path}: {sorted(expected - set(responses))}"
        for code in expected:
            schema = responses[code]["content"][PROBLEM_CONTENT_TYPE]["schema"]
            assert schema == {"$ref": "#/components/schemas/ProblemOutput"}
    problem = document["components"]["schemas"]["ProblemOutput"]
    assert set(problem["required"]) == {"type", "title", "status", "detail", "code"}
    assert problem["properties"]["errors"]["type"] == "array"


def test_the_query_filters_views_read_are_declared(document: dict[str, Any]) -> None:
    def query(method: str, path: str) -> set[str]:
        operation = document["paths"][path][method]
        return {parameter["name"] for parameter in operation.get("parameters", []) if parameter["in"] == "query"}

    assert {"phase"} <= query("get", "/api/v1/teams/{team}/deployments")
    assert {"current"} <= query("get", "/api/v1/teams/{team}/credentials")
    assert {"status", "search"} <= query("get", "/api/v1/teams")
    assert {"role"} <= query("get", "/api/v1/teams/{team}/members")
    assert {"capability", "hosting", "lifecycle", "provider", "q"} <= query("get", "/api/v1/catalog/models")
    assert {"region"} <= query("get", "/api/v1/clusters")
    assert {"all"} <= query("get", "/api/v1/tokens")
    assert {"action", "target_type", "team", "actor", "since", "until"} <= query("get", "/api/v1/audit-events")
    assert {"from", "to", "group_by", "format"} <= query("get", "/api/v1/teams/{team}/costs")
    assert {"from", "to", "group_by", "format", "team"} <= query("get", "/api/v1/costs")
    phase = next(
        parameter
        for parameter in document["paths"]["/api/v1/teams/{team}/deployments"]["get"]["parameters"]
        if parameter["name"] == "phase"
    )
    assert "Ready" in _resolve(document, phase["schema"])["enum"]


@pytest.mark.parametrize(
    ("url", "field"),
    [
        ("/api/v1/teams/alpha/deployments?phase=Sleeping", "phase"),
        ("/api/v1/teams/alpha/credentials?current=perhaps", "current"),
        ("/api/v1/tokens?all=perhaps", "all"),
        ("/api/v1/teams/alpha/costs?group_by=week", "group_by"),
        ("/api/v1/teams/alpha/costs?from=2026-13-01", "from"),
        ("/api/v1/teams/alpha/costs?from=2026-02-01&to=2026-01-01", "to"),
        ("/api/v1/audit-events?since=2026-01-01T00:00:00", "since"),
        ("/api/v1/catalog/models?lifecycle=immortal", "lifecycle"),
    ],
)
def test_a_filter_value_outside_its_declaration_is_a_field_error(matrix: RoleMatrix, url: str, field: str) -> None:
    problem = assert_problem(matrix.client("platform_admin").get(url), 400, "validation_failed")
    assert [entry["field"] for entry in problem["errors"]] == [field]  # type: ignore[index]


def _json_schema(schema: Any) -> Any:
    """OpenAPI 3.0's `nullable` in JSON Schema terms (what schemathesis does before it validates an answer)."""
    if isinstance(schema, list):
        return [_json_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    converted = {key: _json_schema(value) for key, value in schema.items() if key != "nullable"}
    if schema.get("nullable"):
        if "type" in converted:
            converted["type"] = [converted["type"], "null"]
        else:
            converted = {"anyOf": [converted, {"type": "null"}]}
    return converted


def _validate(document: dict[str, Any], method: str, path: str, response: Any) -> None:
    schema = document["paths"][path][method]["responses"][str(response.status_code)]["content"]["application/json"]
    jsonschema.validate(
        response.json(),
        _json_schema({**schema["schema"], "components": document["components"]}),
        format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
    )


def test_stored_values_are_valid_answers(matrix: RoleMatrix, document: dict[str, Any]) -> None:
    """A user the Backstage sync made (its username is its entity ref, which the username input rule refuses), with
    no e-mail; a pool with its tolerations; a credential never rotated (replaced_by null)."""
    dave = UserFactory(username="user:default/dave", backstage_ref="user:default/dave", email="")
    MembershipFactory(team=matrix.team, user=dave)
    AcceleratorPoolFactory(cluster__name="sandbox")
    platform = matrix.client("platform_admin")
    created = platform.post("/api/v1/teams/alpha/credentials", {"name": "ci"}, format="json")
    _validate(document, "post", "/api/v1/teams/{team}/credentials", created)
    from tests.conftest import client_with_token

    _validate(document, "get", "/api/v1/me", client_with_token(dave).get("/api/v1/me"))
    _validate(document, "get", "/api/v1/teams/{team}/members", platform.get("/api/v1/teams/alpha/members"))
    _validate(document, "get", "/api/v1/clusters", platform.get("/api/v1/clusters"))
    _validate(document, "get", "/api/v1/teams/{team}/credentials", platform.get("/api/v1/teams/alpha/credentials"))
    _validate(document, "get", "/api/v1/teams/{team}/budget", platform.get("/api/v1/teams/alpha/budget"))
    _validate(document, "get", "/api/v1/teams/{team}/costs", platform.get("/api/v1/teams/alpha/costs"))
    _validate(
        document,
        "get",
        "/api/v1/clusters/{cluster}/gateway-bootstrap",
        platform.get("/api/v1/clusters/sandbox/gateway-bootstrap"),
    )
    username = document["components"]["schemas"]["UserOutput"]["properties"]["username"]
    assert "pattern" not in username
