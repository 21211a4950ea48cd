"""Right-sizing of self-hosted models: exact integer bytes of weights and KV cache, fit on GPUs, placements and cost.

Pure functions of frozen values (no Django, no database), so the API, deployment admission, the manifest
builders and Backstage all get the same answer. Every byte figure is an exact integer; money is Decimal.

Formulas (b = bytes of one KV value: 2 for bfloat16/float16, 1 for fp8, 4 for float32; "auto" is the
activation dtype, 16 bits for every 16-bit or quantized model; T = tensor parallel size = GPUs per replica):

- Weights: ``weight_bytes = ceil(parameters * bits / 8)``. bf16/fp16 are 16 bits, fp8/int8 8, fp32 32.
  4-bit AWQ/GPTQ checkpoints also store one 16-bit scale per group of 128 weights: 4 + 16/128 = 33/8 bits,
  so ``ceil(parameters * 33 / 64)`` bytes. (Layers such checkpoints keep at 16 bits, often the embeddings
  and output head, are not modelled: enter the checkpoint's own size as `parameters` x 8 / bits if it matters.)
- KV cache per token and layer:
  - MHA and GQA: ``2 (K and V) * kv_heads * head_dim * b``.
  - MLA (DeepSeek-V2/V3): the compressed latent and the decoupled RoPE key,
    ``(kv_lora_rank + qk_rope_head_dim) * b``; DeepSeek-V3 at 16 bits: 61 x 576 x 2 = 70,272 bytes per token.
  - The naive multi-head formula some calculators use for every model, ``2 * heads * (hidden / heads) * b``
    per layer, is `naive_kv_bytes_per_token` (for comparison only).
  ``kv_bytes_per_token`` is the sum over layers (every layer holding the token).
- KV cache of a context of L tokens: the serving engine (vLLM) allocates in blocks of `block_tokens` (16), so
  a sequence holds ``ceil(L / 16) * 16`` tokens per full-attention layer, and ``ceil(min(L, W) / 16) * 16``
  per sliding-window layer of window W. S concurrent sequences hold S times that.
- Per GPU with tensor parallelism over T GPUs: weights ``ceil(weight_bytes / T)``; GQA/MHA KV heads are split,
  ``max(1, kv_heads // T)`` per GPU (replicated when T > kv_heads); the MLA latent is not split (every GPU
  holds all of it). T must divide the attention heads, and T and the KV heads must divide one another.
- Engine reserve: a GPU of G GB (10^9 bytes, as GPUs are sold) offers
  ``usable = G * 10^9 * utilization_percent // 100 - overhead_bytes`` to weights and KV cache (vLLM's
  --gpu_memory_utilization, less activations, CUDA graphs and communication buffers).
- Fit: ``needed = weights_per_gpu + kv_per_gpu(L, S)``; fits when ``needed <= usable``; margin = usable - needed
  (negative: the shortfall).
- Largest context at S sequences: the largest L (at most the model's maximum context) with
  ``S * kv_per_gpu(L) <= usable - weights_per_gpu``, in whole blocks. Most sequences at L:
  ``(usable - weights_per_gpu) // kv_per_gpu(L)``.
- Monthly cost of a placement: ``replicas * T * hourly_price_per_gpu * 730`` (hours in an average month).
  Break-even against a managed model: the monthly tokens at which that cost equals the managed model's bill,
  ``ceil(monthly_cost * 10^6 / blended_price_per_million)``, where the blend is `input_share_percent` of input
  tokens (default 75, i.e. 3:1 input to output) at the input price and the rest at the output price. Above that
  volume the placement is cheaper, provided it can serve the volume (throughput is not modelled here).

Reading a Hugging Face config.json: the parameter count of a dense decoder with a gated MLP is the sum of its
tensors, ``vocab * hidden * (1 if tied else 2) + layers * (attention + 3 * hidden * intermediate + norms * hidden)
+ hidden`` with ``attention = hidden * (2 * heads + 2 * kv_heads) * head_dim`` (plus Qwen2's q/k/v biases; Gemma 2
has four norms a layer and tied embeddings); that is the checkpoint's exact count (Llama 3.1 8B: 8,030,261,248).
Other families need the count given. float32 checkpoints are sized at 16 bits, as vLLM serves them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal
from functools import lru_cache
from typing import Any

GB = 10**9
GIB = 2**30
HOURS_PER_MONTH = Decimal(730)
TENSOR_PARALLEL_SIZES = (1, 2, 4, 8)

# Bits per parameter as a fraction (numerator, denominator): 4-bit group-quantized formats carry a 16-bit scale
# per group of 128 weights.
WEIGHT_DTYPE_BITS: dict[str, tuple[int, int]] = {
    "fp32": (32, 1),
    "bf16": (16, 1),
    "fp16": (16, 1),
    "fp8": (8, 1),
    "int8": (8, 1),
    "int4-awq": (33, 8),
    "int4-gptq": (33, 8),
}
# vLLM's --kv_cache_dtype values; None: the model's activation dtype.
KV_CACHE_DTYPE_BYTES: dict[str, int | None] = {
    "auto": None,
    "bfloat16": 2,
    "float16": 2,
    "float32": 4,
    "fp8": 1,
    "fp8_e4m3": 1,
    "fp8_e5m2": 1,
}
ATTENTION_KINDS = ("mha", "gqa", "mla")


class ArchitectureError(ValueError):
    """An architecture that cannot be sized: fields missing or inconsistent, named in `problems` (field -> why)."""

    def __init__(self, problems: Mapping[str, str]) -> None:
        self.problems = dict(problems)
        super().__init__("; ".join(f"{name}: {why}" for name, why in self.problems.items()))


@dataclass(frozen=True)
class Architecture:
    """What sizing needs to know about a model. `sliding_window_layers` (0-based) use `sliding_window` tokens."""

    parameters: int
    weight_dtype: str
    layers: int
    hidden_size: int
    attention_heads: int
    kv_heads: int
    head_dim: int
    attention: str
    max_context: int
    kv_lora_rank: int = 0
    qk_rope_head_dim: int = 0
    sliding_window: int = 0
    sliding_window_layers: tuple[int, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["sliding_window_layers"] = list(self.sliding_window_layers)
        return values


@dataclass(frozen=True)
class EngineSettings:
    """What the serving engine keeps for itself on each GPU, and its KV cache block size."""

    gpu_memory_utilization_percent: int = 90
    overhead_bytes: int = 2 * GIB
    block_tokens: int = 16


@dataclass(frozen=True)
class Fit:
    """One replica of `tensor_parallel_size` GPUs of `gpu_memory_gb` serving `concurrency` sequences of `context`."""

    gpu_memory_gb: int
    tensor_parallel_size: int
    context: int
    concurrency: int
    usable_bytes_per_gpu: int
    weight_bytes_per_gpu: int
    kv_bytes_per_gpu: int
    needed_bytes_per_gpu: int
    margin_bytes_per_gpu: int
    fits: bool
    max_context_at_concurrency: int
    max_concurrency_at_context: int


@dataclass(frozen=True)
class PoolOffer:
    """An accelerator pool a placement may use."""

    cluster: str
    accelerator_type: str
    gpu_memory_gb: int
    gpu_count: int
    hourly_price_per_gpu: Decimal


@dataclass(frozen=True)
class ManagedPrice:
    """A managed model's list prices per 1M tokens."""

    model: str
    input_per_million: Decimal
    output_per_million: Decimal


@dataclass(frozen=True)
class BreakEven:
    model: str
    blended_price_per_million: Decimal
    monthly_tokens: int | None  # None: the managed model is free at list price, never undercut


@dataclass(frozen=True)
class Placement:
    cluster: str
    accelerator_type: str
    gpus_per_replica: int
    tensor_parallel_size: int
    replicas: int
    monthly_cost: Decimal
    fit: Fit
    break_even: tuple[BreakEven, ...] = field(default=())


# ------------------------------------------------------------------------------------------------- architecture


def _positive(values: Mapping[str, Any], name: str, problems: dict[str, str]) -> int:
    value = values.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        problems[name] = "is required: a positive integer" if value is None else "must be a positive integer"
        return 0
    return value


def architecture_from_dict(values: Mapping[str, Any]) -> Architecture:
    """Validate an architecture entered by an admin (the shape of `Architecture.to_dict`)."""
    if not isinstance(values, Mapping):
        raise ArchitectureError({"architecture": "must be an object"})
    known = set(Architecture.__dataclass_fields__)
    problems: dict[str, str] = dict.fromkeys(sorted(set(values) - known), "is not an architecture field")
    attention = values.get("attention")
    if attention not in ATTENTION_KINDS:
        problems["attention"] = f"must be one of {', '.join(ATTENTION_KINDS)}"
    dtype = values.get("weight_dtype")
    if dtype not in WEIGHT_DTYPE_BITS:
        problems["weight_dtype"] = f"must be one of {', '.join(WEIGHT_DTYPE_BITS)}"
    numbers = {
        name: _positive(values, name, problems)
        for name in ("parameters", "layers", "hidden_size", "attention_heads", "kv_heads", "head_dim", "max_context")
    }
    extras: dict[str, int] = {}
    for name in ("kv_lora_rank", "qk_rope_head_dim", "sliding_window"):
        value = values.get(name, 0)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            problems[name] = "must be a non-negative integer"
            value = 0
        extras[name] = value
    if attention == "mla":
        for name in ("kv_lora_rank", "qk_rope_head_dim"):
            if extras[name] < 1:
                problems[name] = "is required for MLA attention"
    layers_raw = values.get("sliding_window_layers", [])
    sliding_layers: tuple[int, ...] = ()
    if not isinstance(layers_raw, list | tuple) or not all(
        isinstance(index, int) and not isinstance(index, bool) for index in layers_raw
    ):
        problems["sliding_window_layers"] = "must be a list of layer indexes"
    else:
        sliding_layers = tuple(sorted(set(layers_raw)))
        if sliding_layers and (sliding_layers[0] < 0 or sliding_layers[-1] >= max(numbers["layers"], 1)):
            problems["sliding_window_layers"] = "layer indexes must be between 0 and layers - 1"
        if sliding_layers and not extras["sliding_window"]:
            problems["sliding_window"] = "is required when sliding_window_layers are named"
    if not problems and attention != "mla" and numbers["attention_heads"] % numbers["kv_heads"]:
        problems["kv_heads"] = "must divide attention_heads"
    if problems:
        raise ArchitectureError(problems)
    if extras["sliding_window"] and not sliding_layers:
        sliding_layers = tuple(range(numbers["layers"]))
    return Architecture(
        weight_dtype=str(dtype),
        attention=str(attention),
        sliding_window_layers=sliding_layers,
        **numbers,
        **extras,
    )


_TORCH_DTYPES = {"bfloat16": "bf16", "float16": "fp16", "half": "fp16"}


def _hf_weight_dtype(config: Mapping[str, Any]) -> str | None:
    quantization = config.get("quantization_config")
    if isinstance(quantization, Mapping):
        method = str(quantization.get("quant_method", "")).lower()
        bits = quantization.get("bits", quantization.get("w_bit"))
        if method in ("awq", "gptq") and bits == 4:
            return f"int4-{method}"
        if method == "fp8" or (method == "compressed-tensors" and "fp8" in str(quantization).lower()):
            return "fp8"
        if method in ("bitsandbytes", "gptq", "awq") and bits == 8:
            return "int8"
        return None
    dtype = config.get("torch_dtype", config.get("dtype"))
    if str(dtype) in ("float32", "float"):
        # vLLM's --dtype auto serves float32 checkpoints at 16 bits (bfloat16 for Gemma, float16 otherwise).
        return "bf16" if str(config.get("model_type", "")).startswith("gemma") else "fp16"
    return _TORCH_DTYPES.get(str(dtype)) if dtype is not None else None


def _hf_parameters(config: Mapping[str, Any], layers: int, heads: int, kv_heads: int, head_dim: int) -> int | None:
    """Parameters of a dense decoder with a gated MLP (Llama, Mistral, Qwen2, Gemma 2): exact for those families."""
    hidden, intermediate, vocab = config.get("hidden_size"), config.get("intermediate_size"), config.get("vocab_size")
    model_type = str(config.get("model_type", ""))
    if model_type not in ("llama", "mistral", "qwen2", "gemma2", "gemma", "qwen3") or not all(
        isinstance(value, int) for value in (hidden, intermediate, vocab)
    ):
        return None
    assert isinstance(hidden, int)
    assert isinstance(intermediate, int)
    assert isinstance(vocab, int)
    query, key_value = heads * head_dim, kv_heads * head_dim
    attention = hidden * query + 2 * hidden * key_value + query * hidden
    if model_type == "qwen2" or config.get("attention_bias"):
        attention += query + 2 * key_value
    if model_type == "qwen3":
        attention += 2 * head_dim  # q and k norms
    norms = 4 if model_type == "gemma2" else 2
    per_layer = attention + 3 * hidden * intermediate + norms * hidden
    tied = config.get("tie_word_embeddings", model_type.startswith("gemma"))  # transformers' defaults per family
    embeddings = vocab * hidden * (1 if tied else 2)
    return embeddings + layers * per_layer + hidden


def architecture_from_hf_config(config: Mapping[str, Any], *, parameters: int | None = None) -> Architecture:
    """Read a Hugging Face `config.json` (Llama, Mistral, Qwen2, Gemma 2/3, DeepSeek-V2/V3 and alike).

    Parameters are computed for dense gated-MLP decoders; other families (mixtures of experts, encoders) need
    `parameters` given. A config that lacks what sizing needs is an `ArchitectureError` naming the fields.
    """
    if not isinstance(config, Mapping):
        raise ArchitectureError({"config": "must be a JSON object"})
    if isinstance(config.get("text_config"), Mapping):  # multimodal wrappers keep the language model inside
        config = {**config["text_config"], **{k: v for k, v in config.items() if k in ("torch_dtype",)}}
    problems: dict[str, str] = {}

    def need(*names: str) -> int:
        for name in names:
            value = config.get(name)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
        problems[names[0]] = "is missing" + (f" (also looked for {', '.join(names[1:])})" if names[1:] else "")
        return 0

    layers = need("num_hidden_layers", "n_layer", "num_layers")
    hidden = need("hidden_size", "n_embd", "d_model")
    heads = need("num_attention_heads", "n_head")
    max_context = need("max_position_embeddings", "n_positions", "max_sequence_length")
    mla = "kv_lora_rank" in config and config.get("kv_lora_rank") is not None
    kv_lora_rank = qk_rope = 0
    if mla:
        kv_lora_rank = need("kv_lora_rank")
        qk_rope = need("qk_rope_head_dim")
    kv_heads_raw = config.get("num_key_value_heads", config.get("num_kv_heads"))
    kv_heads = kv_heads_raw if isinstance(kv_heads_raw, int) and kv_heads_raw > 0 else heads
    head_dim_raw = config.get("head_dim")
    head_dim = head_dim_raw if isinstance(head_dim_raw, int) and head_dim_raw > 0 else (hidden // heads if heads else 0)
    weight_dtype = _hf_weight_dtype(config)
    if weight_dtype is None:
        problems["torch_dtype"] = "is missing or unknown (or quantization_config names an unsupported method)"
    if parameters is None and not problems:
        parameters = _hf_parameters(config, layers, heads, kv_heads, head_dim)
        if parameters is None:
            problems["parameters"] = (
                f"cannot be computed for model_type '{config.get('model_type', '?')}'; give the parameter count"
            )
    if problems:
        raise ArchitectureError(problems)
    sliding_window, sliding_layers = _hf_sliding_window(config, layers)
    values: dict[str, Any] = {
        "parameters": parameters,
        "weight_dtype": weight_dtype,
        "layers": layers,
        "hidden_size": hidden,
        "attention_heads": heads,
        "kv_heads": kv_heads,
        "head_dim": head_dim,
        "attention": "mla" if mla else ("gqa" if kv_heads < heads else "mha"),
        "max_context": max_context,
        "kv_lora_rank": kv_lora_rank,
        "qk_rope_head_dim": qk_rope,
        "sliding_window": sliding_window,
        "sliding_window_layers": list(sliding_layers),
    }
    return architecture_from_dict(values)


def _hf_sliding_window(config: Mapping[str, Any], layers: int) -> tuple[int, tuple[int, ...]]:
    window = config.get("sliding_window")
    if not isinstance(window, int) or window <= 0 or config.get("use_sliding_window") is False:
        return 0, ()
    layer_types = config.get("layer_types")
    if isinstance(layer_types, list) and len(layer_types) == layers:
        return window, tuple(index for index, kind in enumerate(layer_types) if kind == "sliding_attention")
    model_type = str(config.get("model_type", ""))
    if model_type == "gemma2":  # even layers are local (Gemma2DecoderLayer: is_sliding = not layer_idx % 2)
        return window, tuple(range(0, layers, 2))
    pattern = config.get("sliding_window_pattern")
    if model_type.startswith("gemma3") and isinstance(pattern, int) and pattern > 0:
        return window, tuple(index for index in range(layers) if (index + 1) % pattern)
    if model_type in ("qwen2", "qwen3") and isinstance(config.get("max_window_layers"), int):
        return window, tuple(range(config["max_window_layers"], layers))
    if window >= int(config.get("max_position_embeddings") or 0) > 0:
        return 0, ()  # a window as long as the context is no window
    return window, tuple(range(layers))


# ------------------------------------------------------------------------------------------------------ bytes


def weight_bytes(architecture: Architecture) -> int:
    return _weight_bytes(architecture.parameters, architecture.weight_dtype)


@lru_cache(maxsize=1024)
def _weight_bytes(parameters: int, weight_dtype: str) -> int:
    numerator, denominator = WEIGHT_DTYPE_BITS[weight_dtype]
    return -(-parameters * numerator // (8 * denominator))


def kv_value_bytes(architecture: Architecture, kv_cache_dtype: str = "auto") -> int:
    if kv_cache_dtype not in KV_CACHE_DTYPE_BYTES:
        raise ValueError(f"unknown KV cache dtype '{kv_cache_dtype}'")
    explicit = KV_CACHE_DTYPE_BYTES[kv_cache_dtype]
    if explicit is not None:
        return explicit
    return 4 if architecture.weight_dtype == "fp32" else 2


def _kv_bytes_per_token_and_layer(architecture: Architecture, kv_cache_dtype: str, tensor_parallel_size: int) -> int:
    value = kv_value_bytes(architecture, kv_cache_dtype)
    if architecture.attention == "mla":
        return (architecture.kv_lora_rank + architecture.qk_rope_head_dim) * value
    kv_heads_per_gpu = max(1, architecture.kv_heads // tensor_parallel_size)
    return 2 * kv_heads_per_gpu * architecture.head_dim * value


def kv_bytes_per_token(architecture: Architecture, kv_cache_dtype: str = "auto") -> int:
    """KV cache bytes one token takes in every layer (on one GPU, no tensor parallelism)."""
    return architecture.layers * _kv_bytes_per_token_and_layer(architecture, kv_cache_dtype, 1)


def naive_kv_bytes_per_token(architecture: Architecture, kv_cache_dtype: str = "auto") -> int:
    """The plain multi-head formula, right only for MHA: shown next to the real figure, never used to size."""
    per_head = architecture.hidden_size // architecture.attention_heads
    return (
        2 * architecture.layers * architecture.attention_heads * per_head * kv_value_bytes(architecture, kv_cache_dtype)
    )


def _blocks(tokens: int, block_tokens: int) -> int:
    return -(-tokens // block_tokens)


def _held_blocks_per_sequence(architecture: Architecture, context: int, block_tokens: int) -> int:
    """Blocks one sequence of `context` tokens holds, summed over layers."""
    full = _blocks(context, block_tokens)
    sliding = len(architecture.sliding_window_layers)
    if not sliding:
        return architecture.layers * full
    window = _blocks(min(context, architecture.sliding_window), block_tokens)
    return (architecture.layers - sliding) * full + sliding * window


def kv_bytes(
    architecture: Architecture,
    *,
    context: int,
    concurrency: int = 1,
    kv_cache_dtype: str = "auto",
    tensor_parallel_size: int = 1,
    block_tokens: int = 16,
) -> int:
    """KV cache bytes, on each GPU of a replica, of `concurrency` sequences of `context` tokens."""
    per_layer_block = _kv_bytes_per_token_and_layer(architecture, kv_cache_dtype, tensor_parallel_size) * block_tokens
    return concurrency * _held_blocks_per_sequence(architecture, context, block_tokens) * per_layer_block


def usable_bytes_per_gpu(gpu_memory_gb: int, engine: EngineSettings) -> int:
    return gpu_memory_gb * GB * engine.gpu_memory_utilization_percent // 100 - engine.overhead_bytes


def tensor_parallel_problem(architecture: Architecture, tensor_parallel_size: int) -> str | None:
    """Why a model cannot be split over this many GPUs (None: it can)."""
    if tensor_parallel_size < 1:
        return "needs at least one GPU"
    if architecture.attention_heads % tensor_parallel_size:
        return f"{architecture.attention_heads} attention heads do not split over {tensor_parallel_size} GPUs"
    if architecture.attention != "mla" and (
        architecture.kv_heads % tensor_parallel_size and tensor_parallel_size % architecture.kv_heads
    ):
        return f"{architecture.kv_heads} KV heads do not split over {tensor_parallel_size} GPUs"
    return None


def _max_context(architecture: Architecture, available: int, concurrency: int, per_layer_block: int, block: int) -> int:
    """Largest context (whole blocks, at most the model's) whose KV cache for `concurrency` fits in `available`."""
    if available <= 0 or concurrency < 1:
        return 0
    budget = available // (concurrency * per_layer_block)  # layer-blocks one sequence may hold
    sliding = len(architecture.sliding_window_layers)
    full_layers = architecture.layers - sliding
    window_blocks = _blocks(architecture.sliding_window, block) if sliding else 0
    # Up to the window every layer grows by one block per block of context; past it only the full layers do.
    if not sliding or budget <= architecture.layers * window_blocks:
        blocks = budget // architecture.layers
    elif full_layers == 0:
        return architecture.max_context
    else:
        blocks = window_blocks + (budget - architecture.layers * window_blocks) // full_layers
    return min(blocks * block, architecture.max_context)


def fit(
    architecture: Architecture,
    *,
    gpu_memory_gb: int,
    tensor_parallel_size: int = 1,
    context: int | None = None,
    concurrency: int = 1,
    kv_cache_dtype: str = "auto",
    engine: EngineSettings = EngineSettings(),
) -> Fit:
    """Does one replica hold the weights and the KV cache of `concurrency` sequences of `context` tokens?"""
    context = architecture.max_context if context is None else context
    usable = usable_bytes_per_gpu(gpu_memory_gb, engine)
    weights = -(-weight_bytes(architecture) // tensor_parallel_size)
    per_layer_block = (
        _kv_bytes_per_token_and_layer(architecture, kv_cache_dtype, tensor_parallel_size) * engine.block_tokens
    )
    per_sequence = _held_blocks_per_sequence(architecture, context, engine.block_tokens) * per_layer_block
    kv = concurrency * per_sequence
    needed = weights + kv
    available = usable - weights
    return Fit(
        gpu_memory_gb=gpu_memory_gb,
        tensor_parallel_size=tensor_parallel_size,
        context=context,
        concurrency=concurrency,
        usable_bytes_per_gpu=usable,
        weight_bytes_per_gpu=weights,
        kv_bytes_per_gpu=kv,
        needed_bytes_per_gpu=needed,
        margin_bytes_per_gpu=usable - needed,
        fits=needed <= usable and tensor_parallel_problem(architecture, tensor_parallel_size) is None,
        max_context_at_concurrency=_max_context(
            architecture, available, concurrency, per_layer_block, engine.block_tokens
        ),
        max_concurrency_at_context=max(available, 0) // per_sequence if per_sequence else 0,
    )


# ------------------------------------------------------------------------------------------ placements and cost


def monthly_cost(*, gpus: int, hourly_price_per_gpu: Decimal) -> Decimal:
    return (gpus * hourly_price_per_gpu * HOURS_PER_MONTH).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def break_even(
    cost: Decimal, prices: Iterable[ManagedPrice], *, input_share_percent: int = 75
) -> tuple[BreakEven, ...]:
    """Monthly tokens above which `cost` is cheaper than each managed model, lowest volume first."""
    found = []
    for price in prices:
        blended = (
            price.input_per_million * input_share_percent + price.output_per_million * (100 - input_share_percent)
        ) / 100
        tokens = int((cost * 1_000_000 / blended).to_integral_value(rounding=ROUND_CEILING)) if blended > 0 else None
        found.append(BreakEven(model=price.model, blended_price_per_million=blended, monthly_tokens=tokens))
    return tuple(sorted(found, key=lambda item: (item.monthly_tokens is None, item.monthly_tokens or 0, item.model)))


def _break_even_by_cost(
    prices: Sequence[ManagedPrice], input_share_percent: int
) -> Callable[[Decimal], tuple[BreakEven, ...]]:
    """break_even, once per distinct cost: a fleet's placements share few (a handful of GPU prices x GPU counts)."""
    known: dict[Decimal, tuple[BreakEven, ...]] = {}

    def lookup(cost: Decimal) -> tuple[BreakEven, ...]:
        if not prices:
            return ()
        if cost not in known:
            known[cost] = break_even(cost, prices, input_share_percent=input_share_percent)
        return known[cost]

    return lookup


def _smallest_size(
    architecture: Architecture,
    *,
    gpu_memory_gb: int,
    max_gpus: int,
    context: int,
    concurrency: int,
    kv_cache_dtype: str,
    engine: EngineSettings,
) -> tuple[int, int] | None:
    """The fewest GPUs that hold the model and the margin per GPU: the sums of fit(), without building a Fit for
    every size tried (sizing a fleet stays fast)."""
    usable = usable_bytes_per_gpu(gpu_memory_gb, engine)
    weights = weight_bytes(architecture)
    held_blocks = concurrency * _held_blocks_per_sequence(architecture, context, engine.block_tokens)
    for size in TENSOR_PARALLEL_SIZES:
        if size > max_gpus:
            break
        per_layer_block = _kv_bytes_per_token_and_layer(architecture, kv_cache_dtype, size) * engine.block_tokens
        margin = usable - -(-weights // size) - held_blocks * per_layer_block
        if margin >= 0 and tensor_parallel_problem(architecture, size) is None:
            return size, margin
    return None


def smallest_fit(
    architecture: Architecture,
    *,
    gpu_memory_gb: int,
    max_gpus: int,
    context: int | None = None,
    concurrency: int = 1,
    kv_cache_dtype: str = "auto",
    engine: EngineSettings = EngineSettings(),
) -> Fit | None:
    """The fewest GPUs (a tensor parallel size up to `max_gpus`) of this size that hold the model."""
    context = architecture.max_context if context is None else context
    found = _smallest_size(
        architecture,
        gpu_memory_gb=gpu_memory_gb,
        max_gpus=max_gpus,
        context=context,
        concurrency=concurrency,
        kv_cache_dtype=kv_cache_dtype,
        engine=engine,
    )
    if found is None:
        return None
    return fit(
        architecture,
        gpu_memory_gb=gpu_memory_gb,
        tensor_parallel_size=found[0],
        context=context,
        concurrency=concurrency,
        kv_cache_dtype=kv_cache_dtype,
        engine=engine,
    )


def placements(
    architecture: Architecture,
    pools: Sequence[PoolOffer],
    *,
    context: int | None = None,
    concurrency: int = 1,
    kv_cache_dtype: str = "auto",
    replicas: int = 1,
    engine: EngineSettings = EngineSettings(),
    managed_prices: Sequence[ManagedPrice] = (),
    input_share_percent: int = 75,
    limit: int | None = None,
) -> list[Placement]:
    """For each pool, the fewest GPUs per replica that fit; cheapest first (then fewer GPUs, more margin).

    Pools are ranked on their sums; the full answer (Fit, cost, break-even) is built for the first `limit` only.
    """
    context = architecture.max_context if context is None else context
    replicas = max(replicas, 1)
    ranked = []
    for index, pool in enumerate(pools):
        found = _smallest_size(
            architecture,
            gpu_memory_gb=pool.gpu_memory_gb,
            max_gpus=pool.gpu_count,
            context=context,
            concurrency=concurrency,
            kv_cache_dtype=kv_cache_dtype,
            engine=engine,
        )
        if found is not None:
            size, margin = found
            hourly = size * replicas * pool.hourly_price_per_gpu
            ranked.append((hourly, size, -margin, pool.cluster, pool.accelerator_type, index))
    ranked.sort()
    break_even_of = _break_even_by_cost(managed_prices, input_share_percent)
    answer = []
    for _hourly, size, _margin, _cluster, _type, index in ranked[:limit]:
        pool = pools[index]
        cost = monthly_cost(gpus=size * replicas, hourly_price_per_gpu=pool.hourly_price_per_gpu)
        answer.append(
            Placement(
                cluster=pool.cluster,
                accelerator_type=pool.accelerator_type,
                gpus_per_replica=size,
                tensor_parallel_size=size,
                replicas=replicas,
                monthly_cost=cost,
                fit=fit(
                    architecture,
                    gpu_memory_gb=pool.gpu_memory_gb,
                    tensor_parallel_size=size,
                    context=context,
                    concurrency=concurrency,
                    kv_cache_dtype=kv_cache_dtype,
                    engine=engine,
                ),
                break_even=break_even_of(cost),
            )
        )
    return answer


def runtime_args(*, context: int, tensor_parallel_size: int, kv_cache_dtype: str, engine: EngineSettings) -> list[str]:
    """vLLM flags for a plan: the context it was sized for, its GPUs, the engine's share and the KV dtype."""
    return [
        f"--max_model_len={context}",
        f"--tensor_parallel_size={tensor_parallel_size}",
        f"--gpu_memory_utilization={engine.gpu_memory_utilization_percent / 100:.2f}",
        f"--kv_cache_dtype={kv_cache_dtype}",
    ]


def describe_bytes(value: int) -> str:
    """Bytes as decimal GB with one decimal, as GPU memory is sold (141,107,412,992 -> '141.1 GB')."""
    return f"{Decimal(value) / GB:.1f} GB"


# ----------------------------------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Plan:
    """What the fit endpoint and deployment admission answer: the figures, the asked placements, the cheapest ones."""

    architecture: Architecture
    context: int
    concurrency: int
    kv_cache_dtype: str
    replicas: int
    engine: EngineSettings
    weight_bytes: int
    kv_bytes_per_token: int
    naive_kv_bytes_per_token: int
    kv_bytes: int
    evaluated: tuple[Placement, ...]  # the pools asked for at the GPUs asked for (fitting or not)
    placements: tuple[Placement, ...]  # fitting placements, cheapest first

    @property
    def fits(self) -> bool:
        return any(item.fit.fits for item in self.evaluated) if self.evaluated else bool(self.placements)


def plan(
    architecture: Architecture,
    pools: Sequence[PoolOffer],
    *,
    gpus_per_replica: int | None = None,
    context: int | None = None,
    concurrency: int = 1,
    kv_cache_dtype: str = "auto",
    replicas: int = 1,
    engine: EngineSettings = EngineSettings(),
    managed_prices: Sequence[ManagedPrice] = (),
    input_share_percent: int = 75,
    limit: int = 10,
) -> Plan:
    context = min(architecture.max_context, context) if context else architecture.max_context
    break_even_of = _break_even_by_cost(managed_prices, input_share_percent)
    evaluated = []
    if gpus_per_replica is not None:
        for pool in pools:
            result = fit(
                architecture,
                gpu_memory_gb=pool.gpu_memory_gb,
                tensor_parallel_size=gpus_per_replica,
                context=context,
                concurrency=concurrency,
                kv_cache_dtype=kv_cache_dtype,
                engine=engine,
            )
            cost = monthly_cost(
                gpus=gpus_per_replica * max(replicas, 1), hourly_price_per_gpu=pool.hourly_price_per_gpu
            )
            evaluated.append(
                Placement(
                    cluster=pool.cluster,
                    accelerator_type=pool.accelerator_type,
                    gpus_per_replica=gpus_per_replica,
                    tensor_parallel_size=gpus_per_replica,
                    replicas=max(replicas, 1),
                    monthly_cost=cost,
                    fit=result,
                    break_even=break_even_of(cost),
                )
            )
    ranked = placements(
        architecture,
        pools,
        context=context,
        concurrency=concurrency,
        kv_cache_dtype=kv_cache_dtype,
        replicas=replicas,
        engine=engine,
        managed_prices=managed_prices,
        input_share_percent=input_share_percent,
        limit=limit,
    )
    return Plan(
        architecture=architecture,
        context=context,
        concurrency=concurrency,
        kv_cache_dtype=kv_cache_dtype,
        replicas=max(replicas, 1),
        engine=engine,
        weight_bytes=weight_bytes(architecture),
        kv_bytes_per_token=kv_bytes_per_token(architecture, kv_cache_dtype),
        naive_kv_bytes_per_token=naive_kv_bytes_per_token(architecture, kv_cache_dtype),
        kv_bytes=kv_bytes(
            architecture,
            context=context,
            concurrency=concurrency,
            kv_cache_dtype=kv_cache_dtype,
            block_tokens=engine.block_tokens,
        ),
        evaluated=tuple(evaluated),
        placements=tuple(ranked),
    )


def flag_name(argument: str) -> str:
    """'--max-model-len=8192' -> 'max_model_len' (vLLM accepts both spellings)."""
    return argument.removeprefix("--").split("=", 1)[0].replace("-", "_")


def flag_value(arguments: Sequence[str], name: str) -> str | None:
    """The value of the last `--name=value` among `arguments`."""
    found = None
    for argument in arguments:
        if flag_name(argument) == name and "=" in argument:
            found = argument.split("=", 1)[1]
    return found


def serving_choices(
    architecture: Architecture, *, catalog_args: Sequence[str], team_args: Sequence[str]
) -> tuple[int, str]:
    """The context and KV cache dtype a deployment is sized for: the team's flags, else the catalog's, else the
    model's maximum context and the model's dtype. Values that are not numbers or known dtypes fall back too."""
    context = architecture.max_context
    for arguments in (catalog_args, team_args):
        value = flag_value(arguments, "max_model_len")
        if value is not None and value.isdigit() and int(value) > 0:
            context = min(int(value), architecture.max_context)
    kv_cache_dtype = "auto"
    for arguments in (catalog_args, team_args):
        value = flag_value(arguments, "kv_cache_dtype")
        if value in KV_CACHE_DTYPE_BYTES:
            kv_cache_dtype = value
    return context, kv_cache_dtype
