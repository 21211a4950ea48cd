"""Sizing 1,000 candidate placements (catalog/sizing.py): the fit endpoint and deployment admission on a large fleet.

Prints the median time of `sizing.plan` over 1,000 pools (each tried at up to four tensor parallel sizes, plus
the asked GPU count on every pool: 5,000 fits or more), with break-even against 20 managed models, for a GQA,
an MLA and a sliding-window model. Asserts the issue's target: under 50 ms. Run with `make bench`.
"""

from __future__ import annotations

import statistics
import time
from decimal import Decimal

from catalog import sizing
from tests.catalog.test_sizing import DEEPSEEK_V3, GEMMA_2_9B, LLAMA_70B

MEMORIES = (16, 24, 40, 48, 80, 94, 141, 192)
POOLS = [
    sizing.PoolOffer(
        cluster=f"cluster-{index // 8}",
        accelerator_type=f"gpu-{MEMORIES[index % 8]}gb",
        gpu_memory_gb=MEMORIES[index % 8],
        gpu_count=(index % 4 + 1) * 2,
        hourly_price_per_gpu=Decimal(index % 8 + 1) / 2,
    )
    for index in range(1000)
]
MANAGED = [
    sizing.ManagedPrice(f"managed-{index}", Decimal("0.15") * (index + 1), Decimal("0.60") * (index + 1))
    for index in range(20)
]


def _time_plan(architecture: sizing.Architecture) -> tuple[float, int]:
    timings = []
    placements = 0
    for _ in range(15):
        started = time.perf_counter()
        result = sizing.plan(
            architecture, POOLS, gpus_per_replica=2, context=8192, concurrency=4, managed_prices=MANAGED
        )
        timings.append(time.perf_counter() - started)
        placements = len(result.placements)
    return statistics.median(timings) * 1000, placements


def test_sizing_1000_candidate_placements_under_50_ms() -> None:
    figures = {name: _time_plan(architecture) for name, architecture in
               (("llama-3.1-70b (GQA)", LLAMA_70B), ("deepseek-v3 (MLA)", DEEPSEEK_V3), ("gemma-2-9b (sliding)", GEMMA_2_9B))}  # fmt: skip
    for name, (milliseconds, placements) in figures.items():
        print(
            f"\nsizing: {name}: 1,000 pools sized in {milliseconds:.1f} ms (median of 15; {placements} top placements)"
        )
    assert all(milliseconds < 50 for milliseconds, _ in figures.values()), figures
