"""The sizing engine against figures computed by hand (catalog/sizing.py documents each formula)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from catalog import sizing
from catalog.sizing import Architecture, ArchitectureError, EngineSettings, ManagedPrice, PoolOffer

LLAMA_8B_CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "max_position_embeddings": 131072,
    "vocab_size": 128256,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
}
QWEN_7B_CONFIG = {
    "model_type": "qwen2",
    "hidden_size": 3584,
    "intermediate_size": 18944,
    "num_hidden_layers": 28,
    "num_attention_heads": 28,
    "num_key_value_heads": 4,
    "max_position_embeddings": 32768,
    "max_window_layers": 28,
    "sliding_window": 131072,
    "use_sliding_window": False,
    "vocab_size": 152064,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
}
LLAMA_70B_CONFIG = LLAMA_8B_CONFIG | {
    "hidden_size": 8192,
    "intermediate_size": 28672,
    "num_hidden_layers": 80,
    "num_attention_heads": 64,
}
DEEPSEEK_V3_CONFIG = {
    "model_type": "deepseek_v3",
    "hidden_size": 7168,
    "num_hidden_layers": 61,
    "num_attention_heads": 128,
    "num_key_value_heads": 128,
    "kv_lora_rank": 512,
    "q_lora_rank": 1536,
    "qk_rope_head_dim": 64,
    "qk_nope_head_dim": 128,
    "v_head_dim": 128,
    "max_position_embeddings": 163840,
    "torch_dtype": "bfloat16",
    "quantization_config": {"quant_method": "fp8", "fmt": "e4m3", "weight_block_size": [128, 128]},
}
GEMMA_2_9B_CONFIG = {
    "model_type": "gemma2",
    "hidden_size": 3584,
    "intermediate_size": 14336,
    "num_hidden_layers": 42,
    "num_attention_heads": 16,
    "num_key_value_heads": 8,
    "head_dim": 256,
    "max_position_embeddings": 8192,
    "sliding_window": 4096,
    "vocab_size": 256000,
    "torch_dtype": "float32",
}

LLAMA_8B = sizing.architecture_from_hf_config(LLAMA_8B_CONFIG)
LLAMA_70B = sizing.architecture_from_hf_config(LLAMA_70B_CONFIG)
QWEN_7B = sizing.architecture_from_hf_config(QWEN_7B_CONFIG)
DEEPSEEK_V3 = sizing.architecture_from_hf_config(DEEPSEEK_V3_CONFIG, parameters=671_026_419_200)
GEMMA_2_9B = sizing.architecture_from_hf_config(GEMMA_2_9B_CONFIG)


def test_llama_3_1_8b_at_16_bits_is_131072_bytes_per_token() -> None:
    assert sizing.kv_bytes_per_token(LLAMA_8B) == 32 * 8 * 128 * 2 * 2 == 131_072
    assert LLAMA_8B.parameters == 8_030_261_248  # the checkpoint's safetensors total, computed from config.json
    assert sizing.weight_bytes(LLAMA_8B) == 16_060_522_496


def test_qwen2_5_7b_is_57344_bytes_per_token_and_its_disabled_window_is_ignored() -> None:
    assert sizing.kv_bytes_per_token(QWEN_7B) == 28 * 4 * 128 * 2 * 2 == 57_344
    assert QWEN_7B.parameters == 7_615_616_512  # q/k/v biases included
    assert (QWEN_7B.sliding_window, QWEN_7B.sliding_window_layers) == (0, ())


def test_llama_3_1_70b_is_327680_bytes_per_token_and_141_gb_of_weights() -> None:
    assert sizing.kv_bytes_per_token(LLAMA_70B) == 80 * 8 * 128 * 2 * 2 == 327_680
    assert LLAMA_70B.parameters == 70_553_706_496
    assert sizing.weight_bytes(LLAMA_70B) == 141_107_412_992
    assert sizing.describe_bytes(sizing.weight_bytes(LLAMA_70B)) == "141.1 GB"


def test_deepseek_v3_mla_caches_the_latent_25_times_less_than_the_naive_formula() -> None:
    assert DEEPSEEK_V3.attention == "mla"
    assert sizing.kv_bytes_per_token(DEEPSEEK_V3, "bfloat16") == 61 * (512 + 64) * 2 == 70_272
    assert sizing.naive_kv_bytes_per_token(DEEPSEEK_V3, "bfloat16") == 2 * 61 * 128 * 56 * 2 == 1_748_992
    assert sizing.kv_bytes(DEEPSEEK_V3, context=10_000, kv_cache_dtype="bfloat16") == 702_720_000
    assert sizing.weight_bytes(DEEPSEEK_V3) == 671_026_419_200  # fp8 checkpoint: one byte a parameter
    # The latent is not split by tensor parallelism: every GPU holds all of it.
    assert sizing.kv_bytes(DEEPSEEK_V3, context=16, tensor_parallel_size=8) == 70_272 * 16


def test_sliding_window_layers_hold_at_most_the_window() -> None:
    assert GEMMA_2_9B.sliding_window_layers == tuple(range(0, 42, 2))
    assert GEMMA_2_9B.weight_dtype == "bf16"  # its config says float32; vLLM serves that at 16 bits
    assert GEMMA_2_9B.parameters == 9_241_705_984  # tied embeddings, four norms a layer
    per_layer_token = 2 * 8 * 256 * 2
    assert sizing.kv_bytes_per_token(GEMMA_2_9B) == 42 * per_layer_token == 344_064
    # 8,192 tokens: 21 global layers hold 8,192, the 21 local ones 4,096.
    assert sizing.kv_bytes(GEMMA_2_9B, context=8192) == (21 * 8192 + 21 * 4096) * per_layer_token == 2_113_929_216
    assert sizing.kv_bytes(GEMMA_2_9B, context=4096) == 42 * 4096 * per_layer_token
    # A model whose every layer slides (Mistral 7B v0.1: window 4,096) holds 4,096 tokens however long the context.
    mistral_v01 = sizing.architecture_from_hf_config(
        LLAMA_8B_CONFIG
        | {"model_type": "mistral", "vocab_size": 32000, "max_position_embeddings": 32768}
        | {"sliding_window": 4096}
    )
    assert sizing.kv_bytes(mistral_v01, context=32768) == sizing.kv_bytes(mistral_v01, context=4096) == 536_870_912
    assert sizing.fit(mistral_v01, gpu_memory_gb=24, concurrency=1).max_context_at_concurrency == 32768


def test_an_fp8_kv_cache_halves_the_bytes() -> None:
    assert sizing.kv_bytes_per_token(LLAMA_8B, "fp8") == 65_536
    assert sizing.kv_bytes(LLAMA_70B, context=8192, concurrency=4, kv_cache_dtype="fp8") * 2 == sizing.kv_bytes(
        LLAMA_70B, context=8192, concurrency=4
    )
    assert sizing.kv_bytes_per_token(DEEPSEEK_V3, "fp8") == 35_136


def test_a_4_bit_quantization_with_group_scales() -> None:
    awq = sizing.architecture_from_hf_config(
        LLAMA_70B_CONFIG | {"quantization_config": {"quant_method": "awq", "bits": 4, "group_size": 128}}
    )
    assert awq.weight_dtype == "int4-awq"
    # 4 bits a weight and one 16-bit scale per 128 weights: 33/8 bits.
    assert sizing.weight_bytes(awq) == 70_553_706_496 * 33 // 64 == 36_379_254_912
    assert sizing.kv_bytes_per_token(awq) == 327_680  # activations and KV stay 16 bits


def test_blocks_round_a_context_up_to_16_tokens() -> None:
    assert sizing.kv_bytes(LLAMA_8B, context=1) == 16 * 131_072
    assert sizing.kv_bytes(LLAMA_8B, context=17, concurrency=3) == 3 * 32 * 131_072


def test_tensor_parallelism_splits_weights_and_kv_heads_and_replicates_too_few_heads() -> None:
    assert sizing.kv_bytes(LLAMA_70B, context=16, tensor_parallel_size=4) == 16 * 80 * 2 * 2 * 128 * 2
    assert sizing.kv_bytes(QWEN_7B, context=16, tensor_parallel_size=8) == 16 * 28 * 2 * 1 * 128 * 2
    assert sizing.tensor_parallel_problem(QWEN_7B, 8) == "28 attention heads do not split over 8 GPUs"
    assert sizing.tensor_parallel_problem(QWEN_7B, 4) is None


def test_fit_on_h100s_with_margin_largest_context_and_most_sequences() -> None:
    engine = EngineSettings(gpu_memory_utilization_percent=90, overhead_bytes=2 * 2**30)
    result = sizing.fit(LLAMA_70B, gpu_memory_gb=80, tensor_parallel_size=4, context=32768, engine=engine)
    assert result.usable_bytes_per_gpu == 80 * 10**9 * 90 // 100 - 2**31 == 69_852_516_352
    assert result.weight_bytes_per_gpu == 35_276_853_248
    assert result.kv_bytes_per_gpu == 81_920 * 32768 == 2_684_354_560
    assert result.margin_bytes_per_gpu == 69_852_516_352 - 35_276_853_248 - 2_684_354_560 == 31_891_308_544
    assert result.fits
    assert result.max_concurrency_at_context == 12
    assert result.max_context_at_concurrency == 131_072  # the model's own limit
    sixteen = sizing.fit(LLAMA_70B, gpu_memory_gb=80, tensor_parallel_size=4, context=32768, concurrency=16)
    assert not sixteen.fits
    assert sixteen.max_context_at_concurrency == 34_575_663_104 // (16 * 16 * 1024) // 80 * 16 == 26_368


def test_70b_on_one_l4_is_short_by_the_weights() -> None:
    result = sizing.fit(LLAMA_70B, gpu_memory_gb=24, context=32768)
    assert result.usable_bytes_per_gpu == 19_452_516_352
    assert not result.fits
    assert result.margin_bytes_per_gpu == 19_452_516_352 - 141_107_412_992 - 327_680 * 32768
    assert (result.max_context_at_concurrency, result.max_concurrency_at_context) == (0, 0)


def test_placements_are_the_fewest_gpus_per_pool_cheapest_first_with_break_even() -> None:
    pools = [
        PoolOffer("eu", "nvidia-h100-80gb", 80, 8, Decimal("4.00")),
        PoolOffer("eu", "nvidia-l4", 24, 8, Decimal("0.80")),
        PoolOffer("us", "nvidia-a10g", 24, 1, Decimal("0.50")),
    ]
    prices = [ManagedPrice("gpt-4o-mini", Decimal("0.15"), Decimal("0.60"))]
    ranked = sizing.placements(LLAMA_70B, pools, context=8192, managed_prices=prices)
    # One A10G cannot hold 70B; two H100s cannot either (70.55 GB of weights each > 69.85 GB usable);
    # eight L4s (8 x 0.80 x 730 = 4,672) beat four H100s (4 x 4.00 x 730 = 11,680).
    assert not sizing.fit(LLAMA_70B, gpu_memory_gb=80, tensor_parallel_size=2, context=8192).fits
    assert [(p.accelerator_type, p.gpus_per_replica, p.monthly_cost) for p in ranked] == [
        ("nvidia-l4", 8, Decimal("4672.00")),
        ("nvidia-h100-80gb", 4, Decimal("11680.00")),
    ]
    (cheapest,) = ranked[0].break_even
    assert cheapest.blended_price_per_million == Decimal("0.2625")
    assert cheapest.monthly_tokens == 17_798_095_239  # ceil(4,672 x 10^6 / 0.2625)
    one_l4 = sizing.placements(LLAMA_8B, pools[1:2], context=16384, managed_prices=prices)[0]
    assert (one_l4.gpus_per_replica, one_l4.monthly_cost, one_l4.break_even[0].monthly_tokens) == (
        1,
        Decimal("584.00"),
        2_224_761_905,
    )


def test_runtime_args_of_a_plan() -> None:
    assert sizing.runtime_args(
        context=32768, tensor_parallel_size=4, kv_cache_dtype="auto", engine=EngineSettings()
    ) == [
        "--max_model_len=32768",
        "--tensor_parallel_size=4",
        "--gpu_memory_utilization=0.90",
        "--kv_cache_dtype=auto",
    ]


def test_an_unknown_architecture_names_the_missing_fields() -> None:
    with pytest.raises(ArchitectureError) as error:
        sizing.architecture_from_hf_config({"model_type": "mystery", "hidden_size": 1024, "torch_dtype": "bfloat16"})
    assert set(error.value.problems) == {"num_hidden_layers", "num_attention_heads", "max_position_embeddings"}
    assert "n_layer" in error.value.problems["num_hidden_layers"]
    with pytest.raises(ArchitectureError) as moe:
        sizing.architecture_from_hf_config(DEEPSEEK_V3_CONFIG)
    assert moe.value.problems == {
        "parameters": "cannot be computed for model_type 'deepseek_v3'; give the parameter count"
    }


def test_an_admin_entered_architecture_is_checked_field_by_field() -> None:
    entered = LLAMA_8B.to_dict()
    assert sizing.architecture_from_dict(entered) == LLAMA_8B
    with pytest.raises(ArchitectureError) as error:
        sizing.architecture_from_dict(entered | {"attention": "mla", "kv_heads": 0, "colour": "blue"})
    assert set(error.value.problems) == {"colour", "kv_heads", "kv_lora_rank", "qk_rope_head_dim"}
    assert isinstance(sizing.architecture_from_dict(GEMMA_2_9B.to_dict()), Architecture)


def test_largest_context_of_a_sliding_window_model_below_and_past_its_window() -> None:
    # One L4: 969,104,384 bytes left after the weights, 131,072 bytes a block in each layer: 7,393 layer-blocks,
    # under 42 x 256 (every layer below its window): 7,393 // 42 = 176 blocks, 2,816 tokens.
    one = sizing.fit(GEMMA_2_9B, gpu_memory_gb=24, context=2816)
    assert one.usable_bytes_per_gpu - one.weight_bytes_per_gpu == 969_104_384
    assert (one.max_context_at_concurrency, one.fits) == (2816, True)
    assert not sizing.fit(GEMMA_2_9B, gpu_memory_gb=24, context=2832).fits
    # Two L4s, 10 sequences: 15,580 layer-blocks; past the window only the 21 global layers grow:
    # 256 + (15,580 - 10,752) // 21 = 485 blocks, 7,760 tokens.
    two = sizing.fit(GEMMA_2_9B, gpu_memory_gb=24, tensor_parallel_size=2, context=7760, concurrency=10)
    assert (two.max_context_at_concurrency, two.fits) == (7760, True)
    assert not sizing.fit(GEMMA_2_9B, gpu_memory_gb=24, tensor_parallel_size=2, context=7776, concurrency=10).fits


@pytest.mark.django_db
def test_the_starter_catalog_sizes_every_self_hosted_model() -> None:
    from django.core.management import call_command

    from catalog.models import ModelVersion
    from catalog.selectors import version_architecture

    call_command("load_catalog", verbosity=0)
    figures = {}
    for version in ModelVersion.objects.filter(model__hosting="self_hosted").select_related("model"):
        architecture = version_architecture(version)
        assert architecture is not None, f"{version} has no architecture"
        figures[version.model.slug] = (sizing.weight_bytes(architecture), sizing.kv_bytes_per_token(architecture))
    assert figures == {
        "llama-3-1-8b-instruct": (16_060_522_496, 131_072),
        "llama-3-1-70b-instruct": (141_107_412_992, 327_680),
        "qwen2-5-7b-instruct": (15_231_233_024, 57_344),
        "qwen2-5-coder-7b-instruct": (15_231_233_024, 57_344),
        "mistral-7b-instruct-v0-3": (14_496_047_104, 131_072),
        "gemma-2-9b-it": (18_483_411_968, 344_064),
        "bge-m3": (1_135_509_504, 98_304),
    }
