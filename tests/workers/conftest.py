"""Kubernetes fixtures: the sandbox API server (one per session), or a real cluster for `k8s_contract` tests.

`KUBE_TEST_KUBECONFIG=/path/to/kubeconfig pytest -m k8s_contract` runs the wire-contract tests against a real
cluster too; they install the CRDs they need from ../shared/crds there.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from portal.clusters.services import accelerator_pool_upsert, cluster_register
from portal.deployments.models import Deployment
from portal.tenancy.models import TeamGpuQuota
from tests.conftest import RoleMatrix
from tests.factories import SelfHostedVersionFactory
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
        for relative in CONTRACT_CRDS:
            document: dict[str, Any] = yaml.load((crds / relative).read_text(), Loader=yaml.CSafeLoader)
            try:
                extensions.create_custom_resource_definition(document)
            except k8s.ApiException as error:
                if error.status != 409:
                    raise
    yield "cluster", api_client


@pytest.fixture
def namespace(contract_api: tuple[str, k8s.ApiClient]) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:10]}"
    core = k8s.CoreV1Api(contract_api[1])
    core.create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    yield name
    with contextlib.suppress(k8s.ApiException):
        core.delete_namespace(name)


ISVC = "serving.kserve.io/v1beta1"
NAMESPACE = "genai-alpha"  # the cluster's default namespace prefix, then the team


@pytest.fixture
def world(matrix: RoleMatrix, clean_sandbox: Sandbox) -> Iterator[tuple[RoleMatrix, Sandbox]]:
    cluster = cluster_register(
        actor=None,
        name=f"sandbox-{id(matrix) % 100000}",
        api_server=clean_sandbox.url,
        auth_kind="token",
        token="sandbox-token",
        region="eu-west",
        gateway_namespace="genai-gateway",
        gateway_name="ai-gateway",
        deployment_mode="Standard",
        autoscaler_class="keda",
    )
    accelerator_pool_upsert(
        actor=None,
        cluster=cluster,
        accelerator_type="nvidia-l4",
        values={
            "gpu_product": "NVIDIA-L4",
            "node_selector": {"nvidia.com/gpu.product": "NVIDIA-L4"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "gpu_count": 16,
            "gpu_memory_gb": 24,
            "hourly_price_per_gpu": Decimal("0.80"),
        },
    )
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
