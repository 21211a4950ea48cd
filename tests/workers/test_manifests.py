"""Every builder's output validates against the upstream CRD schemas in ../shared/crds, CEL rules included,
for each option the builders have (mode, autoscaler, scale to zero, cache, overrides, long names)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from catalog.contracts import HardwareProfile, ModelVersionContract
from portal.clusters.contracts import AcceleratorPoolContract, ClusterContract
from portal.deployments.contracts import DeploymentSpec
from workers.provisioning.manifests.deployment import (
    build_deployment_objects,
    build_gpu_quota,
    build_inference_service,
    build_namespace,
    build_route,
    gateway_object_name,
)
from workers.sandbox.server import PORTAL_CRD_KINDS
from workers.sandbox.validation import CrdRegistry


def make_spec(**overrides: Any) -> DeploymentSpec:
    cluster_overrides = overrides.pop("cluster", {})
    model_overrides = overrides.pop("model", {})
    model = ModelVersionContract(
        model_slug="qwen2-5-7b-instruct",
        version="2024-09-19",
        lifecycle="approved",
        hosting="self_hosted",
        served_model_name="qwen2.5-7b-instruct",
        artifact_uri="hf://Qwen/Qwen2.5-7B-Instruct",
        revision="main",
        format="huggingface",
        runtime="kserve-huggingfaceserver",
        hardware=HardwareProfile(gpus_per_replica=1, min_gpu_memory_gb=24, cpu="4", memory="32Gi"),
        runtime_args=("--max_model_len=8192", "--dtype=bfloat16"),
        provider="",
        provider_model_id="",
    )
    cluster = ClusterContract(
        cluster_id=1,
        name="gpu-eu",
        region="eu-west",
        gateway_namespace="genai-gateway",
        gateway_name="ai-gateway",
        deployment_mode="Standard",
        autoscaler_class="keda",
        namespace_prefix="team-",
        apply_gateway_bootstrap=False,
    )
    pool = AcceleratorPoolContract(
        accelerator_type="nvidia-l4",
        gpu_product="NVIDIA-L4",
        node_selector={"nvidia.com/gpu.product": "NVIDIA-L4"},
        tolerations=({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},),
        gpu_memory_gb=24,
    )
    spec = DeploymentSpec(
        deployment_id=42,
        generation=1,
        team_slug="alpha",
        name="chat",
        served_model_name="qwen2.5-7b-instruct",
        min_replicas=1,
        max_replicas=2,
        scale_to_zero=False,
        gpus_per_replica=1,
        runtime_args=(),
        model_cache=False,
        deleting=False,
        model=dataclasses.replace(model, **model_overrides),
        cluster=dataclasses.replace(cluster, **cluster_overrides),
        pool=pool,
    )
    return dataclasses.replace(spec, **overrides)


@pytest.fixture(scope="module")
def registry(crd_dir: Path) -> CrdRegistry:
    loaded = CrdRegistry()
    loaded.load_dir(crd_dir, kinds=PORTAL_CRD_KINDS)  # the sandbox's: a kind outside it has no CRD here
    return loaded


def assert_valid(registry: CrdRegistry, manifest: dict[str, Any]) -> None:
    info = registry.by_kind(manifest["apiVersion"], manifest["kind"])
    assert info is not None, f"no CRD for {manifest['apiVersion']} {manifest['kind']}"
    version = manifest["apiVersion"].split("/")[1]
    validated, causes, _ = registry.validator(info.group, version, info.plural).validate(manifest, strict=True)
    assert causes == [], f"{manifest['kind']} {manifest['metadata']['name']}: {causes}"
    # Nothing pruned and nothing defaulted away: what the portal applies is what the cluster stores.
    for key in manifest["spec"]:
        assert validated["spec"][key] is not None


OPTIONS = {
    "standard-keda": {},
    "standard-hpa": {"cluster": {"autoscaler_class": "hpa"}},
    "standard-hpa-scale-to-zero": {"cluster": {"autoscaler_class": "hpa"}, "scale_to_zero": True, "min_replicas": 0},
    "standard-keda-scale-to-zero": {"scale_to_zero": True, "min_replicas": 0},
    "standard-none": {"cluster": {"autoscaler_class": "none"}},
    "knative": {"cluster": {"deployment_mode": "Knative"}},
    "knative-scale-to-zero": {"cluster": {"deployment_mode": "Knative"}, "scale_to_zero": True, "min_replicas": 0},
    "model-cache": {"model_cache": True},
    "runtime-overrides": {"runtime_args": ("--max_model_len=4096",)},
    "pinned-revision": {"model": {"revision": "0123456789abcdef0123456789abcdef01234567"}},
    "multi-gpu": {"gpus_per_replica": 4, "model": {"hardware": HardwareProfile(4, 80, "16", "200Gi")}},
    "no-cpu-memory": {"model": {"hardware": HardwareProfile(1, 24, "", "")}},
    "long-names": {"team_slug": "a" * 40, "name": "b" * 40},
}


@pytest.mark.parametrize("option", OPTIONS, ids=list(OPTIONS))
def test_every_deployment_object_validates(registry: CrdRegistry, option: str) -> None:
    spec = make_spec(**OPTIONS[option])
    objects = build_deployment_objects(spec)
    kinds = [item["kind"] for item in objects]
    expected = ["InferenceService", "Backend", "AIServiceBackend", "AIGatewayRoute"]
    assert kinds == (["LocalModelCache", *expected] if spec.model_cache else expected)
    for manifest in objects:
        assert_valid(registry, manifest)


def test_cel_rules_are_enforced_on_builder_output(registry: CrdRegistry) -> None:
    """The same check refuses a route the CRD's rules forbid, so the test above cannot pass vacuously."""
    route = build_route(make_spec())
    route["spec"]["rules"][0]["backendRefs"] = []
    info = registry.by_kind(route["apiVersion"], route["kind"])
    assert info is not None
    _, causes, _ = registry.validator(info.group, "v1beta1", info.plural).validate(route, strict=True)
    isvc = build_inference_service(make_spec())
    isvc["spec"]["predictor"]["minReplicas"] = "one"
    isvc_info = registry.by_kind(isvc["apiVersion"], isvc["kind"])
    assert isvc_info is not None
    _, isvc_causes, _ = registry.validator(isvc_info.group, "v1beta1", isvc_info.plural).validate(isvc, strict=True)
    assert isvc_causes
    assert any("minReplicas" in cause.field for cause in isvc_causes)
    assert causes or isvc_causes


def test_inference_service_is_explicit_about_mode_resources_and_model_name() -> None:
    isvc = build_inference_service(make_spec())
    annotations = isvc["metadata"]["annotations"]
    assert annotations["serving.kserve.io/deploymentMode"] == "Standard"
    assert annotations["serving.kserve.io/autoscalerClass"] == "keda"
    predictor = isvc["spec"]["predictor"]
    assert predictor["minReplicas"] == 1
    assert predictor["maxReplicas"] == 2
    assert "scaleMetric" not in predictor  # KEDA forbids it (reference section 2.1)
    model = predictor["model"]
    assert model["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert model["resources"]["requests"]["nvidia.com/gpu"] == "1"
    assert model["storageUri"] == "hf://Qwen/Qwen2.5-7B-Instruct"
    assert model["args"][0] == "--model_name=qwen2.5-7b-instruct"
    assert predictor["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-L4"}
    assert predictor["tolerations"][0]["key"] == "nvidia.com/gpu"


def test_scale_to_zero_on_hpa_switches_to_keda_because_hpa_floors_at_one() -> None:
    isvc = build_inference_service(make_spec(cluster={"autoscaler_class": "hpa"}, scale_to_zero=True, min_replicas=0))
    assert isvc["metadata"]["annotations"]["serving.kserve.io/autoscalerClass"] == "keda"
    assert isvc["spec"]["predictor"]["minReplicas"] == 0


def test_runtime_overrides_replace_defaults_of_the_same_flag() -> None:
    args = build_inference_service(make_spec(runtime_args=("--max-model-len=4096",)))["spec"]["predictor"]["model"][
        "args"
    ]
    assert "--max_model_len=8192" not in args
    assert "--max-model-len=4096" in args
    assert "--dtype=bfloat16" in args


def test_route_serves_the_model_only_to_the_teams_credentials() -> None:
    route = build_route(make_spec())
    headers = route["spec"]["rules"][0]["matches"][0]["headers"]
    assert {"type": "Exact", "name": "x-ai-eg-model", "value": "qwen2.5-7b-instruct"} in headers
    client = next(header for header in headers if header["type"] == "RegularExpression")
    assert client["value"] == "^alpha\\..+$"
    assert {cost["type"] for cost in route["spec"]["llmRequestCosts"]} >= {"InputToken", "OutputToken", "TotalToken"}


def test_gateway_names_are_dns_labels_even_for_long_names() -> None:
    name = gateway_object_name(make_spec(team_slug="a" * 40, name="b" * 40))
    assert len(name) <= 63
    assert name[-1].isalnum()


def test_team_objects() -> None:
    spec = make_spec()
    namespace = build_namespace(spec)
    quota = build_gpu_quota(spec, 4)
    assert namespace["metadata"]["name"] == "team-alpha"
    assert quota["metadata"]["namespace"] == "team-alpha"
    assert quota["spec"]["hard"] == {"requests.nvidia.com/gpu": "4"}
