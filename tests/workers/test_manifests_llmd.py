"""The llm-d builders: every object validates against the upstream CRDs (CEL rules included) for each option they
have (fixed, KEDA, HPA, external scaling; prefill on and off; Kueue on and off; long names; multi-GPU; aliases;
the gateway in the team's namespace or not), the checks refuse what the CRDs forbid, and the values that tie the
objects together are exact: the pool the route and the objective name is the one KServe's controller creates."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from catalog.contracts import HardwareProfile
from portal.clusters.contracts import KUEUE
from portal.deployments.contracts import LLMD_MODE, DeploymentSpec
from portal.deployments.gpu_accounting import gpus_reserved
from portal.tenancy.contracts import SERVING_TIER_PRIORITIES
from tests.workers.test_manifests import assert_valid, make_spec
from workers.provisioning.manifests import llmd
from workers.provisioning.manifests.deployment import build_route
from workers.provisioning.manifests.kueue import LOCAL_QUEUE_NAME, QUEUE_NAME_LABEL
from workers.provisioning.manifests.upstream import ROUTE_TOKEN_COSTS
from workers.sandbox.validation import CrdRegistry

LLMD_CRD_KINDS = frozenset(
    {
        ("serving.kserve.io", "llminferenceservices"),
        ("llm-d.ai", "inferenceobjectives"),
        ("llm-d.ai", "inferencemodelrewrites"),
        ("gateway.networking.k8s.io", "referencegrants"),
        ("aigateway.envoyproxy.io", "aigatewayroutes"),
    }
)


@pytest.fixture(scope="module")
def registry(crd_dir: Path) -> CrdRegistry:
    loaded = CrdRegistry()
    # Not the sandbox's PORTAL_CRD_KINDS (it serves no llm-d kinds yet): the CRDs these builders produce.
    assert loaded.load_dir(crd_dir, kinds=LLMD_CRD_KINDS) == len(LLMD_CRD_KINDS)
    return loaded


def llmd_spec(**overrides: Any) -> DeploymentSpec:
    return make_spec(serving_mode=LLMD_MODE, **overrides)


def causes_of(registry: CrdRegistry, manifest: dict[str, Any]) -> list[str]:
    info = registry.by_kind(manifest["apiVersion"], manifest["kind"])
    assert info is not None
    version = manifest["apiVersion"].split("/")[1]
    _, causes, _ = registry.validator(info.group, version, info.plural).validate(manifest, strict=True)
    return [f"{cause.field}: {cause.message}" for cause in causes]


def by_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    return next(item for item in objects if item["kind"] == kind)


OPTIONS: dict[str, dict[str, Any]] = {
    "keda-autoscaled": {"max_replicas": 3},
    "hpa-autoscaled": {"max_replicas": 3, "cluster": {"autoscaler_class": "hpa"}},
    "knative-cluster": {"max_replicas": 3, "cluster": {"deployment_mode": "Knative", "autoscaler_class": "kpa"}},
    "fixed-replicas": {"min_replicas": 2, "max_replicas": 2},
    "autoscaler-none": {"max_replicas": 3, "cluster": {"autoscaler_class": "none"}},
    "autoscaler-external": {"max_replicas": 3, "cluster": {"autoscaler_class": "external"}},
    "scale-to-zero-asked": {"scale_to_zero": True, "min_replicas": 0, "max_replicas": 2},
    "prefill": {"prefill_replicas": 2},
    "prefill-own-gpus": {"prefill_replicas": 1, "prefill_gpus_per_replica": 2},
    "kueue": {"cluster": {"gpu_quota": KUEUE}},
    "kueue-prefill-autoscaled": {"cluster": {"gpu_quota": KUEUE}, "prefill_replicas": 2, "max_replicas": 4},
    "multi-gpu": {"gpus_per_replica": 4, "model": {"hardware": HardwareProfile(4, 80, "16", "200Gi")}},
    "planned-tensor-parallel": {
        "gpus_per_replica": 2,
        "plan_runtime_args": ("--max_model_len=32768", "--tensor_parallel_size=2", "--kv_cache_dtype=fp8"),
    },
    "team-overrides": {"runtime_args": ("--max-model-len=4096", "--enable-prefix-caching")},
    "pinned-revision": {"model": {"revision": "0123456789abcdef0123456789abcdef01234567"}},
    "aliases": {"served_model_aliases": ("qwen-old", "qwen-older")},
    "no-cpu-memory": {"model": {"hardware": HardwareProfile(1, 24, "", "")}},
    "no-node-selector": {"pool": {"node_selector": {}, "tolerations": ()}},
    "long-names": {"team_slug": "a" * 40, "name": "b" * 40, "served_model_name": "c" * 63},
    "gateway-in-team-namespace": {"cluster": {"gateway_namespace": "team-alpha"}},
    "restricted-keys": {"allowed_key_ids": ("0a1b2c3d4e5f",)},
    "batch-tier": {"objective_priority": SERVING_TIER_PRIORITIES["batch"]},
}


def _spec_for(option: str) -> DeploymentSpec:
    overrides = dict(OPTIONS[option])
    pool = overrides.pop("pool", None)
    spec = llmd_spec(**overrides)
    return dataclasses.replace(spec, pool=dataclasses.replace(spec.pool, **pool)) if pool else spec


@pytest.mark.parametrize("option", OPTIONS, ids=list(OPTIONS))
def test_every_llmd_object_validates(registry: CrdRegistry, option: str) -> None:
    spec = _spec_for(option)
    objects = llmd.build_deployment_objects_llmd(spec)
    expected = ["LLMInferenceService", "InferenceObjective"]
    if spec.served_model_aliases:
        expected.append("InferenceModelRewrite")
    if spec.cluster.gateway_namespace != f"{spec.cluster.namespace_prefix}{spec.team_slug}":
        expected.append("ReferenceGrant")  # the route lives in the gateway's namespace, the pool in the team's
    expected.append("AIGatewayRoute")
    assert [item["kind"] for item in objects] == expected
    for manifest in objects:
        assert_valid(registry, manifest)
    assert not [rule for rule in registry.skipped_rules if "replicas" in rule or "InferencePool" in rule]


def test_cel_rules_refuse_what_the_crds_forbid(registry: CrdRegistry) -> None:
    """Each builder's output, broken the way its CRD's rules forbid, is refused by the same check: the matrix above
    cannot pass vacuously."""
    service = llmd.build_llm_inference_service(llmd_spec(max_replicas=3))
    service["spec"]["replicas"] = 2  # next to `scaling`
    assert any("mutually exclusive" in cause for cause in causes_of(registry, service))

    service = llmd.build_llm_inference_service(llmd_spec(max_replicas=3))
    service["spec"]["scaling"]["wva"] = {"keda": {}, "hpa": {}}
    assert any("hpa and keda are mutually exclusive" in cause for cause in causes_of(registry, service))

    service = llmd.build_llm_inference_service(llmd_spec(prefill_replicas=1))
    service["spec"]["prefill"]["scaling"] = {"maxReplicas": 2, "wva": {"hpa": {}}}
    assert any(cause.startswith("spec.prefill") for cause in causes_of(registry, service))

    objective = llmd.build_inference_objective(llmd_spec())
    del objective["spec"]["poolRef"]
    assert any("poolRef" in cause for cause in causes_of(registry, objective))

    rewrite = llmd.build_model_rewrite(llmd_spec(served_model_aliases=("old",)))
    rewrite["spec"]["rules"][0]["targets"] = []
    assert causes_of(registry, rewrite)

    grant = llmd.build_pool_reference_grant(llmd_spec())
    grant["spec"]["from"] = []
    assert any("from" in cause for cause in causes_of(registry, grant))

    route = llmd.build_pool_route(llmd_spec())
    route["spec"]["rules"][0]["backendRefs"].append({"name": "another-backend"})
    assert any("cannot mix InferencePool and AIServiceBackend" in cause for cause in causes_of(registry, route))

    route = llmd.build_pool_route(llmd_spec())
    route["spec"]["rules"][0]["backendRefs"][0]["group"] = "inference.networking.x-k8s.io"
    assert any("only InferencePool from inference.networking.k8s.io" in cause for cause in causes_of(registry, route))


@pytest.mark.parametrize(
    ("parent", "suffix", "expected"),
    [
        # knative.dev/pkg kmeta/names_test.go TestChildName (knative/pkg 521cb33b), the function KServe names with.
        ("asdf", "-deployment", "asdf-deployment"),
        ("f" * 63, "-deployment", "ffffffffffffffffffff105d7597f637e83cc711605ac3ea4957-deployment"),
        ("f" * 63, "-deploy", "ffffffffffffffffffffffff105d7597f637e83cc711605ac3ea4957-deploy"),
        ("f" * 63, "f" * 63, "fffffffffffffffffffffffffffffff0502661254f13c89973cb3a83e0cbec0"),
        ("a", "f" * 63, "ab5cfd486935decbc0d305799f4ce4414ffffffffffffffffffffffffffffff"),
        ("b" * 32, "f" * 32, "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb329c7c81b9ab3ba71aa139066aa5625d"),
        ("aaaa", "b---a" * 20, "aaaa7a3f7966594e3f0849720eced8212c18b---ab---ab---ab---ab---ab"),
        (
            "a" * 17,
            "a.-.-.-.-.-.-.aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "aaaaaaaaaaaaaaaaaa1eb10dc911444f8434af83b7225442da",
        ),
    ],
)
def test_child_names_are_knatives(parent: str, suffix: str, expected: str) -> None:
    assert llmd.kserve_child_name(parent, suffix) == expected


def test_the_route_the_objective_and_the_grant_name_the_pool_kserve_creates() -> None:
    spec = llmd_spec()
    objects = llmd.build_deployment_objects_llmd(spec)
    assert llmd.inference_pool_name(spec) == "chat-inference-pool"
    assert llmd.endpoint_picker_name(spec) == "chat-epp-service"
    pool = {"group": "inference.networking.k8s.io", "kind": "InferencePool", "name": "chat-inference-pool"}
    route = by_kind(objects, "AIGatewayRoute")
    assert route["spec"]["rules"][0]["backendRefs"] == [{**pool, "weight": 1, "namespace": "team-alpha"}]
    assert by_kind(objects, "InferenceObjective")["spec"]["poolRef"] == pool
    grant = by_kind(objects, "ReferenceGrant")
    assert grant["metadata"]["namespace"] == "team-alpha"  # the referent's namespace
    assert grant["spec"]["to"] == [pool]
    assert grant["spec"]["from"] == [
        {"group": "aigateway.envoyproxy.io", "kind": "AIGatewayRoute", "namespace": "genai-gateway"},
        {"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "namespace": "genai-gateway"},
    ]
    # A long deployment name: the pool name is the hashed child name, and everything agrees on it.
    long_spec = llmd_spec(name="b" * 50)
    long_pool = llmd.inference_pool_name(long_spec)
    assert len(long_pool) == 63
    assert long_pool == llmd.kserve_child_name("b" * 50, "-inference-pool")
    assert long_pool.startswith("b" * 16)
    assert long_pool.endswith("-inference-pool")
    long_objects = llmd.build_deployment_objects_llmd(long_spec)
    assert by_kind(long_objects, "AIGatewayRoute")["spec"]["rules"][0]["backendRefs"][0]["name"] == long_pool
    assert by_kind(long_objects, "InferenceObjective")["spec"]["poolRef"]["name"] == long_pool


def test_the_pool_route_is_todays_route_but_for_its_backend() -> None:
    spec = llmd_spec(served_model_aliases=("qwen-old",), allowed_key_ids=("0a1b2c3d4e5f",))
    standard, pooled = build_route(dataclasses.replace(spec, serving_mode="standard")), llmd.build_pool_route(spec)
    assert pooled["metadata"] == standard["metadata"]
    assert pooled["metadata"]["namespace"] == "genai-gateway"
    assert pooled["spec"]["llmRequestCosts"] == [{"metadataKey": key, "type": kind} for key, kind in ROUTE_TOKEN_COSTS]
    for rule in (*standard["spec"]["rules"], *pooled["spec"]["rules"]):
        rule.pop("backendRefs")
    assert pooled["spec"] == standard["spec"]  # model and client-id matches, timeouts, owner, costs
    # The gateway in the team's own namespace: no namespace on the ref, and no grant.
    local = llmd_spec(cluster={"gateway_namespace": "team-alpha"})
    assert "namespace" not in llmd.build_pool_route(local)["spec"]["rules"][0]["backendRefs"][0]
    assert "ReferenceGrant" not in [item["kind"] for item in llmd.build_deployment_objects_llmd(local)]


def test_the_service_lets_kserve_build_the_pool_and_no_route_of_its_own() -> None:
    service = llmd.build_llm_inference_service(llmd_spec())
    assert service["apiVersion"] == "serving.kserve.io/v1alpha2"
    assert service["metadata"]["name"] == "chat"
    assert service["metadata"]["namespace"] == "team-alpha"
    assert service["spec"]["model"] == {"uri": "hf://Qwen/Qwen2.5-7B-Instruct", "name": "qwen2.5-7b-instruct"}
    assert service["spec"]["router"] == {"scheduler": {}}
    assert "baseRefs" not in service["spec"]  # the controller applies its well-known presets itself
    template = service["spec"]["template"]
    assert template["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-L4"}
    assert template["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert template["containers"][0]["name"] == "main"
    assert template["containers"][0]["resources"] == {
        "requests": {"nvidia.com/gpu": "1", "cpu": "4", "memory": "32Gi"},
        "limits": {"nvidia.com/gpu": "1", "memory": "32Gi"},
    }


def test_model_server_flags_go_where_vllm_serve_takes_them() -> None:
    spec = llmd_spec(
        gpus_per_replica=4,
        model={"revision": "abc123", "runtime_args": ("--max_model_len=8192", "--dtype=bfloat16", "--model_name=x")},
        plan_runtime_args=("--max_model_len=32768", "--tensor_parallel_size=2", "--gpu_memory_utilization=0.90"),
        runtime_args=("--gpu-memory-utilization=0.85",),
    )
    service = llmd.build_llm_inference_service(spec)
    # The plan's tensor parallel size is the service's parallelism, never a flag next to the preset's own.
    assert service["spec"]["parallelism"] == {"tensor": 2}
    assert service["spec"]["template"]["containers"][0]["args"] == [
        "--revision=abc123",
        "--dtype=bfloat16",
        "--max-model-len=32768",
        "--gpu-memory-utilization=0.85",
    ]
    # Without a planned size, one shard per GPU; one GPU needs no parallelism at all.
    assert llmd.build_llm_inference_service(llmd_spec(gpus_per_replica=4))["spec"]["parallelism"] == {"tensor": 4}
    assert "parallelism" not in llmd.build_llm_inference_service(llmd_spec())["spec"]


def test_replicas_follow_the_clusters_autoscaler_and_never_reach_zero() -> None:
    def workload(**overrides: Any) -> dict[str, Any]:
        spec = llmd.build_llm_inference_service(llmd_spec(**overrides))["spec"]
        return {key: spec[key] for key in ("replicas", "scaling") if key in spec}

    keda = {"scaling": {"minReplicas": 1, "maxReplicas": 3, "wva": {"keda": {}}}}
    assert workload(max_replicas=3) == keda
    assert workload(max_replicas=3, cluster={"autoscaler_class": "hpa"}) == {
        "scaling": {"minReplicas": 1, "maxReplicas": 3, "wva": {"hpa": {}}}
    }
    assert workload(min_replicas=2, max_replicas=2) == {"replicas": 2}
    assert workload(max_replicas=3, cluster={"autoscaler_class": "none"}) == {"replicas": 1}
    assert workload(max_replicas=3, cluster={"autoscaler_class": "external"}) == {}  # another controller owns it
    assert workload(scale_to_zero=True, min_replicas=0, max_replicas=3) == keda  # minReplicas is at least 1


def test_prefill_is_a_second_workload_with_its_own_replicas_and_gpus() -> None:
    spec = llmd_spec(gpus_per_replica=2, max_replicas=3, prefill_replicas=4, prefill_gpus_per_replica=1)
    service = llmd.build_llm_inference_service(spec)["spec"]
    prefill = service["prefill"]
    assert prefill["replicas"] == 4
    assert "parallelism" not in prefill  # one GPU each
    assert prefill["template"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert service["template"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert prefill["template"]["nodeSelector"] == service["template"]["nodeSelector"]
    # Counted separately, for the quota and for GPU-hours: 3 x 2 decode + 4 x 1 prefill.
    reserved = gpus_reserved(spec)
    assert (reserved.decode, reserved.prefill, reserved.total) == (6, 4, 10)
    # Without its own count a prefill replica has a decode replica's GPUs.
    same = llmd.build_llm_inference_service(llmd_spec(gpus_per_replica=2, prefill_replicas=1))["spec"]["prefill"]
    assert same["parallelism"] == {"tensor": 2}
    assert same["template"]["containers"][0]["resources"]["requests"]["nvidia.com/gpu"] == "2"
    assert "prefill" not in llmd.build_llm_inference_service(llmd_spec())["spec"]


def test_the_objective_carries_the_tiers_priority() -> None:
    for tier, priority in SERVING_TIER_PRIORITIES.items():
        objective = llmd.build_inference_objective(llmd_spec(objective_priority=priority))
        assert objective["apiVersion"] == "llm-d.ai/v1alpha2", tier
        assert objective["metadata"] == {
            "name": "chat",
            "namespace": "team-alpha",
            "labels": {
                "app.kubernetes.io/managed-by": "genai-portal",
                "portal.genai.io/team": "alpha",
                "portal.genai.io/deployment": "chat",
                "portal.genai.io/deployment-id": "42",
            },
        }
        assert objective["spec"]["priority"] == priority
    assert SERVING_TIER_PRIORITIES["production"] > SERVING_TIER_PRIORITIES["standard"] == 0
    assert SERVING_TIER_PRIORITIES["batch"] < 0
    assert llmd.OBJECTIVE_HEADER == "x-llm-d-inference-objective"
    assert llmd.objective_name(llmd_spec()) == "chat"


def test_earlier_served_names_are_rewritten_to_the_current_one() -> None:
    spec = llmd_spec(served_model_aliases=("qwen-old", "qwen-older"))
    rewrite = llmd.build_model_rewrite(spec)
    assert rewrite["spec"]["rules"] == [
        {
            "matches": [
                {"model": {"type": "Exact", "value": "qwen-old"}},
                {"model": {"type": "Exact", "value": "qwen-older"}},
            ],
            "targets": [{"modelRewrite": "qwen2.5-7b-instruct"}],
        }
    ]
    route_matches = llmd.build_pool_route(spec)["spec"]["rules"][0]["matches"]
    assert [match["headers"][0]["value"] for match in route_matches] == [
        "qwen2.5-7b-instruct",
        "qwen-old",
        "qwen-older",
    ]


def test_the_kueue_queue_label_is_on_the_service_only_on_kueue_clusters() -> None:
    queued = llmd.build_llm_inference_service(llmd_spec(cluster={"gpu_quota": KUEUE}))
    assert queued["metadata"]["labels"][QUEUE_NAME_LABEL] == LOCAL_QUEUE_NAME
    # On the metadata, whose kueue.x-k8s.io labels KServe copies to the Deployments and their pods; not in
    # spec.labels (pods only: Kueue reads the Deployment's own labels).
    assert "labels" not in queued["spec"]
    plain = llmd.build_llm_inference_service(llmd_spec())
    assert QUEUE_NAME_LABEL not in plain["metadata"]["labels"]
    # Only the service carries it: the objective, grant and route are not workloads.
    for manifest in llmd.build_deployment_objects_llmd(llmd_spec(cluster={"gpu_quota": KUEUE}))[1:]:
        assert QUEUE_NAME_LABEL not in manifest["metadata"]["labels"]
