"""OTLP/HTTP logs: the gateway's access log as an OpenTelemetry collector exports it, protobuf and JSON, gzip,
partial success the OTLP way."""

from __future__ import annotations

import gzip
import json
import uuid
from datetime import datetime
from typing import Any

import pytest
from django.db import connection
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.logs.v1 import logs_pb2
from opentelemetry.proto.resource.v1 import resource_pb2

from portal.usage import store
from portal.usage.events import derive_event_id
from portal.usage.models import UsageDaily
from tests.conftest import ROLES, assert_problem
from tests.portal.usage.conftest import SOURCE, UsageWorld, expected_cost, recent

pytestmark = pytest.mark.django_db


def _access_log(world: UsageWorld, *, at: datetime, request_id: str, **overrides: str) -> dict[str, str]:
    """The attributes the EnvoyProxy access-log format of the metering reference (section 4.2) produces."""
    attributes = {
        "event.type": "ai.gateway.llm.usage.v1",
        "start_time": at.isoformat().replace("+00:00", "Z"),
        "request_id": request_id,
        "credential_id": world.client_id,
        "route": "httproute/genai/llm-route/rule/0",
        "backend": "genai/openai",
        "model_requested": world.served_name,
        "model_override": "-",
        "model_response": world.provider_model_id,
        "input_tokens": "1200",
        "cached_input_tokens": "200",
        "cache_creation_input_tokens": "-",
        "output_tokens": "300",
        "reasoning_tokens": "-",
        "total_tokens": "1500",
        "status_code": "200",
        "duration_ms": "812",
    }
    attributes.update(overrides)
    return attributes


def _protobuf(records: list[dict[str, str]], source: str = SOURCE) -> bytes:
    request = logs_service_pb2.ExportLogsServiceRequest(
        resource_logs=[
            logs_pb2.ResourceLogs(
                resource=resource_pb2.Resource(
                    attributes=[common_pb2.KeyValue(key="aigw.source", value=common_pb2.AnyValue(string_value=source))]
                ),
                scope_logs=[
                    logs_pb2.ScopeLogs(
                        log_records=[
                            logs_pb2.LogRecord(
                                time_unix_nano=1,
                                attributes=[
                                    common_pb2.KeyValue(key=key, value=common_pb2.AnyValue(string_value=value))
                                    for key, value in record.items()
                                ],
                            )
                            for record in records
                        ]
                    )
                ],
            )
        ]
    )
    return request.SerializeToString()


def _json(records: list[dict[str, Any]], source: str = SOURCE) -> dict[str, Any]:
    def value(item: Any) -> dict[str, Any]:
        return {"intValue": str(item)} if isinstance(item, int) else {"stringValue": item}

    return {
        "resourceLogs": [
            {
                "resource": {"attributes": [{"key": "aigw.source", "value": {"stringValue": source}}]},
                "scopeLogs": [
                    {
                        "logRecords": [
                            {"attributes": [{"key": key, "value": value(item)} for key, item in record.items()]}
                            for record in records
                        ]
                    }
                ],
            }
        ]
    }


def _stored() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM usage_event")
        return int(cursor.fetchone()[0])


def test_protobuf_gzip_export_is_stored_with_ids_from_the_request_id(world: UsageWorld, rollups) -> None:
    at = recent()
    records = [_access_log(world, at=at, request_id=f"req-{n}") for n in range(3)]
    records.append(_access_log(world, at=at, request_id="req-bad", input_tokens="lots"))
    response = world.collector.post(
        "/otlp/v1/logs",
        data=gzip.compress(_protobuf(records)),
        content_type="application/x-protobuf",
        HTTP_CONTENT_ENCODING="gzip",
    )
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "application/x-protobuf"
    answer = logs_service_pb2.ExportLogsServiceResponse.FromString(response.content)
    assert answer.partial_success.rejected_log_records == 1
    assert "record 3: invalid_number (attributes.input_tokens)" in answer.partial_success.error_message
    rollups()
    row = UsageDaily.objects.get(team_id=world.team.pk)
    assert (row.requests, row.input_tokens, row.cached_input_tokens, row.output_tokens) == (3, 3600, 600, 900)
    assert row.cost == 3 * expected_cost(input_tokens=1200, output_tokens=300, cached=200)
    # Stored under the id derived from the gateway's x-request-id (found again from it, as an auditor would).
    for n in range(3):
        stored = store.stored_event(source=SOURCE, event_id=derive_event_id(SOURCE, f"req-{n}"))
        assert stored is not None
        assert stored["state"] == "rated"
    assert _stored() == 3


def test_replayed_export_is_counted_once_and_all_success_has_no_partial_success(world: UsageWorld) -> None:
    records = [_access_log(world, at=recent(), request_id=str(uuid.uuid4())) for _ in range(5)]
    for _ in range(2):
        response = world.collector.post("/otlp/v1/logs", data=_protobuf(records), content_type="application/x-protobuf")
        answer = logs_service_pb2.ExportLogsServiceResponse.FromString(response.content)
        assert not answer.HasField("partial_success")
    assert _stored() == 5


def test_json_export_with_int_values_and_partial_success(world: UsageWorld) -> None:
    at = recent()
    good = _access_log(world, at=at, request_id="j-1")
    good["input_tokens"] = 50  # type: ignore[assignment]
    unknown_source = _access_log(world, at=at, request_id="j-2")
    body = _json([good, {**unknown_source, "aigw.source": "elsewhere://x"}])
    response = world.collector.post("/otlp/v1/logs", data=json.dumps(body), content_type="application/json")
    assert response.status_code == 200
    assert response.json() == {
        "partialSuccess": {"rejectedLogRecords": "1", "errorMessage": "record 1: source_not_allowed (source)"}
    }
    assert _stored() == 1


def test_malformed_protobuf_is_a_400_and_stores_nothing(world: UsageWorld) -> None:
    response = world.collector.post("/otlp/v1/logs", data=b"\xff\xff\xff", content_type="application/x-protobuf")
    assert_problem(response, 400, "malformed_otlp")
    assert _stored() == 0


def test_other_content_types_are_415(world: UsageWorld) -> None:
    assert_problem(world.collector.post("/otlp/v1/logs", data=b"x", content_type="text/plain"), 415)


@pytest.mark.parametrize("who", ROLES)
def test_only_collectors_export_logs(world: UsageWorld, who: str) -> None:
    records = [_access_log(world, at=recent(), request_id="m-1")]
    response = world.matrix.client(who).post(
        "/otlp/v1/logs", data=_protobuf(records), content_type="application/x-protobuf"
    )
    assert_problem(response, 401 if who == "anonymous" else 403)
    assert _stored() == 0
