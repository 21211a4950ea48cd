"""Fixtures of usage metering tests: a team with a gateway credential, a priced managed model, a collector."""

from __future__ import annotations

import gzip
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from rest_framework.test import APIClient

from portal.gateway import services as gateway_services
from portal.tenancy.models import Team
from portal.tokens.services import api_token_issue
from portal.usage import services as usage_services
from portal.usage.partitions import forget_known_partitions
from portal.usage.selectors import forget_cached_credentials
from tests.conftest import RoleMatrix
from tests.factories import ManagedVersionFactory, PriceFactory, ServicePrincipalFactory

SOURCE = "aigw://test-eu1/envoy-ai-gateway"
PRICES = {"input": Decimal("2.500000"), "cached_input": Decimal("1.250000"), "output": Decimal("10.000000")}
PRICE_START = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _fresh_process_caches() -> None:
    forget_known_partitions()
    forget_cached_credentials()


@dataclass
class UsageWorld:
    matrix: RoleMatrix
    team: Team
    client_id: str
    credential_id: int
    other_client_id: str
    model_slug: str
    served_name: str
    provider_model_id: str
    collector: APIClient
    collector_token_id: int

    def event(
        self,
        *,
        at: datetime | None = None,
        input_tokens: int | None = 1000,
        output_tokens: int | None = 200,
        cached: int | None = 0,
        client_id: str | None = None,
        model: str | None = None,
        event_id: str | None = None,
        source: str = SOURCE,
        **data: Any,
    ) -> dict[str, Any]:
        moment = at or recent()
        usage = {
            "input_tokens": input_tokens,
            "cached_input_tokens": cached,
            "cache_creation_input_tokens": 0,
            "output_tokens": output_tokens,
            "reasoning_tokens": None,
            "total_tokens": None,
        }
        body = {
            "specversion": "1.0",
            "type": "ai.gateway.llm.usage.v1",
            "source": source,
            "id": event_id if event_id is not None else str(uuid.uuid4()),
            "time": moment.isoformat().replace("+00:00", "Z"),
            "subject": client_id or self.client_id,
            "data": {
                "schema_version": 1,
                "request_id": str(uuid.uuid4()),
                "credential_id": client_id or self.client_id,
                "model_requested": model or self.served_name,
                "usage": usage,
                "status_code": 200,
                "duration_ms": 1200,
                **data,
            },
        }
        return body

    def post(
        self,
        events: list[dict[str, Any]] | Any,
        *,
        client: APIClient | None = None,
        gzipped: bool = False,
        **headers: Any,
    ) -> Any:
        payload = json.dumps(events).encode()
        extra: dict[str, Any] = dict(headers)
        if gzipped:
            payload = gzip.compress(payload)
            extra["HTTP_CONTENT_ENCODING"] = "gzip"
        return (client or self.collector).post(
            "/api/v1/usage/events", data=payload, content_type="application/cloudevents-batch+json", **extra
        )


def recent(minutes: int = 90) -> datetime:
    """A moment inside the lateness window, on a whole second, at least `minutes` ago."""
    return (datetime.now(UTC) - timedelta(minutes=minutes)).replace(microsecond=0)


def expected_cost(*, input_tokens: int, output_tokens: int, cached: int = 0) -> Decimal:
    """The price list above, applied by hand: uncached input, cached input and output per 1M tokens."""
    return (
        (input_tokens - cached) * PRICES["input"] + cached * PRICES["cached_input"] + output_tokens * PRICES["output"]
    ) / Decimal(1_000_000)


def collector_client(*, prefixes: tuple[str, ...] = ("aigw://",)) -> tuple[APIClient, int]:
    principal = ServicePrincipalFactory()
    issued = api_token_issue(actor=None, principal=principal, name="collector", scopes=["usage:write"])
    for prefix in prefixes:
        usage_services.collector_source_bind(actor=None, token_id=issued.token.pk, source_prefix=prefix)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {issued.plaintext}")
    return client, issued.token.pk


@pytest.fixture
def world(matrix: RoleMatrix) -> UsageWorld:
    version = ManagedVersionFactory(
        model__slug="gpt-test", served_model_name="gpt-test", provider_model_id="gpt-test-2025"
    )
    for usage_type, price in PRICES.items():
        PriceFactory(model=version.model, usage_type=usage_type, price_per_million=price, effective_from=PRICE_START)
    issued = gateway_services.credential_issue(actor=None, team=matrix.team, name="ci")
    other = gateway_services.credential_issue(actor=None, team=matrix.other_team, name="other")
    client, token_id = collector_client()
    return UsageWorld(
        matrix=matrix,
        team=matrix.team,
        client_id=issued.client_id,
        credential_id=issued.credential_id,
        other_client_id=other.client_id,
        model_slug="gpt-test",
        served_name="gpt-test",
        provider_model_id="gpt-test-2025",
        collector=client,
        collector_token_id=token_id,
    )


@pytest.fixture
def rollups() -> Callable[[], int]:
    return usage_services.usage_rollups_recompute
