"""The sandbox gateway data plane, driven over real HTTP by the objects the portal's own builders render and
server-side apply into the sandbox Store: API-key auth, routing, upstreams, token limits, the access log and its
OTLP shipping to a receiver the portal's ingestion parser accepts."""

from __future__ import annotations

import base64
import dataclasses
import gzip
import http.client
import json
import re
import socket
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from catalog.contracts import HardwareProfile, ModelVersionContract
from portal.clusters.contracts import AcceleratorPoolContract
from portal.deployments.contracts import DeploymentSpec
from portal.gateway.contracts import (
    GatewayKey,
    GatewayPolicySpec,
    ManagedModelRoute,
    ProviderBackendSpec,
    TeamGatewayAccess,
)
from portal.usage.contracts import UsageRecord
from portal.usage.events import decode_body, parse_json, parse_otlp
from tests.workers.conftest import GPU_EU_CLUSTER
from workers.provisioning.manifests.bootstrap import ACCESS_LOG_FIELDS
from workers.provisioning.manifests.deployment import build_deployment_objects, build_team_objects
from workers.provisioning.manifests.gateway import render_gateway_policy
from workers.sandbox.gateway import SandboxGateway, ShippingSettings, predict_usage
from workers.sandbox.gateway_ratelimit import RateLimiter, parse_rules
from workers.sandbox.gateway_upstream import COMPLETIONS, EMBEDDINGS
from workers.sandbox.server import Sandbox

GATEWAY = ("genai-gateway", "ai-gateway")
COLLECTOR = "otel-collector.observability:4317"
CLUSTER = GPU_EU_CLUSTER
ALPHA = GatewayKey(client_id="alpha.a1a1a1a1a1a1", key_id="a1a1a1a1a1a1", key="gpk_a1a1a1a1a1a1_alpha-one")
ALPHA_GPT_ONLY = GatewayKey(
    client_id="alpha.b2b2b2b2b2b2",
    key_id="b2b2b2b2b2b2",
    key="gpk_b2b2b2b2b2b2_alpha-two",
    allowed_model_names=("gpt-4o-mini",),
)
BETA = GatewayKey(client_id="beta.c3c3c3c3c3c3", key_id="c3c3c3c3c3c3", key="gpk_c3c3c3c3c3c3_beta-one")
QWEN = "alpha--chat"  # served names as the portal makes them (portal/deployments/names.py)
LLAMA = "beta--llama"
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
CHAT = "/v1/chat/completions"
HELLO = [{"role": "user", "content": "Say hello to the sandbox"}]


# ---------------------------------------------------------------------------------------------- objects


def policy_spec(**overrides: Any) -> GatewayPolicySpec:
    spec = GatewayPolicySpec(
        policy_id=1,
        generation=1,
        cluster=CLUSTER,
        teams=(
            TeamGatewayAccess(
                team_slug="alpha", keys=(ALPHA, ALPHA_GPT_ONLY), tokens_per_minute=100_000, tokens_per_day=1_000_000
            ),
            TeamGatewayAccess(team_slug="beta", keys=(BETA,), tokens_per_minute=100_000, tokens_per_day=1_000_000),
        ),
        providers=(
            ProviderBackendSpec("openai", "openai", "api.openai.com", 443, "", "", credential="sk-openai-upstream"),
        ),
        managed_routes=(
            ManagedModelRoute(
                model_slug="gpt-4o-mini",
                served_model_name="gpt-4o-mini",
                provider_model_id="gpt-4o-mini-2024-07-18",
                backend_name="openai",
                allowed=(("alpha", None), ("beta", None)),
            ),
        ),
    )
    return dataclasses.replace(spec, **overrides)


def team(slug: str, *keys: GatewayKey, per_minute: int = 100_000, **overrides: Any) -> TeamGatewayAccess:
    return TeamGatewayAccess(
        team_slug=slug, keys=keys, tokens_per_minute=per_minute, tokens_per_day=1_000_000, **overrides
    )


def deployment_spec(team_slug: str, name: str, served: str, **overrides: Any) -> DeploymentSpec:
    model = ModelVersionContract(
        model_slug=served,
        version="v1",
        lifecycle="approved",
        hosting="self_hosted",
        served_model_name=served,
        artifact_uri=overrides.pop("artifact_uri", f"hf://org/{served}"),
        revision="main",
        format="huggingface",
        runtime="kserve-huggingfaceserver",
        hardware=HardwareProfile(gpus_per_replica=1, min_gpu_memory_gb=24, cpu="4", memory="32Gi"),
        runtime_args=(),
        provider="",
        provider_model_id="",
    )
    pool = AcceleratorPoolContract(
        accelerator_type="nvidia-l4",
        gpu_product="NVIDIA-L4",
        node_selector={"nvidia.com/gpu.product": "NVIDIA-L4"},
        tolerations=(),
        gpu_memory_gb=24,
    )
    spec = DeploymentSpec(
        deployment_id=zlib.crc32(f"{team_slug}/{name}".encode()) % 10_000,
        generation=1,
        team_slug=team_slug,
        name=name,
        served_model_name=served,
        min_replicas=1,
        max_replicas=1,
        scale_to_zero=False,
        gpus_per_replica=1,
        runtime_args=(),
        model_cache=False,
        deleting=False,
        model=model,
        cluster=CLUSTER,
        pool=pool,
    )
    return dataclasses.replace(spec, **overrides)


def apply(sandbox: Sandbox, objects: list[dict[str, Any]]) -> None:
    """Server-side apply, as the portal's workers do (field manager genai-portal)."""
    for obj in objects:
        kind = sandbox.store.kind_by_api_version(obj["apiVersion"], obj["kind"])
        assert kind is not None, obj["kind"]
        metadata = obj["metadata"]
        sandbox.store.patch(
            kind,
            metadata.get("namespace"),
            metadata["name"],
            "application/apply-patch+yaml",
            obj,
            manager="genai-portal",
            force=True,
        )


def delete(sandbox: Sandbox, api_version: str, kind_name: str, namespace: str, name: str) -> None:
    kind = sandbox.store.kind_by_api_version(api_version, kind_name)
    assert kind is not None
    sandbox.store.delete(kind, namespace, name)


def apply_policy(sandbox: Sandbox, spec: GatewayPolicySpec, *, collector: str = COLLECTOR) -> None:
    rendered = render_gateway_policy(spec, collector=collector)
    assert rendered.problems == ()
    apply(sandbox, rendered.objects)


def deploy(sandbox: Sandbox, spec: DeploymentSpec) -> None:
    apply(sandbox, build_team_objects(spec, team_gpu_limit=4))
    apply(sandbox, build_deployment_objects(spec))
    sandbox.settle()


class Clock:
    """The gateway's clock, moved by hand: rate-limit windows and START_TIME without sleeping."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def window_start() -> float:
    """A recent time at the start of a UTC day (so minute and day windows both start there), plus 5 s."""
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return today.timestamp() + 5


@pytest.fixture
def world(clean_sandbox: Sandbox) -> Iterator[Sandbox]:
    """The shared sandbox, emptied; its seeded Gateway is put back as it was (the policy patches it)."""
    kind = clean_sandbox.store.kind_by_api_version("gateway.networking.k8s.io/v1", "Gateway")
    assert kind is not None
    seeded = clean_sandbox.store.get(kind, *GATEWAY)
    yield clean_sandbox
    clean_sandbox.store.delete(kind, *GATEWAY)
    original = {key: seeded[key] for key in ("apiVersion", "kind", "spec")}
    original["metadata"] = {"name": GATEWAY[1], "namespace": GATEWAY[0]}
    clean_sandbox.store.create(kind, GATEWAY[0], original, manager="installer")


@pytest.fixture
def clock() -> Clock:
    return Clock(window_start())


@pytest.fixture
def gateway(world: Sandbox, clock: Clock) -> Iterator[SandboxGateway]:
    with SandboxGateway(world.store, gateway=GATEWAY, clock=clock) as running:
        yield running


@dataclasses.dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def text(self) -> str:
        return self.body.decode()


def call(
    gateway: SandboxGateway,
    path: str,
    body: Any = None,
    *,
    key: str | None = ALPHA.key,
    headers: dict[str, str] | None = None,
    raw: bytes | None = None,
) -> Answer:
    host, port = gateway.server.server_address[:2]
    connection = http.client.HTTPConnection(str(host), int(port), timeout=5)
    sent = dict(headers or {})
    if key is not None:
        sent["Authorization"] = f"Bearer {key}"
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    if data is not None:
        sent["Content-Type"] = "application/json"
    connection.request("POST" if data is not None else "GET", path, body=data, headers=sent)
    response = connection.getresponse()
    answer = Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
    connection.close()
    return answer


def chat(gateway: SandboxGateway, model: str, *, key: str | None = ALPHA.key, **extra: Any) -> Answer:
    return call(gateway, CHAT, {"model": model, "messages": extra.pop("messages", HELLO), **extra}, key=key)


# ---------------------------------------------------------------------------------------------- auth


def test_missing_or_unknown_key_is_401_and_never_reaches_upstream(world: Sandbox, gateway: SandboxGateway) -> None:
    apply_policy(world, policy_spec())
    attempts: list[tuple[str | None, dict[str, str]]] = [
        (None, {}),
        ("gpk_not-a-key", {}),
        ("", {}),  # "Bearer " and nothing: an empty key falls through to the next source
        (None, {"x-api-key": "gpk_wrong"}),
    ]
    for key, headers in attempts:
        answer = call(gateway, CHAT, {"model": "gpt-4o-mini", "messages": HELLO}, key=key, headers=headers)
        assert (answer.status, answer.text(), answer.headers["content-type"]) == (
            401,
            "Client authentication failed.",
            "text/plain",
        )
    assert gateway.upstream_calls() == []
    # The usage log's filter keeps refused requests out of metering: no x-ai-eg-model (the AI Gateway sets it after
    # authentication), and only responses `via_upstream`.
    assert gateway.access_log() == []
    assert gateway.stats().requests_by_status == {401: 4}


def test_second_key_source_and_bearer_prefix_are_read_like_envoy(world: Sandbox, gateway: SandboxGateway) -> None:
    apply_policy(world, policy_spec())
    by_header = call(
        gateway, CHAT, {"model": "gpt-4o-mini", "messages": HELLO}, key=None, headers={"x-api-key": ALPHA.key}
    )
    raw_authorization = call(
        gateway, CHAT, {"model": "gpt-4o-mini", "messages": HELLO}, key=None, headers={"Authorization": ALPHA.key}
    )
    assert (by_header.status, raw_authorization.status) == (200, 200)
    assert [record["credential_id"] for record in gateway.access_log()] == [ALPHA.client_id, ALPHA.client_id]


def test_client_sent_client_id_is_overwritten_and_the_key_is_not_forwarded(
    world: Sandbox, gateway: SandboxGateway
) -> None:
    apply_policy(world, policy_spec())
    deploy(world, deployment_spec("alpha", "chat", QWEN))
    forged = {"x-portal-client-id": BETA.client_id, "x-api-key": "stray"}
    assert call(gateway, CHAT, {"model": QWEN, "messages": HELLO}, headers=forged).status == 200
    # Without the ClientTrafficPolicy's early removal, apiKeyAuth's setCopy still overwrites the forged value.
    delete(
        world, "gateway.envoyproxy.io/v1alpha1", "ClientTrafficPolicy", "genai-gateway", "genai-portal-client-headers"
    )
    assert call(gateway, CHAT, {"model": QWEN, "messages": HELLO}, headers=forged).status == 200
    for upstream in gateway.upstream_calls():
        assert upstream.headers["x-portal-client-id"] == ALPHA.client_id
        # sanitize: true removes every key source before the request leaves the gateway.
        assert "authorization" not in upstream.headers
        assert "x-api-key" not in upstream.headers
    assert [record["credential_id"] for record in gateway.access_log()] == [ALPHA.client_id, ALPHA.client_id]


def test_client_traffic_policy_strips_a_forged_client_id_before_routing(
    world: Sandbox, gateway: SandboxGateway
) -> None:
    apply_policy(world, policy_spec())
    deploy(world, deployment_spec("alpha", "chat", QWEN))
    delete(world, "gateway.envoyproxy.io/v1alpha1", "SecurityPolicy", "genai-gateway", "genai-portal-api-keys")
    # Without API-key auth nothing sets the header; the early removal means a forged one cannot match the route.
    answer = call(
        gateway, CHAT, {"model": QWEN, "messages": HELLO}, key=None, headers={"x-portal-client-id": ALPHA.client_id}
    )
    assert answer.status == 404
    assert gateway.upstream_calls() == []
    assert gateway.access_log() == []  # the route-not-found answer is the gateway's own: no usage record


def test_a_key_removed_from_its_secret_is_refused_on_the_next_request(world: Sandbox, gateway: SandboxGateway) -> None:
    apply_policy(world, policy_spec())
    assert chat(gateway, "gpt-4o-mini").status == 200
    apply_policy(world, policy_spec(teams=(team("alpha", ALPHA_GPT_ONLY), team("beta", BETA))))
    secret = world.store.get(world.store.kinds[("", "v1", "secrets")], "genai-gateway", "genai-portal-keys-alpha")
    assert set(secret["data"]) == {ALPHA_GPT_ONLY.client_id}
    assert chat(gateway, "gpt-4o-mini").status == 401
    assert chat(gateway, "gpt-4o-mini", key=ALPHA_GPT_ONLY.key).status == 200


def test_one_key_under_two_client_ids_invalidates_the_whole_policy(world: Sandbox, gateway: SandboxGateway) -> None:
    twin = GatewayKey(client_id="beta.d4d4d4d4d4d4", key_id="d4d4d4d4d4d4", key=ALPHA.key)
    apply_policy(world, policy_spec(teams=(team("alpha", ALPHA), team("beta", BETA, twin))))
    for key in (ALPHA.key, BETA.key, None):
        answer = chat(gateway, "gpt-4o-mini", key=key)
        assert (answer.status, answer.body) == (500, b"")
    assert chat(gateway, "no-such-model").status == 500  # the catch-all route is a 500 too
    # EG drops the broken apiKeyAuth and turns the routes into 500s; the AI Gateway's /v1/models answer comes
    # from its ext_proc before the router, so it is served, without authentication.
    assert call(gateway, "/v1/models", key=None).status == 200
    assert gateway.upstream_calls() == []


# ---------------------------------------------------------------------------------------------- routing


def test_models_are_routed_by_model_and_by_the_client_id_pattern(world: Sandbox, gateway: SandboxGateway) -> None:
    apply_policy(world, policy_spec())
    deploy(world, deployment_spec("alpha", "chat", QWEN))
    deploy(world, deployment_spec("beta", "llama", LLAMA))
    assert chat(gateway, QWEN).status == 200
    assert chat(gateway, LLAMA, key=BETA.key).status == 200
    assert chat(gateway, "gpt-4o-mini", key=BETA.key).status == 200
    hosts = [(c.host, c.port, c.path, c.body["model"]) for c in gateway.upstream_calls()]
    assert hosts == [
        ("chat-predictor.genai-alpha.svc.cluster.local", 80, "/openai/v1/chat/completions", QWEN),
        ("llama-predictor.genai-beta.svc.cluster.local", 80, "/openai/v1/chat/completions", LLAMA),
        ("api.openai.com", 443, "/v1/chat/completions", "gpt-4o-mini-2024-07-18"),
    ]
    # The other team's model: the rule's client-id RegularExpression does not match, so the catch-all answers.
    refused = chat(gateway, LLAMA)
    assert (refused.status, refused.text()) == (
        404,
        "No matching route found. It is likely because the model specified in your request is not configured "
        "in the Gateway.",
    )
    assert len(gateway.upstream_calls()) == 3


def test_a_key_outside_the_route_allow_list_gets_no_route(world: Sandbox, gateway: SandboxGateway) -> None:
    apply_policy(world, policy_spec())
    deploy(world, deployment_spec("alpha", "chat", QWEN, allowed_key_ids=(ALPHA.key_id,)))
    assert chat(gateway, QWEN).status == 200
    assert chat(gateway, QWEN, key=ALPHA_GPT_ONLY.key).status == 404


def test_unknown_or_missing_model_is_404_route_not_found(world: Sandbox, gateway: SandboxGateway) -> None:
    apply_policy(world, policy_spec())
    unknown = chat(gateway, "no-such-model")
    missing = call(gateway, CHAT, {"messages": HELLO})
    for answer in (unknown, missing):
        assert answer.status == 404
        assert answer.text().startswith("No matching route found.")
        assert answer.headers["content-type"] == "text/plain"
    assert gateway.upstream_calls() == []
    assert call(gateway, "/v1/responses", {"model": "gpt-4o-mini"}).text() == "unsupported path: /v1/responses"


def test_malformed_body_is_400_in_the_ai_gateway_error_shape(world: Sandbox, gateway: SandboxGateway) -> None:
    apply_policy(world, policy_spec())
    for raw, path in ((b"{not json", CHAT), (b'{"model": 5}', CHAT), (b"[1, 2]", "/v1/embeddings")):
        answer = call(gateway, path, raw=raw)
        assert answer.status == 400
        assert answer.headers["content-type"] == "application/json"
        error = answer.json()
        assert (error["type"], error["error"]["type"], error["error"]["code"]) == ("error", "BadRequest", "400")
        assert error["error"]["message"].startswith(f"malformed request: failed to parse JSON for {path}: ")
    assert gateway.upstream_calls() == []


def test_models_listing_is_every_exact_model_match_on_the_gateway(world: Sandbox, gateway: SandboxGateway) -> None:
    apply_policy(world, policy_spec())
    deploy(world, deployment_spec("alpha", "chat", QWEN))
    deploy(world, deployment_spec("beta", "llama", LLAMA))
    answer = call(gateway, "/v1/models")
    assert answer.status == 200
    listing = answer.json()
    # The AI Gateway lists what the routes declare, whoever asks (beta's model is listed for alpha's key too).
    assert listing["object"] == "list"
    assert [(m["id"], m["object"], m["owned_by"]) for m in listing["data"]] == [
        (QWEN, "model", "alpha"),
        (LLAMA, "model", "beta"),
        ("gpt-4o-mini", "model", "Envoy AI Gateway"),
    ]
    assert all(isinstance(m["created"], int) and m["created"] > 0 for m in listing["data"])
    assert call(gateway, "/v1/models", key=None).status == 401


# ---------------------------------------------------------------------------------------------- upstreams


def test_an_inference_service_that_is_not_ready_or_gone_is_503_no_healthy_upstream(
    world: Sandbox, gateway: SandboxGateway
) -> None:
    apply_policy(world, policy_spec())
    deploy(world, deployment_spec("alpha", "chat", QWEN, artifact_uri="hf://org/fail-load-qwen"))
    answer = chat(gateway, QWEN)
    assert (answer.status, answer.text()) == (503, "no healthy upstream")
    assert gateway.access_log() == []  # no upstream answered (flag UH): no usage record
    deploy(world, deployment_spec("alpha", "chat", QWEN))
    assert chat(gateway, QWEN).status == 200
    delete(world, "serving.kserve.io/v1beta1", "InferenceService", "genai-alpha", "chat")
    assert chat(gateway, QWEN).status == 503
    assert len(gateway.upstream_calls()) == 1


def test_the_provider_gets_the_backend_security_policy_credential(world: Sandbox, gateway: SandboxGateway) -> None:
    apply_policy(world, policy_spec())
    answer = chat(gateway, "gpt-4o-mini")
    assert answer.status == 200
    assert answer.json()["model"] == "gpt-4o-mini-2024-07-18"
    upstream = gateway.upstream_calls()[-1]
    assert upstream.headers["authorization"] == "Bearer sk-openai-upstream"
    delete(
        world,
        "aigateway.envoyproxy.io/v1beta1",
        "BackendSecurityPolicy",
        "genai-gateway",
        "genai-portal-provider-openai",
    )
    refused = chat(gateway, "gpt-4o-mini")
    assert refused.status == 401
    assert refused.json()["error"]["type"] == "invalid_request_error"
    assert "authorization" not in gateway.upstream_calls()[-1].headers


def test_a_provider_whose_credential_secret_is_missing_fails_in_the_gateway(
    world: Sandbox, gateway: SandboxGateway
) -> None:
    no_credential = ProviderBackendSpec("openai", "openai", "api.openai.com", 443, "", "", credential="")
    apply_policy(world, policy_spec(providers=(no_credential,)))
    answer = chat(gateway, "gpt-4o-mini")
    assert (answer.status, answer.body) == (500, b"")
    assert gateway.upstream_calls() == []


def test_streamed_chat_ends_with_a_usage_chunk_the_gateway_asked_for(world: Sandbox, gateway: SandboxGateway) -> None:
    apply_policy(world, policy_spec())
    deploy(world, deployment_spec("alpha", "chat", QWEN))
    answer = chat(gateway, QWEN, stream=True, max_tokens=9)
    assert answer.status == 200
    assert answer.headers["content-type"] == "text/event-stream"
    events = [line[6:] for line in answer.text().splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    final = json.loads(events[-2])
    expected = predict_usage({"messages": HELLO, "max_tokens": 9})
    assert final["choices"] == []
    assert final["usage"]["prompt_tokens"] == expected["input_tokens"] == 9
    assert final["usage"]["completion_tokens"] == 9
    text = "".join(json.loads(e)["choices"][0]["delta"].get("content", "") for e in events[:-2])
    assert len(text.split()) == 9
    # The client did not ask for usage: the AI Gateway forced stream_options.include_usage upstream.
    assert gateway.upstream_calls()[-1].body["stream_options"] == {"include_usage": True}
    record = gateway.access_log(1)[0]
    assert (record["input_tokens"], record["output_tokens"], record["total_tokens"]) == (9, 9, 18)


def test_a_repeated_conversation_prefix_is_reported_as_cached_input(world: Sandbox, gateway: SandboxGateway) -> None:
    apply_policy(world, policy_spec())
    deploy(world, deployment_spec("alpha", "chat", QWEN))
    first = {"model": QWEN, "messages": [{"role": "system", "content": "You are terse"}, *HELLO]}
    second = {
        "model": QWEN,
        "messages": [
            *first["messages"],
            {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "again"},
        ],
    }
    assert call(gateway, CHAT, first).json()["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    usage = call(gateway, CHAT, second).json()["usage"]
    expected = predict_usage(second, history=[first])
    assert usage["prompt_tokens_details"]["cached_tokens"] == expected["cached_input_tokens"] == 7 + 9
    assert gateway.access_log(1)[0]["cached_input_tokens"] == 16


def test_completions_and_embeddings_report_their_usage(world: Sandbox, gateway: SandboxGateway) -> None:
    apply_policy(world, policy_spec())
    deploy(world, deployment_spec("alpha", "chat", QWEN))
    completion = call(gateway, "/v1/completions", {"model": QWEN, "prompt": "one two three", "max_tokens": 2})
    embedding = call(gateway, "/v1/embeddings", {"model": QWEN, "input": ["one two", "three"]})
    assert completion.json()["usage"]["total_tokens"] == 5
    assert completion.json()["choices"][0]["text"] == "lorem ipsum"
    assert embedding.json()["usage"] == {"prompt_tokens": 3, "total_tokens": 3}
    assert len(embedding.json()["data"]) == 2
    assert predict_usage({"input": ["one two", "three"]}, operation=EMBEDDINGS)["output_tokens"] == 0
    assert predict_usage({"prompt": "one two three", "max_tokens": 2}, operation=COMPLETIONS)["total_tokens"] == 5
    records = gateway.access_log()
    assert [(r["path"], r["input_tokens"], r["output_tokens"]) for r in records] == [
        ("/v1/completions", 3, 2),
        ("/v1/embeddings", 3, 0),
    ]


# ---------------------------------------------------------------------------------------------- token limits


def test_the_request_that_crosses_the_limit_completes_and_the_next_gets_429(
    world: Sandbox, gateway: SandboxGateway, clock: Clock
) -> None:
    apply_policy(world, policy_spec(teams=(team("alpha", ALPHA, per_minute=20), team("beta", BETA))))
    crossing = chat(gateway, "gpt-4o-mini", max_tokens=16)  # 9 + 16 tokens: over the 20 allowed, but admitted
    assert crossing.status == 200
    refused = chat(gateway, "gpt-4o-mini", max_tokens=1)
    assert (refused.status, refused.body) == (429, b"")
    assert "x-envoy-ratelimited" not in refused.headers  # EG disables it unless enableEnvoyHeaders
    assert chat(gateway, "gpt-4o-mini", key=BETA.key).status == 200  # another team's bucket
    # the portal's usage log keeps the gateway's own refusal out (response code details are not via_upstream)
    assert [record["status_code"] for record in gateway.access_log()] == [200, 200]
    clock.advance(60)  # the next fixed minute window
    assert chat(gateway, "gpt-4o-mini").status == 200
    assert len(gateway.upstream_calls()) == 3


def test_a_bucket_exactly_at_its_limit_still_admits_check_only_requests(
    world: Sandbox, gateway: SandboxGateway
) -> None:
    # envoyproxy/ratelimit refuses when the count after adding the (zero) request cost is greater than the limit.
    apply_policy(world, policy_spec(teams=(team("alpha", ALPHA, per_minute=13), team("beta", BETA))))
    assert chat(gateway, "gpt-4o-mini", max_tokens=4).status == 200  # 9 + 4 = 13 = the limit
    assert chat(gateway, "gpt-4o-mini", max_tokens=4).status == 200
    assert chat(gateway, "gpt-4o-mini", max_tokens=4).status == 429


def test_the_team_bucket_is_shared_across_routes(world: Sandbox, gateway: SandboxGateway) -> None:
    apply_policy(world, policy_spec(teams=(team("alpha", ALPHA, per_minute=30), team("beta", BETA))))
    deploy(world, deployment_spec("alpha", "chat", QWEN))
    assert chat(gateway, QWEN, max_tokens=25).status == 200  # 34 tokens on the deployment's route
    assert chat(gateway, "gpt-4o-mini", max_tokens=1).status == 429  # refused on the managed route too


def test_requests_zero_blocks_a_suspended_team_and_a_model_a_key_may_not_call(
    world: Sandbox, gateway: SandboxGateway
) -> None:
    suspended = team("beta", BETA, blocked_reason="suspended")
    apply_policy(world, policy_spec(teams=(team("alpha", ALPHA, ALPHA_GPT_ONLY), suspended)))
    deploy(world, deployment_spec("alpha", "chat", QWEN))
    assert chat(gateway, "gpt-4o-mini", key=BETA.key).status == 429
    assert chat(gateway, "gpt-4o-mini", key=BETA.key).status == 429
    # The route lets every alpha key in; the invert rule on x-ai-eg-model blocks the key limited to gpt-4o-mini.
    assert chat(gateway, QWEN, key=ALPHA_GPT_ONLY.key).status == 429
    assert chat(gateway, "gpt-4o-mini", key=ALPHA_GPT_ONLY.key).status == 200
    assert chat(gateway, QWEN).status == 200
    assert [c.body["model"] for c in gateway.upstream_calls()] == ["gpt-4o-mini-2024-07-18", QWEN]


def test_limiter_windows_distinct_buckets_and_shadow_mode() -> None:
    """The counting rules the HTTP tests do not reach: epoch-aligned 30-day months, one bucket per Distinct value,
    shadow mode never refusing, a metadata cost that is absent charging nothing."""
    policy = {
        "metadata": {"namespace": "genai-gateway", "name": "limits"},
        "spec": {
            "rateLimit": {
                "global": {
                    "rules": [
                        {
                            "clientSelectors": [{"headers": [{"name": "x-team", "type": "Distinct"}]}],
                            "limit": {"requests": 2, "unit": "Month"},
                        },
                        {
                            "clientSelectors": [{"headers": [{"name": "x-team", "value": "shadow"}]}],
                            "limit": {"requests": 0, "unit": "Second"},
                            "shadowMode": True,
                        },
                        {
                            "clientSelectors": [{"headers": [{"name": "x-team", "value": "metered"}]}],
                            "limit": {"requests": 5, "unit": "Hour"},
                            "cost": {
                                "request": {"from": "Number", "number": 0},
                                "response": {"from": "Metadata", "metadata": {"namespace": "ns", "key": "tokens"}},
                            },
                        },
                    ]
                }
            }
        },
    }
    rules = parse_rules(policy)
    limiter = RateLimiter()
    month = 30 * 86400
    start = 1_790_000_000 - 1_790_000_000 % month  # envoyproxy/ratelimit: windows start at multiples of the unit
    a, b = {"x-team": "a"}, {"x-team": "b"}
    assert [limiter.check(rules[:1], a, "route", {}, start + i) for i in range(3)] == [True, True, False]
    assert limiter.check(rules[:1], b, "route", {}, start + 3)  # another value, another bucket
    assert limiter.check(rules[:1], a, "route", {}, start + month)  # the next 30-day window
    assert limiter.check(rules, {"x-team": "shadow"}, "route", {}, start)
    metered = {"x-team": "metered"}
    limiter.charge(rules, metered, "route", {}, start)  # no metadata: nothing charged
    assert limiter.count(rules[2], metered, "route", start) == 0
    limiter.charge(rules, metered, "route", {"ns": {"tokens": 6}}, start)
    assert limiter.count(rules[2], metered, "route", start) == 6
    assert not limiter.check(rules, metered, "route", {}, start)


# ---------------------------------------------------------------------------------------------- access log


def test_the_usage_record_has_exactly_the_portal_fields(world: Sandbox, world_clock_gateway: SandboxGateway) -> None:
    gateway = world_clock_gateway
    apply_policy(world, policy_spec())
    deploy(world, deployment_spec("alpha", "chat", QWEN))
    answer = call(gateway, CHAT, {"model": QWEN, "messages": HELLO, "max_tokens": 5}, headers={"x-request-id": "mine"})
    assert answer.status == 200
    [record] = gateway.access_log()
    assert UUID.match(record["request_id"])  # generated by the gateway, the client's ignored
    assert record == {
        "event.type": "ai.gateway.llm.usage.v1",
        "start_time": "2026-09-21T18:13:20.250Z",
        "request_id": record["request_id"],
        "credential_id": ALPHA.client_id,
        "route": "genai-gateway/alpha--chat",
        "backend": "genai-gateway/alpha--chat",
        "model_requested": QWEN,
        "model_override": QWEN,
        "model_response": QWEN,
        "input_tokens": 9,
        "cached_input_tokens": 0,
        "cache_creation_input_tokens": 0,
        "output_tokens": 5,
        "reasoning_tokens": 0,
        "total_tokens": 14,
        "status_code": 200,
        "response_flags": "-",
        "upstream_attempts": 1,
        "duration_ms": 0,
        "time_to_first_token_ms": 0,
        "upstream_service_time_ms": None,
        "path": CHAT,
    }


@pytest.fixture
def world_clock_gateway(world: Sandbox) -> Iterator[SandboxGateway]:
    with SandboxGateway(world.store, gateway=GATEWAY, clock=Clock(1_790_014_400.25)) as running:
        yield running


def test_route_costs_win_over_global_costs_and_cel_costs_are_evaluated(world: Sandbox, gateway: SandboxGateway) -> None:
    apply_policy(world, policy_spec())
    spec = deployment_spec("alpha", "chat", QWEN)
    deploy(world, spec)
    route = next(o for o in build_deployment_objects(spec) if o["kind"] == "AIGatewayRoute")
    route["spec"]["llmRequestCosts"] = [
        {"metadataKey": "llm_total_token", "type": "CEL", "cel": "input_tokens + output_tokens * 3u"},
    ]
    apply(world, [route])
    assert chat(gateway, QWEN, max_tokens=2).status == 200
    record = gateway.access_log(1)[0]
    # Only llm_total_token is the route's; every other key still comes from the GatewayConfig.
    assert (record["input_tokens"], record["output_tokens"], record["total_tokens"]) == (9, 2, 15)


# ---------------------------------------------------------------------------------------------- shipping


class Receiver:
    """A tiny OTLP/HTTP logs endpoint: answers what `replies` says (default 200) and keeps every export."""

    def __init__(self) -> None:
        self.exports: list[dict[str, Any]] = []
        self.bodies: list[bytes] = []
        self.headers: list[dict[str, str]] = []
        self.replies: list[tuple[int, dict[str, str]]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.lock:
                    status, headers = receiver.replies.pop(0) if receiver.replies else (200, {})
                    receiver.headers.append({k.lower(): v for k, v in self.headers.items()})
                    if status == 200:
                        receiver.bodies.append(body)
                        raw = gzip.decompress(body) if self.headers.get("Content-Encoding") == "gzip" else body
                        receiver.exports.append(json.loads(raw))
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/otlp/v1/logs"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def records(self) -> list[dict[str, Any]]:
        with self.lock:
            return [
                record
                for export in self.exports
                for resource in export["resourceLogs"]
                for scope in resource["scopeLogs"]
                for record in scope["logRecords"]
            ]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    yield running
    running.close()


def shipping_gateway(world: Sandbox, receiver: Receiver, **settings: Any) -> SandboxGateway:
    return SandboxGateway(
        world.store,
        gateway=GATEWAY,
        usage_endpoint=receiver.url,
        usage_token="collector-token",
        shipping=ShippingSettings(**{"batch_timeout": 0.01, **settings}),
    )


def test_records_are_shipped_as_otlp_the_portal_accepts_after_a_503(world: Sandbox, receiver: Receiver) -> None:
    apply_policy(world, policy_spec())
    delays: list[float] = []
    receiver.replies = [(503, {"Retry-After": "2"})]
    with shipping_gateway(world, receiver, sleep=delays.append) as gateway:
        assert chat(gateway, "gpt-4o-mini", max_tokens=3).status == 200
        assert chat(gateway, "gpt-4o-mini", key=BETA.key, max_tokens=4).status == 200
        assert gateway.flush(3.0)
        stats = gateway.stats()
    assert delays == [2.0]  # Retry-After honoured
    assert (stats.otlp_retries, stats.otlp_shipped, stats.otlp_dropped) == (1, 2, 0)
    assert receiver.headers[-1]["authorization"] == "Bearer collector-token"
    assert receiver.headers[-1]["content-encoding"] == "gzip"
    resource = {
        a["key"]: a["value"]["stringValue"] for a in receiver.exports[0]["resourceLogs"][0]["resource"]["attributes"]
    }
    assert resource == {
        "log_name": "otel_envoy_accesslog",
        "zone_name": "",
        "cluster_name": "genai-gateway/ai-gateway",
        "node_name": gateway.pod_name,
        "aigw.source": "aigw://gpu-eu/genai-gateway/ai-gateway",
    }
    first = {a["key"]: a["value"]["stringValue"] for a in receiver.records()[0]["attributes"]}
    assert (first["total_tokens"], first["upstream_service_time_ms"], first["k8s.pod.name"]) == (
        "12",
        "-",
        gateway.pod_name,
    )
    keys = [a["key"] for a in receiver.records()[0]["attributes"]]
    assert keys == ["k8s.namespace.name", "k8s.pod.name", *sorted(ACCESS_LOG_FIELDS)]
    # What the portal's /otlp/v1/logs view does with each body: gunzip, JSON, then parse the records.
    parsed = [
        item
        for raw in receiver.bodies
        for item in parse_otlp(
            parse_json(decode_body(raw, content_encoding="gzip", max_bytes=5_000_000)),
            now=datetime.now(UTC),
            max_age=timedelta(days=35),
            max_skew=timedelta(minutes=5),
            max_events=1000,
        )
    ]
    assert all(isinstance(item, UsageRecord) for item in parsed), parsed
    usage = [
        (r.client_id, r.input_tokens, r.output_tokens, r.status_code, r.source)
        for r in parsed
        if isinstance(r, UsageRecord)
    ]
    assert usage == [
        (ALPHA.client_id, 9, 3, 200, "aigw://gpu-eu/genai-gateway/ai-gateway"),
        (BETA.client_id, 9, 4, 200, "aigw://gpu-eu/genai-gateway/ai-gateway"),
    ]


def test_no_opentelemetry_sink_means_nothing_is_shipped(world: Sandbox, receiver: Receiver) -> None:
    apply_policy(world, policy_spec(), collector="")
    with shipping_gateway(world, receiver) as gateway:
        assert chat(gateway, "gpt-4o-mini").status == 200
        assert gateway.flush(1.0)
        assert gateway.stats().otlp_queued == 0
        assert len(gateway.access_log()) == 1  # the File sink still logs
    assert receiver.exports == []


def test_a_full_queue_drops_the_oldest_records(world: Sandbox, receiver: Receiver) -> None:
    apply_policy(world, policy_spec())
    release = threading.Event()
    receiver.replies = [(503, {})]
    with shipping_gateway(world, receiver, batch_size=1, queue_size=3, sleep=lambda _: release.wait(5)) as gateway:
        assert chat(gateway, "gpt-4o-mini", max_tokens=1).status == 200
        wait_for(lambda: len(receiver.headers) == 1)  # the first record is in flight, its export backing off
        for max_tokens in (2, 3, 4, 5, 6):
            assert chat(gateway, "gpt-4o-mini", max_tokens=max_tokens).status == 200
        release.set()
        assert gateway.flush(3.0)
        stats = gateway.stats()
    outputs = [
        {a["key"]: a["value"]["stringValue"] for a in record["attributes"]}["output_tokens"]
        for record in receiver.records()
    ]
    assert outputs == ["1", "4", "5", "6"]
    assert (stats.otlp_queued, stats.otlp_shipped, stats.otlp_dropped, stats.otlp_retries) == (6, 4, 2, 1)


def test_connection_errors_are_retried_with_back_off(world: Sandbox) -> None:
    apply_policy(world, policy_spec())
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    delays: list[float] = []
    settings = ShippingSettings(
        batch_timeout=0.01, initial_backoff=0.1, backoff_multiplier=2.0, max_elapsed=0.5, sleep=delays.append
    )
    with SandboxGateway(
        world.store, gateway=GATEWAY, usage_endpoint=f"http://127.0.0.1:{closed_port}/otlp/v1/logs", shipping=settings
    ) as gateway:
        assert chat(gateway, "gpt-4o-mini").status == 200
        assert gateway.flush(3.0)
        stats = gateway.stats()
    assert delays[:3] == [0.1, 0.2, 0.4]
    assert (stats.otlp_shipped, stats.otlp_dropped) == (0, 1)


def wait_for(condition: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.005)


def test_secret_values_are_base64_as_the_builder_writes_them(world: Sandbox) -> None:
    # Guards the fixture itself: the gateway reads the key the portal wrote, not a plaintext copy.
    apply_policy(world, policy_spec())
    secret = world.store.get(world.store.kinds[("", "v1", "secrets")], "genai-gateway", "genai-portal-keys-alpha")
    assert base64.b64decode(secret["data"][ALPHA.client_id]).decode() == ALPHA.key
