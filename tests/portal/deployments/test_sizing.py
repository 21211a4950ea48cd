"""Deploying uses sizing: a placement that cannot hold the model is refused with the shortfall and the cheapest
placement that fits; GPUs per replica come from the plan and the quota counts them; the model server's flags come
from the plan unless the team set them."""

from __future__ import annotations

from decimal import Decimal

import pytest

from portal.core.models import AuditEvent
from portal.deployments.models import Deployment
from portal.tenancy.models import TeamGpuQuota
from tests.catalog.test_sizing import LLAMA_8B, LLAMA_70B
from tests.conftest import RoleMatrix, assert_problem
from tests.factories import AcceleratorPoolFactory, SelfHostedVersionFactory
from workers.provisioning.manifests.deployment import build_inference_service
from workers.provisioning.reconciler import deployment_spec

pytestmark = pytest.mark.django_db

DEPLOYMENTS = "/api/v1/teams/alpha/deployments"


@pytest.fixture
def sized(matrix: RoleMatrix) -> RoleMatrix:
    AcceleratorPoolFactory(cluster__name="gpu-eu", gpu_count=4, gpu_memory_gb=24, hourly_price_per_gpu=Decimal("0.80"))
    AcceleratorPoolFactory(
        cluster__name="gpu-us",
        accelerator_type="nvidia-h100-80gb",
        gpu_product="NVIDIA-H100-80GB-HBM3",
        gpu_count=8,
        gpu_memory_gb=80,
        hourly_price_per_gpu=Decimal("4.00"),
    )
    SelfHostedVersionFactory(
        model__slug="llama-70b",
        version="v1",
        gpus_per_replica=4,
        min_gpu_memory_gb=80,
        runtime_args=["--max_model_len=8192", "--dtype=bfloat16", "--tensor_parallel_size=4"],
        architecture=LLAMA_70B.to_dict(),
    )
    SelfHostedVersionFactory(
        model__slug="llama-8b",
        version="v1",
        gpus_per_replica=1,
        runtime_args=["--max_model_len=16384", "--dtype=bfloat16"],
        architecture=LLAMA_8B.to_dict(),
    )
    TeamGpuQuota.objects.create(quota=matrix.team.quota, accelerator_type="nvidia-l4", gpus=4)
    TeamGpuQuota.objects.create(quota=matrix.team.quota, accelerator_type="nvidia-h100-80gb", gpus=4)
    return matrix


def _create(client, **body):  # type: ignore[no-untyped-def]
    return client.post(DEPLOYMENTS, {"name": "chat", "model": "llama-70b"} | body, format="json")


def test_70b_on_one_l4_is_refused_with_the_shortfall_and_the_cheapest_placement_that_fits(sized: RoleMatrix) -> None:
    client = sized.client("developer")
    audits = AuditEvent.objects.count()
    problem = assert_problem(
        _create(client, accelerator_type="nvidia-l4", gpus_per_replica=1), 409, "model_does_not_fit"
    )
    assert problem["detail"] == (
        "llama-70b@v1 needs 141.1 GB of weights (bf16) and 2.7 GB of KV cache for 8,192 tokens (auto); "
        "1 x nvidia-l4 (24 GB, 19.5 GB usable each) on gpu-eu cannot hold it: short by 124.3 GB per GPU. "
        "Cheapest placement that fits: 4 x nvidia-h100-80gb on gpu-us (tensor parallel 4), 11680.00 USD a month."
    )
    assert problem["weight_bytes"] == 141_107_412_992
    assert problem["kv_cache_bytes"] == 327_680 * 8192
    assert problem["shortfall_bytes_per_gpu"] == 141_107_412_992 + 327_680 * 8192 - 19_452_516_352
    assert problem["suggestion"] == {
        "cluster": "gpu-us",
        "accelerator_type": "nvidia-h100-80gb",
        "gpus_per_replica": 4,
        "tensor_parallel_size": 4,
        "monthly_cost": "11680.00",
        "currency": "USD",
    }
    assert not Deployment.objects.exists()
    assert AuditEvent.objects.count() == audits


def test_without_a_gpu_count_the_closest_attempt_is_the_whole_pool(sized: RoleMatrix) -> None:
    problem = assert_problem(
        _create(sized.client("developer"), accelerator_type="nvidia-l4"), 409, "model_does_not_fit"
    )
    assert "4 x nvidia-l4 (24 GB, 19.5 GB usable each) on gpu-eu cannot hold it: short by 16.5 GB per GPU" in str(
        problem["detail"]
    )
    assert problem["needed_bytes_per_gpu"] == 35_276_853_248 + 81_920 * 8192


def test_the_plan_chooses_the_gpus_and_the_quota_counts_them(sized: RoleMatrix) -> None:
    client = sized.client("developer")
    problem = assert_problem(_create(client, accelerator_type="nvidia-h100-80gb", max_replicas=2), 409)
    assert (problem["code"], problem["requested"], problem["limit"]) == ("gpu_quota_exceeded", 8, 4)
    created = _create(client, accelerator_type="nvidia-h100-80gb")
    assert created.status_code == 201, created.content
    assert created.json()["gpus_per_replica"] == 4
    small = _create(client, name="small", model="llama-8b", accelerator_type="nvidia-l4")
    assert small.json()["gpus_per_replica"] == 1


def test_runtime_args_come_from_the_plan_unless_the_team_set_them(sized: RoleMatrix) -> None:
    client = sized.client("developer")
    assert _create(client, accelerator_type="nvidia-h100-80gb").status_code == 201
    body = {
        "name": "small",
        "model": "llama-8b",
        "accelerator_type": "nvidia-l4",
        "runtime_args": ["--kv_cache_dtype=fp8"],
    }
    assert client.post(DEPLOYMENTS, body, format="json").status_code == 201

    def args(name: str) -> list[str]:
        spec = deployment_spec(Deployment.objects.get(name=name).pk)
        assert spec is not None
        return list(build_inference_service(spec)["spec"]["predictor"]["model"]["args"])

    assert args("chat") == [
        "--model_name=alpha--chat",
        "--dtype=bfloat16",
        "--max_model_len=8192",
        "--tensor_parallel_size=4",
        "--gpu_memory_utilization=0.90",
        "--kv_cache_dtype=auto",
    ]
    assert args("small") == [
        "--model_name=alpha--small",
        "--dtype=bfloat16",
        "--max_model_len=16384",
        "--tensor_parallel_size=1",
        "--gpu_memory_utilization=0.90",
        "--kv_cache_dtype=fp8",
    ]


def test_an_update_that_no_longer_fits_is_refused_and_changes_nothing(sized: RoleMatrix) -> None:
    client = sized.client("developer")
    assert (
        client.post(
            DEPLOYMENTS, {"name": "small", "model": "llama-8b", "accelerator_type": "nvidia-l4"}, format="json"
        ).status_code
        == 201
    )
    problem = assert_problem(
        client.patch(f"{DEPLOYMENTS}/small", {"runtime_args": ["--max_model_len=131072"]}, format="json"),
        409,
        "model_does_not_fit",
    )
    assert "1 x nvidia-l4" in str(problem["detail"])
    assert problem["suggestion"]["gpus_per_replica"] == 2  # type: ignore[index]
    assert problem["suggestion"]["monthly_cost"] == "1168.00"  # type: ignore[index]
    assert str(problem["detail"]).endswith("(create a new deployment there).")
    deployment = Deployment.objects.get(name="small")
    assert (deployment.generation, deployment.runtime_args) == (1, [])
    fp8 = client.patch(
        f"{DEPLOYMENTS}/small", {"runtime_args": ["--max_model_len=32768", "--kv_cache_dtype=fp8"]}, format="json"
    )
    assert fp8.status_code == 200, fp8.content  # 16.06 GB + 32,768 x 65,536 bytes fits one L4
