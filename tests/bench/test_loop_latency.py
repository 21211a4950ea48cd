"""How long from a gateway response to its cost in the team's report, on the production cadences (the access log
shipped by the gateway's collector, ingestion, the 30 s rollup): the median of 20 requests, each sent at a random
moment of the rollup cycle (seeded) once the report shows the one before; sent right after a rollup, every request
would wait the whole cycle. `LOOP_BENCH_REQUESTS` changes the count.

    make bench   # or: env $(.venv/bin/python -m portal.localservices) .venv/bin/pytest tests/bench/test_loop_latency.py -s -o addopts=""
"""

from __future__ import annotations

import os
import random
import statistics
import time

from tests.e2e.conftest import running_demo, wait_until

MODEL = "gpt-4o-mini"


def test_seconds_from_a_gateway_response_to_the_cost_in_the_report() -> None:
    count = int(os.environ.get("LOOP_BENCH_REQUESTS", "20"))
    phase = random.Random(20261204)
    with running_demo(cadence_seconds=None, redis_db=11) as loop:
        team = loop.team("bench")
        key = loop.key(team)["key"]
        loop.reaches(key, MODEL)
        seen = wait_until(lambda: _requests(loop, team) or None, timeout=120, what="the first request reported")
        delays = []
        for _ in range(count):
            time.sleep(phase.uniform(0, 30))
            answer = loop.chat(key, MODEL, "measure the loop", max_tokens=4)
            assert answer.status == 200, answer.text
            answered = time.monotonic()
            before = seen
            wait_until(lambda before=before: _requests(loop, team) > before, timeout=120, interval=0.1, what="the cost")
            seen = _requests(loop, team)
            delays.append(time.monotonic() - answered)
        print(
            f"\ngateway response -> cost in the report, {count} requests: median {statistics.median(delays):.1f} s, "
            f"min {min(delays):.1f} s, max {max(delays):.1f} s (rollups every 30 s, the gateway's shipper batches 0.2 s)"
        )


def _requests(loop, team: str) -> int:  # type: ignore[no-untyped-def]
    row = next((row for row in loop.costs(team)["series"] if row["model"] == MODEL), None)
    return int(row["requests"]) if row else 0
