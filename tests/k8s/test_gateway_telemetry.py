"""k8s/gateway-telemetry: the collector of each GPU cluster. Its configuration parses and is wired whole
(receiver, persistent queue, retry, exporter), it listens where the gateway bootstrap's EnvoyProxy sends the
access log, it exports to the portal's /otlp/v1/logs with the collector token the README tells how to make,
its batches fit the portal's limits and match the sandbox's shipper, its manifests validate strictly, and
what it would export for a request through the gateway is accepted by the portal's ingestion and charged to
the right team."""

from __future__ import annotations

import gzip
import io
import json
import re
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml
from django.conf import settings
from django.core.management import call_command
from django.urls import reverse
from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from rest_framework.test import APIClient

from portal.clusters.contracts import ClusterContract
from portal.usage import selectors as usage_selectors
from tests.k8s.manifests import K8S, KUBERNETES_VERSIONS, find, load_yaml, one, render, schema_problems
from tests.portal.usage.conftest import UsageWorld, _fresh_process_caches, recent, world  # noqa: F401  (fixtures)
from workers.provisioning.manifests import bootstrap, upstream
from workers.sandbox import gateway_accesslog as sandbox

TELEMETRY = K8S / "gateway-telemetry"
COLLECTOR_CONFIG = TELEMETRY / "collector.yaml"
EXPORTER = "otlp_http/portal"
CLUSTER = ClusterContract(
    cluster_id=1,
    name="prod-eu1",
    region="eu-west-1",
    gateway_namespace="envoy-gateway-system",
    gateway_name="ai-gateway",
    deployment_mode="Standard",
    autoscaler_class="hpa",
    namespace_prefix="team-",
    apply_gateway_bootstrap=True,
)
_ENV_REFERENCE = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}")


def _duration(text: str) -> float:
    """A Go duration of the forms this configuration uses (200ms, 5s, 0s)."""
    match = re.fullmatch(r"(\d+)(ms|s|m)", text)
    assert match, text
    return int(match.group(1)) * {"ms": 0.001, "s": 1.0, "m": 60.0}[match.group(2)]


def _expand(value: str, environment: dict[str, str]) -> str:
    """The collector's ${env:NAME} references, resolved; an unset one is an error here, as it would be there."""
    return _ENV_REFERENCE.sub(lambda match: environment[match.group(1)], value)


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    return load_yaml(COLLECTOR_CONFIG)


@pytest.fixture(scope="module")
def manifests() -> list[dict[str, Any]]:
    return render(TELEMETRY)


def _container(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    collector = one(manifests, "StatefulSet", "genai-portal-usage-collector")
    return collector["spec"]["template"]["spec"]["containers"][0]


def _pod_environment(manifests: list[dict[str, Any]], *, token: str) -> dict[str, str]:
    """The variables the collector container sees: its env (the token from the Secret) and its ConfigMap."""
    container = _container(manifests)
    values: dict[str, str] = {}
    for source in container["envFrom"]:
        config_map = one(manifests, "ConfigMap", source["configMapRef"]["name"])
        values.update(config_map["data"])
    for variable in container["env"]:
        if "value" in variable:
            values[variable["name"]] = variable["value"]
        elif "secretKeyRef" in variable["valueFrom"]:
            assert variable["valueFrom"]["secretKeyRef"] == {"name": "genai-portal-usage-collector", "key": "token"}
            values[variable["name"]] = token
        else:
            values[variable["name"]] = "10.0.0.7"  # status.podIP
    return values


def test_every_component_is_declared_and_used(config: dict[str, Any]) -> None:
    pipeline = config["service"]["pipelines"]["logs/usage"]
    assert pipeline == {"receivers": ["otlp"], "processors": ["memory_limiter"], "exporters": [EXPORTER]}
    for kind in ("receivers", "processors", "exporters"):
        assert set(pipeline[kind]) == set(config[kind]), kind
    assert set(config["service"]["extensions"]) == set(config["extensions"]) == {"health_check", "file_storage/queue"}
    assert "batch" not in config["processors"]  # batching happens after the disk, in the exporter's queue


def test_the_gateway_bootstrap_sends_the_access_log_to_the_collector_service(
    config: dict[str, Any], manifests: list[dict[str, Any]]
) -> None:
    service = one(manifests, "Service", "genai-portal-usage-collector")
    address = (
        f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc:{service['spec']['ports'][0]['port']}"
    )
    envoy_proxy = bootstrap.build_envoy_proxy(CLUSTER, collector=address)
    sink = envoy_proxy["spec"]["telemetry"]["accessLog"]["settings"][0]["sinks"][1]
    assert sink["type"] == "OpenTelemetry"
    assert (sink["openTelemetry"]["host"], sink["openTelemetry"]["port"]) == (
        "genai-portal-usage-collector.genai-portal-system.svc",
        4317,
    )
    assert sink["openTelemetry"]["resources"] == {"aigw.source": "aigw://prod-eu1/envoy-gateway-system/ai-gateway"}
    receiver = config["receivers"]["otlp"]["protocols"]
    assert set(receiver) == {"grpc"}  # Envoy's OpenTelemetry access logger speaks OTLP/gRPC
    assert receiver["grpc"]["endpoint"] == "${env:POD_IP}:4317"
    assert service["spec"]["ports"][0]["targetPort"] == "otlp-grpc"
    assert {"name": "otlp-grpc", "containerPort": 4317, "protocol": "TCP"} in _container(manifests)["ports"]


def test_the_exporter_posts_to_the_portal_with_the_collector_token(
    config: dict[str, Any], manifests: list[dict[str, Any]]
) -> None:
    exporter = config["exporters"][EXPORTER]
    environment = _pod_environment(manifests, token="token-from-the-secret")
    endpoint = urlparse(_expand(exporter["logs_endpoint"], environment))
    assert (endpoint.scheme, endpoint.netloc) == ("https", "genai-portal.example.com")
    assert endpoint.path == reverse("otlp-logs") == "/otlp/v1/logs"
    assert {key: _expand(value, environment) for key, value in exporter["headers"].items()} == {
        "Authorization": "Bearer token-from-the-secret"
    }
    assert (exporter["encoding"], exporter["compression"]) == ("proto", "gzip")  # both accepted by the portal


def test_the_queue_is_persistent_and_retried_until_the_portal_takes_it(
    config: dict[str, Any], manifests: list[dict[str, Any]]
) -> None:
    exporter = config["exporters"][EXPORTER]
    queue = exporter["sending_queue"]
    assert queue["enabled"] is True
    assert queue["storage"] == "file_storage/queue"
    retry = exporter["retry_on_failure"]
    assert retry["enabled"] is True
    assert _duration(retry["max_elapsed_time"]) == 0  # never give up
    assert _duration(retry["initial_interval"]) < _duration(retry["max_interval"])
    storage = config["extensions"]["file_storage/queue"]
    assert storage["fsync"] is True
    mounts = {mount["mountPath"]: mount["name"] for mount in _container(manifests)["volumeMounts"]}
    assert mounts[storage["directory"]] == "queue"
    assert mounts[storage["compaction"]["directory"]] == "queue"
    collector = one(manifests, "StatefulSet", "genai-portal-usage-collector")
    claims = [claim["metadata"]["name"] for claim in collector["spec"]["volumeClaimTemplates"]]
    assert claims == ["queue"]  # each collector's queue on its own persistent volume
    config_volume = next(v for v in collector["spec"]["template"]["spec"]["volumes"] if v["name"] == "config")
    config_map = one(manifests, "ConfigMap", config_volume["configMap"]["name"])
    assert yaml.safe_load(config_map["data"]["collector.yaml"]) == config
    assert _container(manifests)["args"] == ["--config=/etc/otelcol/collector.yaml"]


def test_batches_fit_the_portal_and_match_the_sandbox_shipper(config: dict[str, Any]) -> None:
    exporter = config["exporters"][EXPORTER]
    batch = exporter["sending_queue"]["batch"]
    assert batch["sizer"] == "items"  # log records
    assert batch["max_size"] <= settings.USAGE_MAX_BATCH_EVENTS  # more would be a permanent 413
    assert batch["max_size"] * 3 * 1024 <= settings.USAGE_MAX_BATCH_BYTES  # records of up to 3 KiB fit the body limit
    shipper = sandbox.ShippingSettings()
    assert shipper.batch_size == batch["min_size"]
    assert shipper.batch_size <= batch["max_size"]
    assert shipper.batch_timeout == _duration(batch["flush_timeout"])
    assert shipper.backoff_multiplier == exporter["retry_on_failure"]["multiplier"]
    assert shipper.gzip is (exporter["compression"] == "gzip")


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_the_collector_manifests_validate_strictly(manifests: list[dict[str, Any]], version: str) -> None:
    assert sorted(manifest["kind"] for manifest in manifests) == [
        "ConfigMap",
        "ConfigMap",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "Service",
        "ServiceAccount",
        "StatefulSet",
    ]
    assert [problem for problem in (schema_problems(m, version) for m in manifests) if problem] == []
    policy = one(manifests, "NetworkPolicy", "genai-portal-usage-collector")
    assert policy["spec"]["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 4317}]
    assert find(manifests, "Secret") == []  # the token never sits in the repository


# --------------------------------------------------------------------------- what the portal receives


def _envoy_records(usage: UsageWorld, request_ids: list[str]) -> list[sandbox.OtlpRecord]:
    """The OpenTelemetry access log the gateway's Envoy emits for LLM requests, as the bootstrap configures it
    (the sandbox gateway's model of Envoy Gateway's sink: string attributes, Envoy's resource labels)."""
    settings_ = sandbox.parse_settings(bootstrap.build_envoy_proxy(CLUSTER, collector="collector:4317"))
    (setting,) = settings_
    (sink,) = setting.otel_sinks
    started = recent().timestamp()
    records = []
    for request_id in request_ids:
        context = sandbox.LogContext(
            start_time=started,
            duration_ms=812,
            request_headers={
                ":method": "POST",
                ":path": "/v1/chat/completions",
                "x-request-id": request_id,
                upstream.CLIENT_ID_HEADER: usage.client_id,
                "x-ai-eg-model": usage.served_name,
            },
            response_code=200,
            response_code_details="via_upstream",
            metadata={
                upstream.METADATA_NAMESPACE: {
                    "route_name": "envoy-gateway-system/portal-route",
                    "ai_service_backend_name": "envoy-gateway-system/openai",
                    "response_model": usage.provider_model_id,
                    "llm_input_token": 1200,
                    "llm_cached_input_token": 200,
                    "llm_output_token": 300,
                    "llm_total_token": 1500,
                }
            },
            attempt_count=1,
            environment={"ENVOY_POD_NAMESPACE": "envoy-gateway-system", "ENVOY_POD_NAME": "envoy-ai-gateway-0"},
        )
        assert setting.matched(context)
        resource = (
            ("log_name", sandbox.OTEL_LOG_NAME),
            ("zone_name", ""),
            ("cluster_name", f"{CLUSTER.gateway_namespace}/{CLUSTER.gateway_name}"),
            ("node_name", "envoy-ai-gateway-0"),
            *sink.resource_attributes,
        )
        records.append(
            sandbox.OtlpRecord(resource, int(started * 1e9), tuple(sandbox.otel_attributes(setting, context)))
        )
    return records


def _stored() -> list[tuple[Any, ...]]:
    return [
        (
            row["source"],
            row["state"],
            row["team_id"],
            row["credential_id"],
            row["input_tokens"],
            row["cached_input_tokens"],
            row["output_tokens"],
        )
        for row in usage_selectors.stored_events()
    ]


def _collector_token(source_prefix: str) -> str:
    """The token as k8s/README.md makes it: issue_token, then bind_usage_source with the id it reports."""
    token, report = io.StringIO(), io.StringIO()
    call_command("issue_token", service="usage-collector-prod-eu1", scope=["usage:write"], stdout=token, stderr=report)
    token_id = int(re.fullmatch(r"token id (\d+)\n", report.getvalue()).group(1))  # type: ignore[union-attr]
    call_command("bind_usage_source", token_id, source_prefix, stdout=io.StringIO())
    return token.getvalue().strip()


def _export(
    config: dict[str, Any],
    manifests: list[dict[str, Any]],
    *,
    token: str,
    records: list[sandbox.OtlpRecord],
    encoding: str | None = None,
) -> Any:
    """One export request of the collector, in the encoding, compression and headers its exporter is set to."""
    exporter = config["exporters"][EXPORTER]
    environment = _pod_environment(manifests, token=token)
    document = sandbox.export_request(records)
    if (encoding or exporter["encoding"]) == "proto":
        body = json_format.ParseDict(document, logs_service_pb2.ExportLogsServiceRequest()).SerializeToString()
        content_type = "application/x-protobuf"
    else:  # the sandbox shipper's OTLP/JSON
        body, content_type = json.dumps(document).encode(), "application/json"
    headers = {
        f"HTTP_{key.upper().replace('-', '_')}": _expand(value, environment)
        for key, value in exporter["headers"].items()
    }
    if exporter["compression"] == "gzip":
        body = gzip.compress(body)
        headers["HTTP_CONTENT_ENCODING"] = "gzip"
    path = urlparse(_expand(exporter["logs_endpoint"], environment)).path
    return APIClient().post(path, data=body, content_type=content_type, **headers)


@pytest.mark.django_db
@pytest.mark.parametrize("encoding", ["proto", "json"])
def test_an_export_of_the_gateway_access_log_is_accepted_and_charged_to_the_team(
    config: dict[str, Any],
    manifests: list[dict[str, Any]],
    world: UsageWorld,  # noqa: F811
    encoding: str,
) -> None:
    """proto: what the collector sends; json: the same records as the sandbox gateway's shipper sends them."""
    token = _collector_token(f"aigw://{CLUSTER.name}/")
    records = _envoy_records(world, ["req-1", "req-2"])
    response = _export(config, manifests, token=token, records=records, encoding=encoding)
    assert response.status_code == 200, response.content
    if encoding == "proto":
        answer = logs_service_pb2.ExportLogsServiceResponse.FromString(response.content)
        assert answer.partial_success.rejected_log_records == 0
    else:
        assert response.json() == {}  # OTLP/JSON: full success
    assert _stored() == [
        (bootstrap.usage_source(CLUSTER), "rated", world.team.pk, world.credential_id, 1200, 200, 300),
        (bootstrap.usage_source(CLUSTER), "rated", world.team.pk, world.credential_id, 1200, 200, 300),
    ]


@pytest.mark.django_db
def test_a_token_bound_to_another_cluster_cannot_send_this_clusters_usage(
    config: dict[str, Any],
    manifests: list[dict[str, Any]],
    world: UsageWorld,  # noqa: F811
) -> None:
    token = _collector_token("aigw://prod-us1/")
    response = _export(config, manifests, token=token, records=_envoy_records(world, ["req-1"]))
    assert response.status_code == 200  # OTLP partial success: the records are refused, the export is not retried
    answer = logs_service_pb2.ExportLogsServiceResponse.FromString(response.content)
    assert answer.partial_success.rejected_log_records == 1
    assert "source_not_allowed" in answer.partial_success.error_message
    assert _stored() == []
