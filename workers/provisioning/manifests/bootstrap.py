"""The gateway's own usage settings, as pure builders (no Django): a GatewayConfig declaring the token cost keys
every route reports, and an EnvoyProxy whose access log emits one JSON record per request with the fields of
the usage event contract (shared/reference/usage-metering.md section 4.2). The API offers them to platform
admins (the URL map hands the gateway API this builder); the gateway reconciler applies them when the cluster
allows it."""

from __future__ import annotations

from typing import Any

from portal.clusters.contracts import ClusterContract
from workers.provisioning.manifests.labels import COMPONENT_KEY, MANAGED_BY, MANAGED_BY_KEY
from workers.provisioning.manifests.upstream import (
    AIGW_API_VERSION,
    CLIENT_ID_HEADER,
    EG_API_VERSION,
    GATEWAY_API_VERSION,
    METADATA_NAMESPACE,
    TOKEN_COSTS,
)

Manifest = dict[str, Any]
GATEWAY_CONFIG_ANNOTATION = "aigateway.envoyproxy.io/gateway-config"
BOOTSTRAP_LABELS = {MANAGED_BY_KEY: MANAGED_BY, COMPONENT_KEY: "gateway-bootstrap"}


def _metadata(key: str) -> str:
    return f"%DYNAMIC_METADATA({METADATA_NAMESPACE}:{key})%"


# The access-log record: usage-metering.md section 4.2, field for field.
ACCESS_LOG_FIELDS: dict[str, str] = {
    "event.type": "ai.gateway.llm.usage.v1",
    "start_time": "%START_TIME%",
    "request_id": "%REQ(X-REQUEST-ID)%",
    "credential_id": f"%REQ({CLIENT_ID_HEADER.upper()})%",
    "route": _metadata("route_name"),
    "backend": _metadata("ai_service_backend_name"),
    "model_requested": "%REQ(X-AI-EG-MODEL)%",
    "model_override": _metadata("model_name_override"),
    "model_response": _metadata("response_model"),
    "input_tokens": _metadata("llm_input_token"),
    "cached_input_tokens": _metadata("llm_cached_input_token"),
    "cache_creation_input_tokens": _metadata("llm_cache_creation_input_token"),
    "output_tokens": _metadata("llm_output_token"),
    "reasoning_tokens": _metadata("llm_reasoning_token"),
    "total_tokens": _metadata("llm_total_token"),
    "status_code": "%RESPONSE_CODE%",
    "response_flags": "%RESPONSE_FLAGS%",
    "upstream_attempts": "%UPSTREAM_REQUEST_ATTEMPT_COUNT%",
    "duration_ms": "%DURATION%",
    # Time to first token, as the access log can see it: Envoy's %RESPONSE_DURATION% is the time from the request's
    # start to the first byte read from the upstream (envoyproxy.io docs, configuration/observability/access_log/
    # usage, "RESPONSE_DURATION"); a streaming model server sends its first bytes with its first token. The AI
    # Gateway measures TTFT exactly only as the metric gen_ai.server.time_to_first_token (usage-metering.md 1.2),
    # which it does not put into dynamic metadata, so no access-log operator carries it.
    "time_to_first_token_ms": "%RESPONSE_DURATION%",
    "upstream_service_time_ms": "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
    "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
}


# Envoy CEL: only LLM traffic (the AI Gateway set the model header) that an upstream answered. A request the
# gateway refused itself is not usage and must leave no trace in it: a failed API-key check (401, whose
# x-portal-client-id could only have come from the client), the route-not-found catch-all (404), a token limit
# or block (429), a malformed body (400): their response code details are not `via_upstream` (Envoy's
# "the response code was set by the upstream", docs: configuration/http/http_conn_man/response_code_details).
# One expression: Envoy Gateway's API comment says `matches` are ORed, its translator ANDs them (accesslog.go).
USAGE_LOG_FILTER = "request.headers['x-ai-eg-model'] != '' && response.code_details == 'via_upstream'"


def gateway_config_name(cluster: ClusterContract) -> str:
    return f"{cluster.gateway_name}-portal-config"[:63]


def envoy_proxy_name(cluster: ClusterContract) -> str:
    return f"{cluster.gateway_name}-portal-proxy"[:63]


def usage_source(cluster: ClusterContract) -> str:
    """The CloudEvents source of this gateway's usage events: cluster and Gateway."""
    return f"aigw://{cluster.name}/{cluster.gateway_namespace}/{cluster.gateway_name}"


def build_gateway_config(cluster: ClusterContract) -> Manifest:
    return {
        "apiVersion": AIGW_API_VERSION,
        "kind": "GatewayConfig",
        "metadata": {
            "name": gateway_config_name(cluster),
            "namespace": cluster.gateway_namespace,
            "labels": dict(BOOTSTRAP_LABELS),
        },
        "spec": {"globalLLMRequestCosts": [{"metadataKey": key, "type": kind} for key, kind in TOKEN_COSTS]},
    }


def build_envoy_proxy(cluster: ClusterContract, *, collector: str = "") -> Manifest:
    """Access log of LLM traffic only (requests that carry a model), to stdout and, when a collector is
    configured ('host:port'), over OTLP with the gateway's usage source as a resource attribute."""
    sinks: list[dict[str, Any]] = [{"type": "File", "file": {"path": "/dev/stdout"}}]
    if collector:
        host, _, port = collector.rpartition(":")
        sinks.append(
            {
                "type": "OpenTelemetry",
                "openTelemetry": {
                    "host": host or collector,
                    "port": int(port) if port.isdigit() else 4317,
                    "resources": {"aigw.source": usage_source(cluster)},
                },
            }
        )
    return {
        "apiVersion": EG_API_VERSION,
        "kind": "EnvoyProxy",
        "metadata": {
            "name": envoy_proxy_name(cluster),
            "namespace": cluster.gateway_namespace,
            "labels": dict(BOOTSTRAP_LABELS),
        },
        "spec": {
            "telemetry": {
                "accessLog": {
                    "settings": [
                        {
                            "matches": [USAGE_LOG_FILTER],
                            "format": {"type": "JSON", "json": dict(ACCESS_LOG_FIELDS)},
                            "sinks": sinks,
                        }
                    ]
                }
            }
        },
    }


def build_bootstrap_objects(cluster: ClusterContract, *, collector: str = "") -> list[Manifest]:
    return [build_gateway_config(cluster), build_envoy_proxy(cluster, collector=collector)]


def gateway_patch(cluster: ClusterContract) -> Manifest:
    """What the cluster's Gateway needs to use them (the platform team owns the Gateway itself)."""
    return {
        "apiVersion": GATEWAY_API_VERSION,
        "kind": "Gateway",
        "metadata": {
            "name": cluster.gateway_name,
            "namespace": cluster.gateway_namespace,
            "annotations": {GATEWAY_CONFIG_ANNOTATION: gateway_config_name(cluster)},
        },
        "spec": {
            "infrastructure": {
                "parametersRef": {
                    "group": "gateway.envoyproxy.io",
                    "kind": "EnvoyProxy",
                    "name": envoy_proxy_name(cluster),
                }
            }
        },
    }


def bootstrap_document(cluster: ClusterContract, *, collector: str = "") -> dict[str, Any]:
    return {
        "cluster": cluster.name,
        "usage_source": usage_source(cluster),
        "manifests": build_bootstrap_objects(cluster, collector=collector),
        "gateway_patch": gateway_patch(cluster),
        "applied_by_worker": cluster.apply_gateway_bootstrap,
    }
