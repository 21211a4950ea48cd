"""The sandbox's llm-d and Kueue simulation, driven over HTTP by the real `kubernetes` client with what the portal's
own builders render (workers.provisioning.manifests.llmd / kueue): KServe's LLMInferenceService controller creates
the pool, the endpoint picker and the workloads and reports what the real one reports; deleting the service takes
everything it owns with it; Kueue admits within nominal quota, borrows a neighbour's idle GPUs through the cohort,
queues with Kueue's own condition when the cohort is full and admits the queued pod when GPUs free up; and the
sandbox gateway serves an AIGatewayRoute to the pool, metered exactly like any backend."""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest
from kubernetes import client as k8s

from portal.clusters.contracts import KUEUE, AcceleratorPoolContract
from portal.deployments.contracts import LLMD_MODE, DeploymentSpec
from portal.tenancy.contracts import TeamQuotaContract
from tests.workers.conftest import sandbox_api_client
from tests.workers.sandbox.test_gateway_dataplane import (
    ALPHA,
    CHAT,
    CLUSTER,
    GATEWAY,
    HELLO,
    QWEN,
    Clock,
    apply_policy,
    call,
    chat,
    deployment_spec,
    policy_spec,
    team,
    window_start,
)
from workers.provisioning.manifests import kueue, llmd
from workers.provisioning.manifests.deployment import build_team_objects
from workers.provisioning.status import derive_llmd_status
from workers.sandbox.controllers_kueue import workload_name_for_pod
from workers.sandbox.controllers_llmd import kserve_child_name
from workers.sandbox.gateway import SandboxGateway
from workers.sandbox.server import Sandbox

KUEUE_CLUSTER = dataclasses.replace(CLUSTER, gpu_quota=KUEUE, runs_llmd=True)
L4 = AcceleratorPoolContract(
    accelerator_type="nvidia-l4",
    gpu_product="NVIDIA-L4",
    node_selector={"nvidia.com/gpu.product": "NVIDIA-L4"},
    tolerations=({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},),
    gpu_memory_gb=24,
)
ISVC = "serving.kserve.io/v1alpha2"


# ---------------------------------------------------------------------------------------------- the client side


@pytest.fixture
def api(clean_sandbox: Sandbox) -> Iterator[k8s.ApiClient]:
    with sandbox_api_client(clean_sandbox) as api_client:
        yield api_client


def _plural(sandbox: Sandbox, api_version: str, kind: str) -> tuple[str, str, str, bool]:
    found = sandbox.store.kind_by_api_version(api_version, kind)
    assert found is not None, kind
    return found.group, found.version, found.plural, found.namespaced


def apply(sandbox: Sandbox, api: k8s.ApiClient, objects: list[dict[str, Any]]) -> None:
    """Server-side apply over HTTP, as the portal's workers do (field manager genai-portal, forced)."""
    core = k8s.CoreV1Api(api)
    custom = k8s.CustomObjectsApi(api)
    for obj in objects:
        metadata = obj["metadata"]
        if obj["kind"] == "Namespace":
            core.patch_namespace(
                metadata["name"],
                obj,
                field_manager="genai-portal",
                force=True,
                _content_type="application/apply-patch+yaml",
            )
        elif obj["kind"] == "ResourceQuota":
            core.patch_namespaced_resource_quota(
                metadata["name"],
                metadata["namespace"],
                obj,
                field_manager="genai-portal",
                force=True,
                _content_type="application/apply-patch+yaml",
            )
        else:
            group, version, plural, namespaced = _plural(sandbox, obj["apiVersion"], obj["kind"])
            options = {"field_manager": "genai-portal", "force": True, "_content_type": "application/apply-patch+yaml"}
            if namespaced:
                custom.patch_namespaced_custom_object(
                    group, version, metadata["namespace"], plural, metadata["name"], obj, **options
                )
            else:
                custom.patch_cluster_custom_object(group, version, plural, metadata["name"], obj, **options)


def get(sandbox: Sandbox, api: k8s.ApiClient, api_version: str, kind: str, namespace: str, name: str) -> Any:
    group, version, plural, _ = _plural(sandbox, api_version, kind)
    return k8s.CustomObjectsApi(api).get_namespaced_custom_object(group, version, namespace, plural, name)


def get_cluster(sandbox: Sandbox, api: k8s.ApiClient, kind: str, name: str) -> Any:
    group, version, plural, _ = _plural(sandbox, "kueue.x-k8s.io/v1beta2", kind)
    return k8s.CustomObjectsApi(api).get_cluster_custom_object(group, version, plural, name)


def delete_service(api: k8s.ApiClient, namespace: str, name: str) -> None:
    k8s.CustomObjectsApi(api).delete_namespaced_custom_object(
        "serving.kserve.io", "v1alpha2", namespace, "llminferenceservices", name
    )


def settle_until(sandbox: Sandbox, done: Callable[[], bool], steps: int = 12) -> None:
    """Controller steps until `done` (each step is what the background loop does; no sleeping)."""
    for _ in range(steps):
        sandbox.settle()
        with contextlib.suppress(ValueError, KeyError, k8s.ApiException):  # not there yet (or two pods for a moment)
            if done():
                return
    raise AssertionError("the sandbox did not settle")


def conditions(obj: dict[str, Any]) -> dict[str, tuple[str, str, str]]:
    return {
        c["type"]: (c["status"], c.get("reason", ""), c.get("message", ""))
        for c in (obj.get("status") or {}).get("conditions") or []
    }


def llmd_spec(team: str, name: str, served: str, **overrides: Any) -> DeploymentSpec:
    return deployment_spec(team, name, served, serving_mode=LLMD_MODE, **overrides)


def deploy(sandbox: Sandbox, api: k8s.ApiClient, spec: DeploymentSpec) -> None:
    apply(sandbox, api, build_team_objects(spec, team_gpu_limit=8))
    apply(sandbox, api, llmd.build_deployment_objects_llmd(spec))


def service_of(sandbox: Sandbox, api: k8s.ApiClient, spec: DeploymentSpec) -> dict[str, Any]:
    return dict(get(sandbox, api, ISVC, "LLMInferenceService", f"genai-{spec.team_slug}", spec.name))


def deployments_in(api: k8s.ApiClient, namespace: str) -> list[dict[str, Any]]:
    """Read raw: apps/v1 answers like any group to the generic client (the typed AppsV1Api costs seconds to import)."""
    return list(
        k8s.CustomObjectsApi(api).list_namespaced_custom_object("apps", "v1", namespace, "deployments")["items"]
    )


def pods_of(api: k8s.ApiClient, namespace: str, selector: str) -> list[k8s.V1Pod]:
    return list(k8s.CoreV1Api(api).list_namespaced_pod(namespace, label_selector=selector).items)


def team_quota(team: str, gpus: int, borrow: int) -> TeamQuotaContract:
    return TeamQuotaContract(
        team_slug=team,
        team_active=True,
        max_deployments=5,
        tokens_per_minute=100_000,
        tokens_per_day=1_000_000,
        monthly_budget=Decimal(100),
        budget_policy="alert",
        gpus={"nvidia-l4": gpus},
        gpu_borrowing_limits={"nvidia-l4": borrow},
    )


# ---------------------------------------------------------------------------------------------- the CRDs


def test_every_kind_the_llmd_and_kueue_builders_render_has_its_crd_loaded(clean_sandbox: Sandbox) -> None:
    spec = llmd_spec("alpha", "chat", QWEN, served_model_aliases=("old",), cluster=KUEUE_CLUSTER, prefill_replicas=1)
    rendered = [
        *llmd.build_deployment_objects_llmd(spec),
        *kueue.build_kueue_cluster_objects([L4]),
        *kueue.build_kueue_team_objects(KUEUE_CLUSTER, [L4], team_quota("alpha", 1, 0)),
    ]
    kinds = {obj["kind"] for obj in rendered}
    assert kinds == {
        "LLMInferenceService", "InferenceObjective", "InferenceModelRewrite", "ReferenceGrant", "AIGatewayRoute",
        "Cohort", "ResourceFlavor", "ClusterQueue", "LocalQueue",
    }  # fmt: skip
    for obj in rendered:
        assert clean_sandbox.store.crds.by_kind(obj["apiVersion"], obj["kind"]) is not None, obj["kind"]
    # And the pool the llm-d controller creates; Kueue's Workload has no CRD in shared/crds: stored unvalidated.
    assert clean_sandbox.store.crds.by_kind("inference.networking.k8s.io/v1", "InferencePool") is not None
    assert clean_sandbox.store.kind_by_api_version("kueue.x-k8s.io/v1beta2", "Workload") is not None


# ---------------------------------------------------------------------------------------------- the llm-d controller


def test_the_service_gets_its_pool_picker_and_workloads_reports_like_kserve_and_deleting_it_cascades(
    clean_sandbox: Sandbox, api: k8s.ApiClient
) -> None:
    sandbox = clean_sandbox
    spec = llmd_spec("alpha", "chat", QWEN, prefill_replicas=1)
    deploy(sandbox, api, spec)
    settle_until(sandbox, lambda: conditions(service_of(sandbox, api, spec)).get("WorkloadsReady", ("",))[0] == "True")

    pool_name = llmd.inference_pool_name(spec)
    assert pool_name == kserve_child_name("chat", "-inference-pool") == "chat-inference-pool"
    pool = get(sandbox, api, "inference.networking.k8s.io/v1", "InferencePool", "genai-alpha", pool_name)
    service = service_of(sandbox, api, spec)
    owner = {
        "apiVersion": ISVC,
        "kind": "LLMInferenceService",
        "name": "chat",
        "uid": service["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
    assert pool["metadata"]["ownerReferences"] == [owner]
    assert pool["spec"] == {
        "endpointPickerRef": {
            "failureMode": "FailOpen",
            "group": "",
            "kind": "Service",
            "name": llmd.endpoint_picker_name(spec),
            "port": {"number": 9002},
        },
        "selector": {
            "matchLabels": {
                "app.kubernetes.io/name": "chat",
                "app.kubernetes.io/part-of": "llminferenceservice",
                "kserve.io/component": "workload",
            }
        },
        "targetPorts": [{"number": 8000}],
        "appProtocol": "http",
    }
    deployments = {item["metadata"]["name"]: item for item in deployments_in(api, "genai-alpha")}
    assert sorted(deployments) == ["chat-kserve", "chat-kserve-prefill", "chat-kserve-router-scheduler"]
    for item in deployments.values():
        assert [ref["uid"] for ref in item["metadata"]["ownerReferences"]] == [service["metadata"]["uid"]]
    assert deployments["chat-kserve"]["spec"]["template"]["metadata"]["labels"]["llm-d.ai/role"] == "decode"
    assert deployments["chat-kserve-prefill"]["spec"]["template"]["metadata"]["labels"]["llm-d.ai/role"] == "prefill"
    main = deployments["chat-kserve"]["spec"]["template"]["spec"]["containers"][0]
    assert main["command"][:5] == ["vllm", "serve", "/mnt/models", "--served-model-name", QWEN]
    assert main["resources"]["limits"] == {"nvidia.com/gpu": "1", "memory": "32Gi"}
    services = {item.metadata.name for item in k8s.CoreV1Api(api).list_namespaced_service("genai-alpha").items}
    assert services == {"chat-epp-service", "chat-kserve-workload-svc"}
    decode = pods_of(api, "genai-alpha", "llm-d.ai/role=decode")
    assert [(pod.status.phase, pod.metadata.owner_references[0].name) for pod in decode] == [("Running", "chat-kserve")]

    # KServe v0.20.0: the workloads are ready, but without a managed route no gateway accepts the pool, so Ready
    # stays False with the router's reason; no URL, the workload Service's address.
    status = conditions(service_of(sandbox, api, spec))
    waiting = (
        "False",
        "WaitingForGateway",
        "Inference Pool genai-alpha/chat-inference-pool exists but no Gateway controller has accepted it yet",
    )
    assert status == {
        "InferencePoolReady": waiting,
        "MainWorkloadReady": ("True", "", ""),
        "PrefillWorkloadReady": ("True", "", ""),
        "PresetsCombined": ("True", "", ""),
        "Ready": waiting,
        "RouterReady": waiting,
        "SchedulerWorkloadReady": ("True", "", ""),
        "WorkloadsReady": ("True", "", ""),
    }
    observed = service_of(sandbox, api, spec)["status"]
    assert "url" not in observed
    assert observed["addresses"] == [{"url": "http://chat-kserve-workload-svc.genai-alpha.svc.cluster.local"}]
    # The route lives in the gateway's namespace: the AI Gateway (v1.1.0) looks for routes in the pool's namespace
    # only, so it never writes a parent for this pool, while the route itself is accepted (the grant allows it).
    assert "parents" not in (pool.get("status") or {})
    route = get(sandbox, api, "aigateway.envoyproxy.io/v1beta1", "AIGatewayRoute", "genai-gateway", "alpha--chat")
    assert conditions(route)["Accepted"][0] == "True"

    delete_service(api, "genai-alpha", "chat")
    settle_until(
        sandbox,
        lambda: not deployments_in(api, "genai-alpha") and not pods_of(api, "genai-alpha", ""),
    )
    assert {item.metadata.name for item in k8s.CoreV1Api(api).list_namespaced_service("genai-alpha").items} == set()
    custom = k8s.CustomObjectsApi(api)
    assert (
        custom.list_namespaced_custom_object("inference.networking.k8s.io", "v1", "genai-alpha", "inferencepools")[
            "items"
        ]
        == []
    )


def test_a_model_that_cannot_be_loaded_keeps_its_workload_unready(clean_sandbox: Sandbox, api: k8s.ApiClient) -> None:
    sandbox = clean_sandbox
    spec = llmd_spec("alpha", "broken", "alpha--broken", artifact_uri="hf://org/fail-load-model")
    deploy(sandbox, api, spec)
    settle_until(
        sandbox, lambda: conditions(service_of(sandbox, api, spec)).get("SchedulerWorkloadReady", ("",))[0] == "True"
    )
    [pod] = pods_of(api, "genai-alpha", "app.kubernetes.io/name=broken,kserve.io/component=workload")
    assert [c.args for c in pod.spec.init_containers] == [["hf://org/fail-load-model", "/mnt/models"]]
    assert (pod.status.phase, pod.status.init_container_statuses[0].state.waiting.reason) == (
        "Pending",
        "CrashLoopBackOff",
    )
    rv = sandbox.store._resource_version
    for _ in range(3):
        sandbox.settle()
    assert sandbox.store._resource_version == rv  # settled: nothing rewritten while it stays broken
    assert conditions(service_of(sandbox, api, spec))["WorkloadsReady"] == (
        "False",
        "MinimumReplicasUnavailable",
        "Deployment does not have minimum availability.",
    )


def test_model_servers_turn_ready_after_the_loading_delay(clean_sandbox: Sandbox, api: k8s.ApiClient) -> None:
    sandbox = clean_sandbox
    sandbox.controllers.apps.ready_delay = 30.0  # the demo's model loading time; the tests' sandbox has none
    try:
        spec = llmd_spec("alpha", "slow", "alpha--slow")
        deploy(sandbox, api, spec)
        # The pod runs before the controller's next pass over the service rewrites its condition (Progressing until
        # then): wait for that pass, then the loading pod must still hold the workload unready.
        settle_until(
            sandbox,
            lambda: (
                decode_pod(api, spec).status.phase == "Running"
                and conditions(service_of(sandbox, api, spec))["MainWorkloadReady"][1] != "Progressing"
            ),
        )
        assert conditions(service_of(sandbox, api, spec))["MainWorkloadReady"][:2] == (
            "False",
            "MinimumReplicasUnavailable",
        )
        sandbox.settle(after=31)
        settle_until(sandbox, lambda: conditions(service_of(sandbox, api, spec))["MainWorkloadReady"][0] == "True")
    finally:
        sandbox.controllers.apps.ready_delay = 0.0


def test_a_pool_route_without_its_grant_is_refused_and_a_route_beside_the_pool_gets_its_parent(
    clean_sandbox: Sandbox, api: k8s.ApiClient
) -> None:
    sandbox = clean_sandbox
    spec = llmd_spec("alpha", "chat", QWEN, max_replicas=3)  # autoscaled through the WVA (KEDA)
    objects = [obj for obj in llmd.build_deployment_objects_llmd(spec) if obj["kind"] != "ReferenceGrant"]
    apply(sandbox, api, build_team_objects(spec, team_gpu_limit=8))
    apply(sandbox, api, objects)
    sandbox.settle()
    route = get(sandbox, api, "aigateway.envoyproxy.io/v1beta1", "AIGatewayRoute", "genai-gateway", "alpha--chat")
    assert conditions(route) == {
        "NotAccepted": (
            "False",
            "ReconciliationFailed",
            "cross-namespace reference from AIGatewayRoute in namespace genai-gateway to InferencePool "
            "chat-inference-pool in namespace genai-alpha is not permitted: no valid ReferenceGrant found in namespace "
            "genai-alpha. A ReferenceGrant must allow AIGatewayRoute from namespace genai-gateway to reference "
            "InferencePool in namespace genai-alpha",
        )
    }
    apply(sandbox, api, [llmd.build_pool_reference_grant(spec)])
    settle_until(sandbox, lambda: conditions(service_of(sandbox, api, spec)).get("WorkloadsReady", ("",))[0] == "True")
    assert conditions(service_of(sandbox, api, spec))["ScalingReady"] == ("True", "", "")
    [deployment] = [item for item in deployments_in(api, "genai-alpha") if item["metadata"]["name"] == "chat-kserve"]
    assert deployment["spec"]["replicas"] == 1
    settle_until(
        sandbox,
        lambda: (
            "Accepted"
            in conditions(
                get(sandbox, api, "aigateway.envoyproxy.io/v1beta1", "AIGatewayRoute", "genai-gateway", "alpha--chat")
            )
        ),
    )

    # A gateway in the team's own namespace: the route sits beside the pool, and the AI Gateway accepts the pool.
    local = dataclasses.replace(spec, cluster=dataclasses.replace(CLUSTER, gateway_namespace="genai-alpha"))
    kind = sandbox.store.kind_by_api_version("gateway.networking.k8s.io/v1", "Gateway")
    assert kind is not None
    sandbox.store.create(
        kind,
        "genai-alpha",
        {
            "metadata": {"name": "ai-gateway"},
            "spec": {"gatewayClassName": "eg", "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}]},
        },
        manager="installer",
    )
    apply(sandbox, api, [llmd.build_pool_route(local)])

    def pool_of() -> Any:
        return get(
            sandbox, api, "inference.networking.k8s.io/v1", "InferencePool", "genai-alpha", "chat-inference-pool"
        )

    settle_until(sandbox, lambda: bool((pool_of().get("status") or {}).get("parents")))
    [parent] = pool_of()["status"]["parents"]
    assert parent["parentRef"] == {
        "group": "gateway.networking.k8s.io",
        "kind": "Gateway",
        "name": "ai-gateway",
        "namespace": "genai-alpha",
    }
    assert [(c["type"], c["status"], c["reason"], c["message"]) for c in parent["conditions"]] == [
        (
            "Accepted",
            "True",
            "Accepted",
            "InferencePool has been Accepted by controller ai-gateway-controller: InferencePool reconciled successfully",
        ),
        (
            "ResolvedRefs",
            "True",
            "ResolvedRefs",
            "Reference resolution by controller ai-gateway-controller: All references resolved successfully",
        ),
    ]


# ---------------------------------------------------------------------------------------------- Kueue


def workload_of(sandbox: Sandbox, api: k8s.ApiClient, pod: k8s.V1Pod) -> dict[str, Any]:
    name = workload_name_for_pod(pod.metadata.name, pod.metadata.uid)
    return dict(get(sandbox, api, "kueue.x-k8s.io/v1beta2", "Workload", pod.metadata.namespace, name))


def verdict(sandbox: Sandbox, api: k8s.ApiClient, spec: DeploymentSpec) -> dict[str, tuple[str, str, str]]:
    """The conditions of the Workload of the deployment's decode pod; {} while there is no pod or Workload yet."""
    pods = pods_of(api, f"genai-{spec.team_slug}", f"app.kubernetes.io/name={spec.name},llm-d.ai/role=both")
    if not pods:
        return {}
    try:
        return conditions(workload_of(sandbox, api, pods[0]))
    except k8s.ApiException:
        return {}


def decode_pod(api: k8s.ApiClient, spec: DeploymentSpec) -> k8s.V1Pod:
    [pod] = pods_of(api, f"genai-{spec.team_slug}", f"app.kubernetes.io/name={spec.name},llm-d.ai/role=both")
    return pod


def test_kueue_admits_within_nominal_borrows_reclaims_queues_when_full_and_admits_when_freed(
    clean_sandbox: Sandbox, api: k8s.ApiClient
) -> None:
    """Two teams, one L4 GPU each in the cohort; alpha may borrow one more, beta none; a team takes its own GPU back
    from a borrower (the builders' reclaimWithinCohort: Any)."""
    sandbox = clean_sandbox
    apply(sandbox, api, kueue.build_kueue_cluster_objects([L4]))
    first = llmd_spec("alpha", "first", "alpha--first", cluster=KUEUE_CLUSTER)
    second = llmd_spec("alpha", "second", "alpha--second", cluster=KUEUE_CLUSTER)
    late = llmd_spec("beta", "late", "beta--late", cluster=KUEUE_CLUSTER)
    for spec, quota in ((first, team_quota("alpha", 1, 1)), (late, team_quota("beta", 1, 0))):
        apply(sandbox, api, build_team_objects(spec, team_gpu_limit=8)[:1])  # the namespace: no ResourceQuota here
        apply(sandbox, api, kueue.build_kueue_team_objects(KUEUE_CLUSTER, [L4], quota))

    # Within alpha's nominal quota: admitted, ungated, started with the flavor's node labels and tolerations.
    apply(sandbox, api, llmd.build_deployment_objects_llmd(first))
    settle_until(sandbox, lambda: decode_pod(api, first).status.phase == "Running")
    pod = decode_pod(api, first)
    assert pod.metadata.labels["kueue.x-k8s.io/queue-name"] == "genai-portal"
    assert pod.spec.scheduling_gates is None
    assert pod.spec.node_selector == {"nvidia.com/gpu.product": "NVIDIA-L4"}
    assert [t.key for t in pod.spec.tolerations] == ["nvidia.com/gpu"]
    admitted = workload_of(sandbox, api, pod)
    assert admitted["metadata"]["name"].startswith(f"pod-{pod.metadata.name}-")
    assert admitted["status"]["admission"] == {
        "clusterQueue": "genai-alpha",
        "podSetAssignments": [
            {
                "name": "main",
                "flavors": {"nvidia.com/gpu": "nvidia-l4"},
                "resourceUsage": {"nvidia.com/gpu": "1"},
                "count": 1,
            }
        ],
    }
    assert conditions(admitted) == {
        "QuotaReserved": ("True", "QuotaReserved", "Quota reserved in ClusterQueue genai-alpha"),
        "Admitted": ("True", "Admitted", "The workload is admitted"),
    }
    # The endpoint picker carries no queue label: it is not Kueue's, and takes no GPU quota.
    [picker] = pods_of(
        api,
        "genai-alpha",
        "app.kubernetes.io/component=llminferenceservice-router-scheduler,app.kubernetes.io/name=first",
    )
    assert "kueue.x-k8s.io/queue-name" not in picker.metadata.labels

    # Beyond alpha's nominal quota: beta's idle GPU is borrowed through the cohort.
    apply(sandbox, api, llmd.build_deployment_objects_llmd(second))
    settle_until(sandbox, lambda: decode_pod(api, second).status.phase == "Running")
    assert workload_of(sandbox, api, decode_pod(api, second))["status"]["admission"]["clusterQueue"] == "genai-alpha"

    # Beta wants its own GPU back: within its nominal quota, it reclaims it from alpha's borrowed one
    # (reclaimWithinCohort: Any). Alpha's pod is deleted, its Deployment makes a new one, and beta's is admitted.
    borrowed = decode_pod(api, second)
    borrowed_workload = workload_of(sandbox, api, borrowed)
    apply(sandbox, api, build_team_objects(late, team_gpu_limit=8)[:1])
    with sandbox.controllers_paused():
        apply(sandbox, api, llmd.build_deployment_objects_llmd(late))

        def first_verdict() -> dict[str, Any]:
            """Step by step until Kueue has looked at beta's pod (the Deployment and pod come first)."""
            for _ in range(4):
                sandbox.controllers.step()
                pods = pods_of(api, "genai-beta", "app.kubernetes.io/name=late,llm-d.ai/role=both")
                with contextlib.suppress(k8s.ApiException):  # no Workload yet
                    if pods and "QuotaReserved" in conditions(found := workload_of(sandbox, api, pods[0])):
                        return found
            raise AssertionError("Kueue never looked at the pod")

        waiting = first_verdict()
        assert conditions(waiting)["QuotaReserved"] == (
            "False",
            "Pending",
            "couldn't assign flavors to pod set main: insufficient unused quota for nvidia.com/gpu in flavor "
            "nvidia-l4, 1 more needed. Pending the preemption of 1 workload(s)",
        )
    settle_until(sandbox, lambda: decode_pod(api, late).status.phase == "Running")
    assert workload_of(sandbox, api, decode_pod(api, late))["status"]["admission"]["clusterQueue"] == "genai-beta"
    with pytest.raises(k8s.ApiException):  # the preempted pod, and with it its Workload, are gone
        k8s.CoreV1Api(api).read_namespaced_pod(borrowed.metadata.name, "genai-alpha")
    assert borrowed_workload["metadata"]["name"] not in {
        item["metadata"]["name"]
        for item in k8s.CustomObjectsApi(api).list_namespaced_custom_object(
            "kueue.x-k8s.io", "v1beta2", "genai-alpha", "workloads"
        )["items"]
    }

    # Alpha's replacement pod would have to borrow, and the cohort is full: it waits, gated, in Kueue's own words.
    settle_until(sandbox, lambda: "QuotaReserved" in verdict(sandbox, api, second))
    queued = decode_pod(api, second)
    assert queued.metadata.name != borrowed.metadata.name
    assert [gate.name for gate in queued.spec.scheduling_gates] == ["kueue.x-k8s.io/admission"]
    assert queued.status.phase == "Pending"
    assert conditions(workload_of(sandbox, api, queued)) == {
        "QuotaReserved": (
            "False",
            "Pending",  # Kueue v0.19's default; WaitingForQuota only with the UnadmittedWorkloadsObservability gate
            "couldn't assign flavors to pod set main: insufficient unused quota for nvidia.com/gpu in flavor "
            "nvidia-l4, 1 more needed",
        )
    }
    assert "admission" not in workload_of(sandbox, api, queued)["status"]
    settle_until(sandbox, lambda: conditions(service_of(sandbox, api, second))["MainWorkloadReady"][0] == "False")
    assert conditions(service_of(sandbox, api, second))["MainWorkloadReady"] == (
        "False",
        "MinimumReplicasUnavailable",
        "Deployment does not have minimum availability.",
    )
    queue_status = get_cluster(sandbox, api, "ClusterQueue", "genai-alpha")["status"]
    assert queue_status["flavorsReservation"] == [
        {"name": "nvidia-l4", "resources": [{"name": "nvidia.com/gpu", "total": "1", "borrowed": "0"}]}
    ]
    assert (queue_status["admittedWorkloads"], queue_status["pendingWorkloads"]) == (1, 1)
    assert conditions({"status": queue_status}) == {"Active": ("True", "Ready", "Can admit new workloads")}
    local = get(sandbox, api, "kueue.x-k8s.io/v1beta2", "LocalQueue", "genai-alpha", "genai-portal")["status"]
    assert (local["pendingWorkloads"], local["admittedWorkloads"]) == (1, 1)

    # Beta's deployment goes: its pod and Workload with it, and alpha's queued pod is admitted (borrowing) and starts.
    delete_service(api, "genai-beta", "late")
    settle_until(sandbox, lambda: decode_pod(api, second).status.phase == "Running")
    assert workload_of(sandbox, api, decode_pod(api, second))["status"]["admission"]["clusterQueue"] == "genai-alpha"
    assert pods_of(api, "genai-beta", "app.kubernetes.io/name=late") == []
    assert (
        k8s.CustomObjectsApi(api).list_namespaced_custom_object("kueue.x-k8s.io", "v1beta2", "genai-beta", "workloads")[
            "items"
        ]
        == []
    )
    settle_until(sandbox, lambda: conditions(service_of(sandbox, api, second))["MainWorkloadReady"][0] == "True")


def test_a_pod_larger_than_anything_the_queue_could_get_is_reported_as_exceeding_max_quota(
    clean_sandbox: Sandbox, api: k8s.ApiClient
) -> None:
    sandbox = clean_sandbox
    sandbox.controllers.kueue.settings.unadmitted_observability = True  # the granular reasons
    try:
        apply(sandbox, api, kueue.build_kueue_cluster_objects([L4]))
        big = llmd_spec("alpha", "big", "alpha--big", cluster=KUEUE_CLUSTER, gpus_per_replica=4)
        apply(sandbox, api, build_team_objects(big, team_gpu_limit=8)[:1])
        apply(sandbox, api, kueue.build_kueue_team_objects(KUEUE_CLUSTER, [L4], team_quota("alpha", 2, 1)))
        apply(sandbox, api, llmd.build_deployment_objects_llmd(big))
        settle_until(sandbox, lambda: "QuotaReserved" in verdict(sandbox, api, big))
        assert conditions(workload_of(sandbox, api, decode_pod(api, big))) == {
            "QuotaReserved": (
                "False",
                "ExceedsMaxQuota",
                "couldn't assign flavors to pod set main: insufficient quota for nvidia.com/gpu in flavor nvidia-l4, "
                "previously considered podsets requests (0) + current podset request (4) > maximum capacity (2)",
            ),
            "Admitted": ("False", "NoReservation", "The workload has no reservation"),
        }
    finally:
        sandbox.controllers.kueue.settings.unadmitted_observability = False


# ---------------------------------------------------------------------------------------------- the gateway


@pytest.fixture
def gateway_world(clean_sandbox: Sandbox) -> Iterator[SandboxGateway]:
    """The gateway data plane over the emptied sandbox; the seeded Gateway is put back as it was (the policy
    patches it), as test_gateway_dataplane's world does."""
    kind = clean_sandbox.store.kind_by_api_version("gateway.networking.k8s.io/v1", "Gateway")
    assert kind is not None
    seeded = clean_sandbox.store.get(kind, *GATEWAY)
    with SandboxGateway(clean_sandbox.store, gateway=GATEWAY, clock=Clock(window_start())) as running:
        yield running
    clean_sandbox.store.delete(kind, *GATEWAY)
    original = {key: seeded[key] for key in ("apiVersion", "kind", "spec")}
    original["metadata"] = {"name": GATEWAY[1], "namespace": GATEWAY[0]}
    clean_sandbox.store.create(kind, GATEWAY[0], original, manager="installer")


def test_a_route_to_the_pool_is_served_by_its_pods_and_metered_and_limited_like_any_backend(
    clean_sandbox: Sandbox, api: k8s.ApiClient, gateway_world: SandboxGateway
) -> None:
    sandbox, gateway = clean_sandbox, gateway_world
    apply_policy(sandbox, policy_spec(teams=(team("alpha", ALPHA, per_minute=20),)))
    spec = llmd_spec("alpha", "chat", QWEN, served_model_aliases=("alpha--old-chat",), prefill_replicas=1)
    with sandbox.controllers_paused():
        deploy(sandbox, api, spec)
        # KServe has not created the pool yet: the backendRef is invalid, a 500 as for any missing backend.
        assert chat(gateway, QWEN).status == 500
    assert gateway.access_log() == []

    def running(role: str) -> list[k8s.V1Pod]:
        pods = pods_of(api, "genai-alpha", f"app.kubernetes.io/name=chat,llm-d.ai/role={role}")
        return [pod for pod in pods if pod.status.phase == "Running"]

    settle_until(sandbox, lambda: bool(running("decode")) and bool(running("prefill")))
    [pod] = running("decode")  # the pool selects the prefill pod too; the picker sends the request to decode

    answer = call(
        gateway,
        CHAT,
        {"model": QWEN, "messages": HELLO, "max_tokens": 5},
        headers={"x-llm-d-inference-objective": llmd.objective_name(spec)},
    )
    assert answer.status == 200, answer.text()
    assert answer.json()["model"] == QWEN
    [upstream] = gateway.upstream_calls()
    assert (upstream.host, upstream.port, upstream.path) == (pod.status.pod_ip, 8000, "/v1/chat/completions")
    assert upstream.headers["x-llm-d-inference-objective"] == "chat"  # for the endpoint picker
    assert upstream.body["model"] == QWEN
    [record] = gateway.access_log()
    assert {key: record[key] for key in record if key not in ("request_id", "start_time", "duration_ms")} == {
        "event.type": "ai.gateway.llm.usage.v1",
        "credential_id": ALPHA.client_id,
        "route": "genai-gateway/alpha--chat",
        "backend": "genai-gateway/chat-inference-pool",
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
        "time_to_first_token_ms": 0,
        "upstream_service_time_ms": None,
        "path": CHAT,
    }

    # A retired served name reaches the pool too; the endpoint picker rewrites it for vLLM (InferenceModelRewrite).
    # Its 9 + 2 tokens take the team over its 20 a minute: it completes, and the next request is refused.
    old = chat(gateway, "alpha--old-chat", max_tokens=2)
    assert (old.status, old.json()["model"]) == (200, QWEN)
    assert gateway.upstream_calls()[-1].body["model"] == QWEN
    assert {upstream.host for upstream in gateway.upstream_calls()} == {pod.status.pod_ip}  # never the prefill pod
    assert [(r["model_requested"], r["model_response"], r["total_tokens"]) for r in gateway.access_log()] == [
        (QWEN, QWEN, 14),
        ("alpha--old-chat", QWEN, 11),
    ]
    assert (chat(gateway, QWEN).status, len(gateway.upstream_calls())) == (429, 2)

    # Stopped: the pool stays, its pods go, and the gateway has no healthy upstream (the limit's window moved on).
    k8s.CustomObjectsApi(api).patch_namespaced_custom_object(
        "serving.kserve.io",
        "v1alpha2",
        "genai-alpha",
        "llminferenceservices",
        "chat",
        {"metadata": {"annotations": {"serving.kserve.io/stop": "true"}}},
    )
    settle_until(sandbox, lambda: not pods_of(api, "genai-alpha", "kserve.io/component=workload"))
    assert conditions(service_of(sandbox, api, spec))["Ready"] == ("False", "Stopped", "Service is stopped")
    gateway.clock.advance(60)  # type: ignore[attr-defined]
    answer = chat(gateway, QWEN)
    assert (answer.status, answer.text()) == (503, "no healthy upstream")


def test_the_pool_has_no_parent_with_the_route_in_the_gateway_namespace_and_that_is_harmless(
    clean_sandbox: Sandbox, api: k8s.ApiClient, gateway_world: SandboxGateway
) -> None:
    """As a platform engineer runs it: the AIGatewayRoute stays in the gateway's namespace (the shared Gateway admits
    routes from its own namespace only) and reaches the pool in the team's namespace through the ReferenceGrant.
    AI Gateway v1.1.0 writes a pool's `status.parents` only from routes in the pool's own namespace
    (internal/controller/inference_pool.go gatewayReferencesInferencePool), so this pool never gets a parent: the
    sandbox reproduces that. It is status only: the route is accepted, requests reach the pool's pods, and the
    portal's status is Ready, because neither routing (ai_gateway_route.go, under the grant) nor the portal's status
    (status.derive_llmd_status) reads the pool's parents; KServe's own Ready waits for a gateway it manages either
    way (llmd.py module docstring)."""
    sandbox, gateway = clean_sandbox, gateway_world
    apply_policy(sandbox, policy_spec(teams=(team("alpha", ALPHA, per_minute=1000),)))
    spec = llmd_spec("alpha", "chat", QWEN)
    deploy(sandbox, api, spec)

    def route() -> Any:
        return get(sandbox, api, "aigateway.envoyproxy.io/v1beta1", "AIGatewayRoute", "genai-gateway", "alpha--chat")

    def pool() -> Any:
        return get(
            sandbox, api, "inference.networking.k8s.io/v1", "InferencePool", "genai-alpha", "chat-inference-pool"
        )

    settle_until(
        sandbox,
        lambda: (
            conditions(route()).get("Accepted", ("",))[0] == "True"
            and conditions(service_of(sandbox, api, spec)).get("WorkloadsReady", ("",))[0] == "True"
        ),
    )
    assert route()["metadata"]["namespace"] != pool()["metadata"]["namespace"]
    assert (pool().get("status") or {}).get("parents") in (None, [])  # the AI Gateway v1.1.0 quirk

    answer = chat(gateway, QWEN)
    assert answer.status == 200, answer.text()
    [decode] = pods_of(api, "genai-alpha", "app.kubernetes.io/name=chat,llm-d.ai/role=both")
    assert [upstream.host for upstream in gateway.upstream_calls()] == [decode.status.pod_ip]

    status = derive_llmd_status(
        llm_inference_service=service_of(sandbox, api, spec),
        inference_pool=pool(),
        route=route(),
        endpoint_base="http://gateway.example",
        served_model_name=QWEN,
        ready_replicas=1,
    )
    assert (status.phase, status.message) == ("Ready", f"serving '{QWEN}' through the gateway (llm-d)")
    assert "PoolAccepted" not in {condition["type"] for condition in status.conditions}


# ---------------------------------------------------------------------------------------------- Kueue's webhook


def test_kueues_deployment_webhook_refuses_a_queue_name_change_with_ready_pods_and_any_removal(
    clean_sandbox: Sandbox, api: k8s.ApiClient
) -> None:
    """What Kueue v0.19.2's validating webhook for Deployments refuses (deployment_webhook.go ValidateUpdate), with
    its message and status: a queue-name label added to or changed on a Deployment with a ready replica, and the
    label removed even with none ready. A Deployment with none ready may get one, or change it."""
    sandbox = clean_sandbox
    k8s.CoreV1Api(api).create_namespace({"metadata": {"name": "genai-alpha"}})
    apps = k8s.AppsV1Api(api)

    def deployment(name: str, replicas: int, labels: dict[str, str]) -> dict[str, Any]:
        return {
            "metadata": {"name": name, "labels": {"app": name, **labels}},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": "main", "image": "vllm/vllm-openai"}]},
                },
            },
        }

    def refusal(name: str, labels: dict[str, str | None]) -> tuple[int, str, str]:
        with pytest.raises(k8s.ApiException) as refused:
            apps.patch_namespaced_deployment(name, "genai-alpha", {"metadata": {"labels": labels}})
        body = json.loads(refused.value.body)
        return refused.value.status, body["reason"], body["message"]

    apps.create_namespaced_deployment("genai-alpha", deployment("serving", 1, {}))
    settle_until(sandbox, lambda: apps.read_namespaced_deployment("serving", "genai-alpha").status.ready_replicas == 1)
    assert refusal("serving", {"kueue.x-k8s.io/queue-name": "genai-portal"}) == (
        403,
        "Forbidden",
        'admission webhook "vdeployment.kb.io" denied the request: metadata.labels[kueue.x-k8s.io/queue-name]: '
        'Invalid value: "genai-portal": field is immutable',
    )
    assert "kueue.x-k8s.io/queue-name" not in apps.read_namespaced_deployment("serving", "genai-alpha").metadata.labels

    apps.create_namespaced_deployment("genai-alpha", deployment("idle", 0, {"kueue.x-k8s.io/queue-name": "one"}))
    assert refusal("idle", {"kueue.x-k8s.io/queue-name": None}) == (  # removed, though nothing is ready: refused
        403,
        "Forbidden",
        'admission webhook "vdeployment.kb.io" denied the request: metadata.labels[kueue.x-k8s.io/queue-name]: '
        'Invalid value: "": field is immutable',
    )
    apps.patch_namespaced_deployment(
        "idle", "genai-alpha", {"metadata": {"labels": {"kueue.x-k8s.io/queue-name": "two"}}}
    )
    labels = apps.read_namespaced_deployment("idle", "genai-alpha").metadata.labels
    assert labels["kueue.x-k8s.io/queue-name"] == "two"
