"""The fit endpoint (who may ask, exact figures, ranked placements, break-even) and architectures entered by admins
or read from a pasted config.json."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from catalog.models import CatalogModel, ModelVersion
from portal.core.models import AuditEvent
from portal.tenancy.models import TeamGpuQuota
from tests.catalog.test_sizing import LLAMA_8B_CONFIG, LLAMA_70B
from tests.conftest import ROLES, RoleMatrix, assert_problem
from tests.factories import AcceleratorPoolFactory, ManagedVersionFactory, PriceFactory, SelfHostedVersionFactory

pytestmark = pytest.mark.django_db

FIT = "/api/v1/catalog/models/llama-70b/versions/v1/fit"


@pytest.fixture
def sized(matrix: RoleMatrix) -> RoleMatrix:
    SelfHostedVersionFactory(
        model__slug="llama-70b",
        version="v1",
        gpus_per_replica=4,
        min_gpu_memory_gb=80,
        runtime_args=["--max_model_len=8192"],
        architecture=LLAMA_70B.to_dict(),
    )
    SelfHostedVersionFactory(model__slug="mystery", version="v1")
    AcceleratorPoolFactory(cluster__name="gpu-eu", gpu_count=8, gpu_memory_gb=24, hourly_price_per_gpu=Decimal("0.80"))
    AcceleratorPoolFactory(
        cluster__name="gpu-us",
        accelerator_type="nvidia-h100-80gb",
        gpu_product="NVIDIA-H100-80GB-HBM3",
        gpu_count=8,
        gpu_memory_gb=80,
        hourly_price_per_gpu=Decimal("4.00"),
    )
    TeamGpuQuota.objects.create(quota=matrix.team.quota, accelerator_type="nvidia-l4", gpus=8)
    mini = PriceFactory(model__slug="gpt-4o-mini", usage_type="input", price_per_million=Decimal("0.15")).model
    PriceFactory(model=mini, usage_type="output", price_per_million=Decimal("0.60"))
    ManagedVersionFactory(model=mini, version="v1")
    return matrix


@pytest.mark.parametrize("who", ROLES)
def test_fit_matrix(sized: RoleMatrix, who: str) -> None:
    client = sized.client(who)
    for body, expected in (
        ({"team": "alpha"}, {"anonymous": 401, "outsider": 404}.get(who, 200)),
        ({}, {"anonymous": 401}.get(who, 200)),
    ):
        response = client.post(FIT, body, format="json")
        assert response.status_code == expected, response.content
        if expected >= 400:
            assert_problem(response, expected)


def test_the_cheapest_placements_the_team_may_use_with_exact_figures_and_break_even(sized: RoleMatrix) -> None:
    body = sized.client("developer").post(FIT, {"team": "alpha"}, format="json").json()
    assert (body["context_length"], body["concurrency"], body["kv_cache_dtype"]) == (8192, 1, "auto")
    assert body["weight_bytes"] == 141_107_412_992
    assert body["kv_cache_bytes_per_token"] == 327_680
    assert body["kv_cache_bytes"] == 327_680 * 8192
    assert body["fits"] is True
    assert body["evaluated"] == []
    (placement,) = body["placements"]  # the team may use L4s only
    assert placement["cluster"] == "gpu-eu"
    assert (placement["accelerator_type"], placement["gpus_per_replica"], placement["tensor_parallel_size"]) == (
        "nvidia-l4",
        8,
        8,
    )
    assert (placement["monthly_cost"], placement["currency"]) == ("4672.00", "USD")
    assert placement["fit"]["weight_bytes_per_gpu"] == 17_638_426_624
    assert placement["fit"]["kv_cache_bytes_per_gpu"] == 40_960 * 8192
    assert placement["fit"]["margin_bytes_per_gpu"] == 19_452_516_352 - 17_638_426_624 - 335_544_320
    assert placement["break_even"] == [
        {"model": "gpt-4o-mini", "blended_price_per_million": "0.262500", "monthly_tokens": 17_798_095_239}
    ]


def test_every_pool_ranked_and_one_pool_at_a_gpu_count(sized: RoleMatrix) -> None:
    client = sized.client("viewer")
    ranked = client.post(FIT, {}, format="json").json()["placements"]
    assert [(p["accelerator_type"], p["gpus_per_replica"], p["monthly_cost"]) for p in ranked] == [
        ("nvidia-l4", 8, "4672.00"),
        ("nvidia-h100-80gb", 4, "11680.00"),
    ]
    body = client.post(
        FIT, {"accelerator_type": "nvidia-l4", "gpus_per_replica": 1, "context_length": 32768}, format="json"
    ).json()
    assert body["fits"] is False
    (one_l4,) = body["evaluated"]
    assert one_l4["fit"]["fits"] is False
    assert one_l4["fit"]["margin_bytes_per_gpu"] == 19_452_516_352 - 141_107_412_992 - 327_680 * 32768
    assert one_l4["monthly_cost"] == "584.00"
    busy = client.post(FIT, {"concurrency": 64, "context_length": 32768, "kv_cache_dtype": "fp8"}, format="json")
    assert busy.json()["kv_cache_bytes_per_token"] == 163_840
    lean = client.post(FIT, {"gpus_per_replica": 1, "gpu_memory_utilization_percent": 95}, format="json").json()
    assert lean["gpu_memory_utilization_percent"] == 95
    assert lean["evaluated"][0]["fit"]["usable_bytes_per_gpu"] == 24 * 10**9 * 95 // 100 - 2**31


def test_sizing_needs_an_architecture_and_a_self_hosted_model(sized: RoleMatrix) -> None:
    client = sized.client("developer")
    assert_problem(
        client.post("/api/v1/catalog/models/mystery/versions/v1/fit", {}, format="json"), 409, "architecture_unknown"
    )
    problem = assert_problem(client.post("/api/v1/catalog/models/gpt-4o-mini/versions/v1/fit", {}, format="json"), 400)
    assert problem["errors"][0]["code"] == "managed_model"
    problem = assert_problem(client.post(FIT, {"gpus": 2}, format="json"), 400)
    assert problem["errors"][0]["field"] == "gpus"


def test_an_admin_pastes_a_config_json_and_the_version_carries_its_architecture_and_sizing(sized: RoleMatrix) -> None:
    client = sized.client("platform_admin")
    body = {
        "version": "v2",
        "served_model_name": "llama-8b-v2",
        "artifact_uri": "hf://meta-llama/Llama-3.1-8B-Instruct",
        "gpus_per_replica": 1,
        "hf_config": json.dumps(LLAMA_8B_CONFIG),
    }
    response = client.post("/api/v1/catalog/models/llama-70b/versions", body, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["architecture"]["parameters"] == 8_030_261_248
    assert response.json()["sizing"] == {
        "weight_bytes": 16_060_522_496,
        "kv_cache_bytes_per_token": 131_072,
        "kv_cache_bytes_per_token_fp8": 65_536,
    }
    stored = ModelVersion.objects.get(version="v2").architecture
    assert (stored["attention"], stored["kv_heads"], stored["head_dim"]) == ("gqa", 8, 128)


def test_an_unknown_architecture_is_refused_naming_the_missing_fields(sized: RoleMatrix) -> None:
    client = sized.client("platform_admin")
    audits = AuditEvent.objects.count()
    problem = assert_problem(
        client.patch(
            "/api/v1/catalog/models/mystery/versions/v1",
            {"hf_config": {"model_type": "mystery", "hidden_size": 1024, "torch_dtype": "bfloat16"}},
            format="json",
        ),
        400,
    )
    assert {entry["field"] for entry in problem["errors"]} == {
        "hf_config.num_hidden_layers",
        "hf_config.num_attention_heads",
        "hf_config.max_position_embeddings",
    }
    assert "num_hidden_layers" in problem["detail"]
    entered = LLAMA_70B.to_dict() | {"attention": "mla"}
    problem = assert_problem(
        client.patch("/api/v1/catalog/models/mystery/versions/v1", {"architecture": entered}, format="json"), 400
    )
    assert {entry["field"] for entry in problem["errors"]} == {
        "architecture.kv_lora_rank",
        "architecture.qk_rope_head_dim",
    }
    assert ModelVersion.objects.get(model__slug="mystery").architecture == {}
    assert AuditEvent.objects.count() == audits
    assert CatalogModel.objects.get(slug="mystery")


def test_model_lists_carry_the_sizing_of_the_default_version(sized: RoleMatrix) -> None:
    client = sized.client("viewer")
    models = {item["slug"]: item for item in client.get("/api/v1/catalog/models?page_size=200").json()["results"]}
    assert models["llama-70b"]["sizing"] == {
        "version": "v1",
        "parameters": 70_553_706_496,
        "weight_dtype": "bf16",
        "attention": "gqa",
        "max_context": 131_072,
        "weight_bytes": 141_107_412_992,
        "kv_cache_bytes_per_token": 327_680,
    }
    assert models["gpt-4o-mini"]["sizing"] is None
    assert models["mystery"]["sizing"] is None


def test_a_config_json_file_is_read_by_a_command(sized: RoleMatrix, tmp_path: object) -> None:
    from pathlib import Path

    from django.core.management import CommandError, call_command

    path = Path(str(tmp_path)) / "config.json"
    path.write_text(json.dumps(LLAMA_8B_CONFIG))
    call_command("read_hf_config", "mystery", "v1", str(path), verbosity=0)
    assert ModelVersion.objects.get(model__slug="mystery").architecture["parameters"] == 8_030_261_248
    path.write_text(json.dumps({"model_type": "deepseek_v3", "num_hidden_layers": 61}))
    with pytest.raises(CommandError, match=r"hf_config\.hidden_size: is missing"):
        call_command("read_hf_config", "mystery", "v1", str(path), verbosity=0)
    assert ModelVersion.objects.get(model__slug="mystery").architecture["layers"] == 32


def test_a_fit_retried_with_its_idempotency_key_answers_the_same(sized: RoleMatrix) -> None:
    client = sized.client("developer")
    first = client.post(FIT, {"team": "alpha"}, format="json", HTTP_IDEMPOTENCY_KEY="fit-1")
    again = client.post(FIT, {"team": "alpha"}, format="json", HTTP_IDEMPOTENCY_KEY="fit-1")
    assert (first.status_code, again.status_code) == (200, 200)
    assert again.json() == first.json()
