"""Errors from a cluster, classified: what is worth retrying, and what is recorded as a terminal failure."""

from __future__ import annotations

import json

import pytest

from workers.kube.errors import RetryableClusterError, TerminalClusterError, classify


def _status(code: int, message: str, reason: str | None = None) -> str:
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message, "code": code}
    if reason is not None:
        body["reason"] = reason
    return json.dumps(body)


def test_an_apply_with_a_field_the_crd_does_not_declare_is_terminal_and_names_the_field() -> None:
    # What a real API server answers (kubernetes/kubernetes#139253): a 500 with no reason.
    error = classify(
        500,
        _status(
            500,
            "failed to create typed patch object (genai-alpha/chat; serving.kserve.io/v1beta1, Kind=InferenceService): "
            ".spec.predictor.autoScaling: field not declared in schema",
        ),
    )
    assert isinstance(error, TerminalClusterError)
    assert (error.status, error.reason) == (500, "SchemaMismatch")
    assert error.message == (
        "the cluster's InferenceService CustomResourceDefinition (serving.kserve.io/v1beta1) does not declare "
        ".spec.predictor.autoScaling: it is older or newer than the portal expects"
    )


def test_every_undeclared_field_is_named_and_a_core_kind_is_read_too() -> None:
    several = classify(
        500,
        _status(
            500,
            "failed to create typed patch object (genai-gateway/keys; gateway.envoyproxy.io/v1alpha1, "
            "Kind=SecurityPolicy): errors:\n  .spec.apiKeyAuth.sanitize: field not declared in schema\n"
            '  .spec.rules[name="a"].x: field not declared in schema',
        ),
    )
    assert isinstance(several, TerminalClusterError)
    assert '.spec.apiKeyAuth.sanitize, .spec.rules[name="a"].x' in several.message
    # The message reported in kubernetes/kubernetes#122480, for a built-in kind in the core group.
    core = classify(
        500,
        _status(
            500,
            "failed to create typed patch object (general/admin-api; /v1, Kind=Service): "
            ".spec.topologyKeys: field not declared in schema",
        ),
    )
    assert isinstance(core, TerminalClusterError)
    assert core.message == (
        "the cluster's built-in Service schema (v1) does not declare .spec.topologyKeys: "
        "it is older or newer than the portal expects"
    )


def test_a_body_the_schema_cannot_type_for_another_reason_is_terminal_with_the_servers_message() -> None:
    message = (
        "failed to create typed patch object (ns/x; serving.kserve.io/v1beta1, Kind=InferenceService): "
        ".spec.predictor.minReplicas: expected numeric (int or float), got string"
    )
    error = classify(500, _status(500, message))
    assert isinstance(error, TerminalClusterError)
    assert error.message == message


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (500, _status(500, "etcdserver: request timed out", "InternalError")),
        (500, _status(500, "Internal error occurred: failed calling webhook")),
        (503, _status(503, "failed to create typed patch object (a/b; g/v, Kind=K): .x: field not declared in schema")),
        (500, "upstream connect error"),
    ],
    ids=["etcd", "webhook", "503", "not-a-status"],
)
def test_any_other_server_error_stays_retryable(status: int, body: str) -> None:
    assert isinstance(classify(status, body), RetryableClusterError)


def test_client_errors_stay_terminal_with_their_reason() -> None:
    error = classify(422, _status(422, 'InferenceService.serving.kserve.io "x" is invalid', "Invalid"))
    assert isinstance(error, TerminalClusterError)
    assert error.reason == "Invalid"
