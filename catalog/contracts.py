"""What the catalog hands to other apps and workers: frozen, Django-free values."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from catalog.sizing import Architecture

# How a version can be served (the deployments' modes, portal.deployments.contracts.SERVING_MODES): KServe's
# InferenceService, or llm-d's LLMInferenceService with its InferencePool and endpoint picker.
VERSION_SERVING_MODES = ("standard", "llm-d")


@dataclass(frozen=True)
class HardwareProfile:
    gpus_per_replica: int
    min_gpu_memory_gb: int
    cpu: str
    memory: str


@dataclass(frozen=True)
class ModelVersionContract:
    model_slug: str
    version: str
    lifecycle: str
    hosting: str
    served_model_name: str
    artifact_uri: str
    revision: str
    format: str
    runtime: str
    hardware: HardwareProfile
    runtime_args: tuple[str, ...]
    provider: str
    provider_model_id: str
    architecture: Architecture | None = None
    # The serving modes this version is known to work in ("standard", "llm-d"), as the catalog curator declared.
    serving_modes: tuple[str, ...] = ("standard",)


@dataclass(frozen=True)
class ModelPriceRow:
    """One price of a catalog model, as rating looks it up by event time."""

    model_id: int
    price_id: int
    usage_type: str
    price_per_million: Decimal
    effective_from: datetime


@dataclass(frozen=True)
class ManagedVersionRef:
    """A managed model's version a gateway routes to its provider."""

    model_slug: str
    served_model_name: str
    provider: str
    provider_model_id: str


@dataclass(frozen=True)
class PriceContract:
    price_id: int
    model_slug: str
    usage_type: str
    price_per_million: Decimal
    currency: str
    effective_from: datetime
