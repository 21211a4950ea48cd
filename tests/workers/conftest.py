"""Kubernetes fixtures: the sandbox API server (one per session), or a real cluster for `k8s_contract` tests.

`KUBE_TEST_KUBECONFIG=/path/to/kubeconfig pytest -m k8s_contract` runs the wire-contract tests against a real
cluster too; they install the CRDs they need from ../shared/crds there.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from portal.clusters.contracts import ClusterContract
from portal.deployments.models import Deployment
from portal.tenancy.models import TeamGpuQuota
from tests.conftest import RoleMatrix
from tests.factories import SelfHostedVersionFactory
from tests.sandbox_cluster import register_sandbox_cluster
from workers.provisioning.reconciler import ReconcileResult, reconcile_deployment
from workers.sandbox.server import Sandbox
from workers.sandbox.validation import default_crd_dir


@pytest.fixture(scope="session")
def crd_dir() -> Path:
    found = default_crd_dir()
    if found is None:
        pytest.skip("no CRD directory (../shared/crds or PORTAL_CRD_DIR)")
    return found


@pytest.fixture(scope="session")
def sandbox() -> Iterator[Sandbox]:
    server = Sandbox(crd_dir=default_crd_dir(), ready_delay=0.0, tick=0.02).start()
    yield server
    server.stop()


@pytest.fixture(autouse=False)
def clean_sandbox(sandbox: Sandbox) -> Iterator[Sandbox]:
    sandbox.reset()
    yield sandbox
    sandbox.clear_faults()


def sandbox_api_client(sandbox: Sandbox) -> k8s.ApiClient:
    configuration = k8s.Configuration()
    configuration.host = sandbox.url
    configuration.api_key = {"authorization": "Bearer sandbox-token"}
    return k8s.ApiClient(configuration)


def crd_not_served(api_client: k8s.ApiClient, name: str) -> str:
    """What keeps a CustomResourceDefinition from being usable yet ("" once it is): Established True, and its
    resource listed in the discovery of each served version. Read raw: the typed client model takes seconds to build
    a 2 MB CRD."""
    response = k8s.ApiextensionsV1Api(api_client).read_custom_resource_definition(name, _preload_content=False)
    crd = json.loads(response.data)
    conditions = {item.get("type"): item.get("status") for item in (crd.get("status") or {}).get("conditions") or []}
    if conditions.get("Established") != "True":
        return f"not Established (conditions: {conditions})"
    group, plural = crd["spec"]["group"], crd["spec"]["names"]["plural"]
    for version in [item["name"] for item in crd["spec"]["versions"] if item.get("served")]:
        try:
            resources = k8s.CustomObjectsApi(api_client).get_api_resources(group, version).resources
        except k8s.ApiException as error:
            if error.status != 404:
                raise
            resources = []
        if plural not in {resource.name for resource in resources}:
            return f"{plural} not in the discovery of {group}/{version}"
    return ""


def wait_until_crds_served(api_client: k8s.ApiClient, names: Iterable[str], *, timeout: float = 60.0) -> None:
    """Block until every named CRD is Established and discoverable. Creating a CRD is not enough to use it: a real API
    server serves it only once its names are accepted and it is Established, and lists it in discovery after that
    (kubernetes/website#6660: "it might take a second or two for the endpoint to be created"; kubernetes/kubernetes
    #113159); the sandbox waits its `crd_establish_delay`. Works against both."""
    deadline = time.monotonic() + timeout
    for name in names:
        while missing := crd_not_served(api_client, name):
            if time.monotonic() > deadline:
                raise TimeoutError(f"CustomResourceDefinition {name} is not served after {timeout:.0f} s: {missing}")
            time.sleep(0.1)


def remove_from_crd_schema(api_client: k8s.ApiClient, name: str, field: str) -> None:
    """Make a CRD on the cluster as a release without `field` (".spec.a.b", objects only) has it: the field is
    removed from every version's schema with a JSON patch through the API."""
    response = k8s.ApiextensionsV1Api(api_client).read_custom_resource_definition(name, _preload_content=False)
    versions = json.loads(response.data)["spec"]["versions"]
    pointer = "".join(f"/properties/{part}" for part in field.strip(".").split("."))
    patch = [
        {"op": "remove", "path": f"/spec/versions/{index}/schema/openAPIV3Schema{pointer}"}
        for index in range(len(versions))
    ]
    response = k8s.ApiextensionsV1Api(api_client).patch_custom_resource_definition(name, patch, _preload_content=False)
    response.read()  # the 2 MB answer is not deserialized; reading it frees the connection


CONTRACT_CRDS = (
    "kserve/serving.kserve.io_inferenceservices.yaml",
    "envoy-ai-gateway/aigateway.envoyproxy.io_aigatewayroutes.yaml",
    "envoy-gateway/gateway.envoyproxy.io_backends.yaml",
)


@pytest.fixture(scope="session")
def contract_api(sandbox: Sandbox) -> Iterator[tuple[str, k8s.ApiClient]]:
    """('sandbox' | 'cluster', ApiClient): a real cluster when KUBE_TEST_KUBECONFIG is set, else the sandbox."""
    kubeconfig = os.environ.get("KUBE_TEST_KUBECONFIG")
    if not kubeconfig:
        yield "sandbox", sandbox_api_client(sandbox)
        return
    api_client = k8s_config.new_client_from_config(config_file=kubeconfig)
    crds = default_crd_dir()
    if crds is not None:
        extensions = k8s.ApiextensionsV1Api(api_client)
        names: list[str] = []
        for relative in CONTRACT_CRDS:
            document: dict[str, Any] = yaml.load((crds / relative).read_text(), Loader=yaml.CSafeLoader)
            names.append(document["metadata"]["name"])
            try:
                extensions.create_custom_resource_definition(document)
            except k8s.ApiException as error:
                if error.status != 409:
                    raise
        # A fresh cluster answers 404 to a CRD's objects for a moment after its creation.
        wait_until_crds_served(api_client, names)
    yield "cluster", api_client


@pytest.fixture
def namespace(contract_api: tuple[str, k8s.ApiClient]) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:10]}"
    core = k8s.CoreV1Api(contract_api[1])
    core.create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    yield name
    with contextlib.suppress(k8s.ApiException):
        core.delete_namespace(name)


# A cluster as the pure builders see it (no database): the gateway tests' common one.
GPU_EU_CLUSTER = ClusterContract(
    cluster_id=1,
    name="gpu-eu",
    region="eu-west",
    gateway_namespace="genai-gateway",
    gateway_name="ai-gateway",
    deployment_mode="Standard",
    autoscaler_class="keda",
    namespace_prefix="genai-",
    apply_gateway_bootstrap=True,
)
ISVC = "serving.kserve.io/v1beta1"
NAMESPACE = "genai-alpha"  # the cluster's default namespace prefix, then the team


@pytest.fixture
def world(matrix: RoleMatrix, clean_sandbox: Sandbox) -> Iterator[tuple[RoleMatrix, Sandbox]]:
    register_sandbox_cluster(clean_sandbox, name=f"sandbox-{id(matrix) % 100000}", l4_gpus=16)
    SelfHostedVersionFactory(model__slug="qwen", version="v1", gpus_per_replica=1, min_gpu_memory_gb=16)
    TeamGpuQuota.objects.create(quota=matrix.team.quota, accelerator_type="nvidia-l4", gpus=4)
    return matrix, clean_sandbox


def deploy(matrix: RoleMatrix, name: str = "chat", **overrides: object) -> Deployment:
    body = {"name": name, "model": "qwen", "accelerator_type": "nvidia-l4", "max_replicas": 2} | overrides
    response = matrix.client("developer").post("/api/v1/teams/alpha/deployments", body, format="json")
    assert response.status_code == 201, response.content
    return Deployment.objects.get(team=matrix.team, name=name)


def reconcile_until(deployment_id: int, sandbox: Sandbox, phase: str, attempts: int = 20) -> ReconcileResult:
    result = reconcile_deployment(deployment_id)
    for _ in range(attempts):
        if result.phase == phase:
            return result
        sandbox.settle()
        result = reconcile_deployment(deployment_id)
    raise AssertionError(f"never reached {phase}: last {result}")
