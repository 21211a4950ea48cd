"""Benchmarks of the hot read paths and idempotent replay; they print figures, they do not assert timings.

Run with `make bench`.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import pytest
from rest_framework.test import APIClient

from portal.tenancy.models import Role
from portal.tokens.services import api_token_issue
from tests.factories import (
    ManagedVersionFactory,
    MembershipFactory,
    PriceFactory,
    SelfHostedVersionFactory,
    TeamFactory,
    UserFactory,
)

ROUNDS = 300


def _measure(label: str, call: Callable[[], object]) -> None:
    for _ in range(20):
        call()
    samples = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    p95 = samples[int(len(samples) * 0.95) - 1]
    print(
        f"\n{label}: {ROUNDS} requests, median {statistics.median(samples):.2f} ms, p95 {p95:.2f} ms, "
        f"{1000 / statistics.mean(samples):.0f} requests/s (one process, in-process client)"
    )


@pytest.mark.django_db
def test_bench_reads_and_replay(settings: object) -> None:
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"principal": "1000000/minute"}}  # type: ignore[attr-defined]
    team = TeamFactory(slug="alpha")
    user = UserFactory()
    MembershipFactory(team=team, user=user, role=Role.ADMIN)
    for index in range(30):
        SelfHostedVersionFactory(model__slug=f"open-{index}")
        PriceFactory(model=ManagedVersionFactory(model__slug=f"managed-{index}").model)
    client = APIClient()
    client.credentials(
        HTTP_AUTHORIZATION=f"Bearer {api_token_issue(actor=None, principal=user, name='b', scopes=[]).plaintext}"
    )
    _measure("GET /api/v1/me", lambda: client.get("/api/v1/me"))
    _measure("GET /api/v1/catalog/models (60 models, page of 50)", lambda: client.get("/api/v1/catalog/models"))
    _measure("GET /api/v1/catalog/models?q=managed", lambda: client.get("/api/v1/catalog/models?q=managed"))
    _measure(
        "GET /api/v1/catalog/models/managed-1 (detail + prices in force)",
        lambda: client.get("/api/v1/catalog/models/managed-1"),
    )
    _measure("GET /api/v1/teams/alpha/quota", lambda: client.get("/api/v1/teams/alpha/quota"))
    client.post("/api/v1/teams", {"slug": "beta", "display_name": "B"}, format="json", HTTP_IDEMPOTENCY_KEY="bench")
    _measure(
        "POST /api/v1/teams replayed by Idempotency-Key",
        lambda: client.post(
            "/api/v1/teams", {"slug": "beta", "display_name": "B"}, format="json", HTTP_IDEMPOTENCY_KEY="bench"
        ),
    )
