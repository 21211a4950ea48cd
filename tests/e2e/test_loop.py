"""One request from a team's key, through the gateway, to its cost line: each feature walked the way its user does,
across every part it crosses (portal API → worker → sandbox cluster → sandbox gateway → OTLP → usage → report)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from tests.e2e.conftest import Loop, chat_body, wait_until
from workers.sandbox.gateway import predict_usage

pytestmark = pytest.mark.e2e

MANAGED = "gpt-4o-mini"
MILLION = Decimal(1_000_000)


def _prices(loop: Loop, model: str) -> dict[str, Decimal]:
    found = loop.api("GET", f"/api/v1/catalog/models/{model}")
    assert found.status == 200, found.text
    return {price["usage_type"]: Decimal(price["price_per_million"]) for price in found.body["prices"]}


def _cost(prices: dict[str, Decimal], usage: dict[str, int]) -> Decimal:
    """The price list applied by hand: uncached input, cached input (at the input price when unpriced), output."""
    cached = usage.get("cached_input_tokens", 0)
    uncached = usage["input_tokens"] - cached
    return (
        uncached * prices.get("input", Decimal(0))
        + cached * prices.get("cached_input", prices.get("input", Decimal(0)))
        + usage.get("output_tokens", 0) * prices.get("output", Decimal(0))
    ) / MILLION


def _sum(usages: list[dict[str, int]]) -> dict[str, int]:
    keys = ("input_tokens", "cached_input_tokens", "output_tokens")
    return {key: sum(usage.get(key, 0) for usage in usages) for key in keys}


def _model_row(loop: Loop, team: str, model: str) -> dict[str, Any] | None:
    return next((row for row in loop.costs(team)["series"] if row["model"] == model), None)


def _reported(loop: Loop, team: str, model: str, requests: int) -> dict[str, Any] | None:
    row = _model_row(loop, team, model)
    return row if row is not None and row["requests"] >= requests else None


def _stream_usage(text: str) -> dict[str, int]:
    """The usage of a streamed completion: the last data chunk that carries one (stream_options.include_usage)."""
    usage: dict[str, int] = {}
    for line in text.splitlines():
        if line.startswith("data: ") and line != "data: [DONE]":
            chunk = json.loads(line.removeprefix("data: "))
            usage = chunk.get("usage") or usage
    return {key: int(value) for key, value in usage.items() if isinstance(value, int)}


def _usage_of(answer_body: dict[str, Any]) -> dict[str, int]:
    usage = answer_body["usage"]
    details = usage.get("prompt_tokens_details") or {}
    return {
        "input_tokens": usage["prompt_tokens"],
        "cached_input_tokens": details.get("cached_tokens", 0),
        "output_tokens": usage.get("completion_tokens", 0),
    }


def test_a_request_through_the_gateway_reaches_the_teams_cost_report_exactly(loop: Loop) -> None:
    """Self-hosted and managed, plain and streamed: the tokens the gateway answered with are the tokens the team is
    charged, at the catalog's prices (an internal price set for the self-hosted model, the list price for the
    managed one)."""
    team = loop.team("loop")
    key = loop.key(team)["key"]
    deployment = loop.deploy(team, "chat")
    served = deployment["served_model_name"]
    assert served == "loop--chat"
    loop.api(
        "POST",
        "/api/v1/catalog/models/qwen2-5-7b-instruct/prices",
        {"usage_type": "input", "price_per_million": "0.050000", "effective_from": "2026-01-01T00:00:00Z"},
    )
    loop.api(
        "POST",
        "/api/v1/catalog/models/qwen2-5-7b-instruct/prices",
        {"usage_type": "output", "price_per_million": "0.150000", "effective_from": "2026-01-01T00:00:00Z"},
    )
    loop.reaches(key, served)
    loop.reaches(key, MANAGED)
    expected: dict[str, list[dict[str, int]]] = {"qwen2-5-7b-instruct": [], MANAGED: []}
    # the two requests reaches() made
    for model, slug in ((served, "qwen2-5-7b-instruct"), (MANAGED, MANAGED)):
        expected[slug].append(_sum([predict_usage(chat_body("are you there", model, 8))]))
    for model, slug in ((served, "qwen2-5-7b-instruct"), (MANAGED, MANAGED)):
        plain = loop.call(key, chat_body("tell me about the loop from a key to a cost line", model, 24))
        assert plain.status == 200, plain.text
        assert plain.body["model"]  # the upstream answered
        usage = _usage_of(plain.body)
        assert usage == _sum([predict_usage(chat_body("tell me about the loop from a key to a cost line", model, 24))])
        expected[slug].append(usage)
        streamed = loop.call(key, chat_body("and now streamed, please", model, 12, stream=True))
        assert streamed.status == 200, streamed.text
        usage = _stream_usage(streamed.text)
        predicted = predict_usage(chat_body("and now streamed, please", model, 12, stream=True))
        assert {
            key: usage.get(key_map, 0)
            for key, key_map in (("input_tokens", "prompt_tokens"), ("output_tokens", "completion_tokens"))
        } == {
            "input_tokens": predicted["input_tokens"],
            "output_tokens": predicted["output_tokens"],
        }
        expected[slug].append(_sum([predicted]))

    for slug, usages in expected.items():
        row = wait_until(
            lambda slug=slug, usages=usages: _reported(loop, team, slug, len(usages)),
            timeout=60,
            what=f"{slug} in the report",
        )
        total = _sum(usages)
        assert row["requests"] == len(usages)
        assert (row["input_tokens"], row["cached_input_tokens"], row["output_tokens"]) == (
            total["input_tokens"],
            total["cached_input_tokens"],
            total["output_tokens"],
        )
        prices = _prices(loop, slug)
        assert Decimal(row["token_cost"]) == sum((_cost(prices, usage) for usage in usages), Decimal(0)), slug


def test_teams_whose_names_once_collided_each_reach_only_their_own_model(loop: Loop) -> None:
    first, second = loop.team("team"), loop.team("team-b")
    first_key, second_key = loop.key(first)["key"], loop.key(second)["key"]
    mine = loop.deploy(first, "b-bchat")["served_model_name"]
    theirs = loop.deploy(second, "bchat")["served_model_name"]
    assert mine != theirs
    assert loop.reaches(first_key, mine).body["model"] == mine
    assert loop.reaches(second_key, theirs).body["model"] == theirs
    # neither key reaches the other team's model: no route matches it for that key
    assert loop.chat(first_key, theirs, "hello").status == 404
    assert loop.chat(second_key, mine, "hello").status == 404
    # and both still Ready, their routes their own
    for team, name in ((first, "b-bchat"), (second, "bchat")):
        assert loop.api("GET", f"/api/v1/teams/{team}/deployments/{name}").body["status"]["phase"] == "Ready"


def test_a_revoked_or_expired_key_is_refused_within_one_reconcile(loop: Loop) -> None:
    team = loop.team("keys")
    revoked = loop.key(team, "revoked")
    expiring = loop.key(team, "expiring", expires_at=(datetime.now(UTC) + timedelta(seconds=20)).isoformat())
    loop.reaches(revoked["key"], MANAGED)
    loop.reaches(expiring["key"], MANAGED)
    assert loop.api("DELETE", f"/api/v1/teams/{team}/credentials/{revoked['id']}").status in (200, 204)
    loop.reaches(revoked["key"], MANAGED, status=401, timeout=60)
    loop.reaches(expiring["key"], MANAGED, status=401, timeout=90)


def test_the_token_limit_answers_429_and_usage_counts_what_passed(loop: Loop) -> None:
    team = loop.team("limited", tokens_per_minute=60)
    key = loop.key(team)["key"]
    first = loop.reaches(key, MANAGED)
    usages = [_usage_of(first.body)]
    charged_at = [time.time()]  # tokens are charged when the response ends
    statuses: list[int] = []
    while 429 not in statuses and len(statuses) < 40:  # until the team's limit reached the gateway and was spent
        answer = loop.chat(key, MANAGED, "spend some tokens on this request", max_tokens=30)
        statuses.append(answer.status)
        if answer.status == 200:
            usages.append(_usage_of(answer.body))
            charged_at.append(time.time())
        time.sleep(0.1)
    refused_at = time.time()
    assert statuses[-1] == 429, statuses
    # The request that crossed 60 completed, the next was refused: the tokens charged in the refusal's window are over
    # the limit. The windows are fixed minutes aligned to the epoch (workers/sandbox/gateway_ratelimit.py, as
    # envoyproxy/ratelimit counts), so requests before a minute boundary count in the one before; it may take more
    # than three requests to cross 60 (an earlier form summed the last three and failed when it took four).
    window_start = int(refused_at) - int(refused_at) % 60
    in_window = [usage for usage, at in zip(usages, charged_at, strict=True) if at >= window_start]
    assert sum(usage["input_tokens"] + usage["output_tokens"] for usage in in_window) > 60, (usages, charged_at)
    wait_until(lambda: _reported(loop, team, MANAGED, len(usages)), timeout=60, what="passed requests reported")
    time.sleep(4)  # two more rollup cadences: nothing else may arrive
    row = _model_row(loop, team, MANAGED)
    assert row is not None
    total = _sum(usages)
    assert (row["requests"], row["failed_requests"]) == (len(usages), 0)
    assert (row["input_tokens"], row["output_tokens"]) == (total["input_tokens"], total["output_tokens"])


def test_a_budget_block_refuses_until_an_admin_lifts_it_and_a_suspended_team_is_refused(loop: Loop) -> None:
    team = loop.team("budget", monthly_budget="0.01", budget_policy="block")
    key = loop.key(team)["key"]
    loop.reaches(key, MANAGED)
    # spend past 0.01 USD: gpt-4o-mini output at its list price, a few large answers
    for _ in range(4):
        loop.chat(key, MANAGED, "a long answer please", max_tokens=8000)
    wait_until(
        lambda: loop.api("GET", f"/api/v1/teams/{team}/budget").body.get("enforcement") == "block",
        timeout=60,
        what="the budget block",
    )
    blocked = loop.reaches(key, MANAGED, status=429, timeout=90)
    assert blocked.status == 429
    lifted = loop.api("POST", f"/api/v1/teams/{team}/budget/lift", {"reason": "e2e: approved overspend"})
    assert lifted.status == 200, lifted.text
    loop.reaches(key, MANAGED, status=200, timeout=90)

    suspended = loop.api("PATCH", f"/api/v1/teams/{team}", {"status": "suspended"})
    assert suspended.status == 200, suspended.text
    refused = loop.reaches(key, MANAGED, status=429, timeout=90)
    assert refused.status == 429


def test_bad_input_at_the_gateway_gets_envoys_answers_and_no_usage(loop: Loop) -> None:
    team = loop.team("refused")
    key = loop.key(team)["key"]
    loop.reaches(key, MANAGED)
    baseline = wait_until(lambda: _reported(loop, team, MANAGED, 1), timeout=60, what="the first request reported")
    assert loop.chat("", MANAGED, "no key").status == 401
    assert loop.chat("gpk_000000000000_wrong", MANAGED, "wrong key").status == 401
    assert loop.chat(key, "no-such-model", "unknown model").status == 404
    malformed = loop.call(key, raw=b'{"model": ')
    assert malformed.status == 400, malformed.text
    time.sleep(4)  # two rollup cadences
    row = _model_row(loop, team, MANAGED)
    assert row is not None
    assert row["requests"] == baseline["requests"]
    quarantine = loop.api("GET", "/api/v1/usage/quarantine")
    assert quarantine.status == 200
    assert not [event for event in quarantine.body["results"] if "no-such-model" in json.dumps(event)]


def test_a_new_team_deploys_and_calls_its_model_without_an_admin_step(loop: Loop) -> None:
    """Self-service as a team meets it (issue 18): a person creates a team (Backstage's onboarding does the same), which
    gets the default GPU quota (`make demo`: PORTAL_DEFAULT_GPU_QUOTA=nvidia-l4:2), deploys to Ready, issues a key and
    calls its model through the gateway; only the person's own token is used. More quota is a request a platform
    admin approves, after which the bigger deployment is admitted."""
    person = loop.developer_token  # user:default/demo-developer, a person; never the platform admin's token
    slug = "self-serve"
    created = loop.api("POST", "/api/v1/teams", {"slug": slug, "display_name": "Self serve"}, token=person)
    assert created.status == 201, created.text
    quota = loop.api("GET", f"/api/v1/teams/{slug}/quota", token=person)
    assert quota.body["gpus"] == {"nvidia-l4": 2}, quota.text

    deployed = loop.api(
        "POST",
        f"/api/v1/teams/{slug}/deployments",
        {"name": "chat", "model": "qwen2-5-7b-instruct", "accelerator_type": "nvidia-l4"},
        token=person,
    )
    assert deployed.status == 201, deployed.text

    def ready() -> dict[str, Any] | None:
        found = loop.api("GET", f"/api/v1/teams/{slug}/deployments/chat", token=person)
        return found.body if found.body["status"]["phase"] == "Ready" else None

    deployment = wait_until(ready, timeout=90, what=f"{slug}/chat Ready")
    issued = loop.api("POST", f"/api/v1/teams/{slug}/credentials", {"name": "app"}, token=person)
    assert issued.status == 201, issued.text
    answer = loop.reaches(issued.body["key"], deployment["served_model_name"])
    assert answer.body["model"] == deployment["served_model_name"]

    # More than the default: refused for quota, asked for, approved by a platform admin, then admitted.
    bigger = {"name": "batch", "model": "qwen2-5-7b-instruct", "accelerator_type": "nvidia-l4", "max_replicas": 3}
    refused = loop.api("POST", f"/api/v1/teams/{slug}/deployments", bigger, token=person)
    assert (refused.status, refused.body["code"]) == (409, "gpu_quota_exceeded"), refused.text
    asked = loop.api(
        "POST", f"/api/v1/teams/{slug}/quota-requests", {"gpus": {"nvidia-l4": 4}, "reason": "batch"}, token=person
    )
    assert asked.status == 201, asked.text
    approved = loop.api("POST", f"/api/v1/teams/{slug}/quota-requests/{asked.body['id']}/approve", {"note": "ok"})
    assert (approved.status, approved.body["status"]) == (200, "approved"), approved.text
    admitted = loop.api("POST", f"/api/v1/teams/{slug}/deployments", bigger, token=person)
    assert admitted.status == 201, admitted.text
