"""The llm-d serving mode as a team meets it, on the demo (portal → worker → sandbox KServe llm-d controller → sandbox
gateway routing to the InferencePool → OTLP → usage): the same catalog model deployed in both modes serves through
the gateway with exact usage, and switching a live deployment's mode loses no request."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from tests.e2e.conftest import Loop, chat_body, wait_until
from workers.sandbox.gateway import predict_usage

pytestmark = pytest.mark.e2e

MODEL = "qwen2-5-7b-instruct"


def _usage(body: dict[str, Any]) -> dict[str, int]:
    usage = body["usage"]
    return {"input_tokens": usage["prompt_tokens"], "output_tokens": usage.get("completion_tokens", 0)}


def _predicted(model: str, content: str, max_tokens: int) -> dict[str, int]:
    predicted = predict_usage(chat_body(content, model, max_tokens))
    return {"input_tokens": predicted["input_tokens"], "output_tokens": predicted["output_tokens"]}


def _llmd_cluster(loop: Loop) -> None:
    """A platform admin declares that the demo's cluster runs the llm-d stack (the starter catalog's Qwen 7B version
    declares both modes)."""
    (cluster,) = loop.api("GET", "/api/v1/clusters").body["results"]
    changed = loop.api("PATCH", f"/api/v1/clusters/{cluster['name']}", {"runs_llmd": True})
    assert changed.status == 200, changed.text


def _deploy(loop: Loop, team: str, name: str, mode: str) -> dict[str, Any]:
    body = {"name": name, "model": MODEL, "accelerator_type": "nvidia-l4", "serving_mode": mode}
    created = loop.api("POST", f"/api/v1/teams/{team}/deployments", body)
    assert created.status == 201, created.text
    return loop.ready(team, name)


def test_one_model_in_both_modes_serves_with_exact_usage_and_a_mode_switch_loses_no_request(loop: Loop) -> None:
    _llmd_cluster(loop)
    team = loop.team("llmd", gpus=4)
    key = loop.key(team)["key"]
    deployments = {mode: _deploy(loop, team, name, mode) for mode, name in (("standard", "std"), ("llm-d", "fast"))}
    sent = 0
    for mode, deployment in deployments.items():
        assert deployment["serving_mode"] == mode
        served = deployment["served_model_name"]
        loop.reaches(key, served)
        sent += 1
        answer = loop.chat(key, served, "which way did you come", max_tokens=16)
        assert answer.status == 200, answer.text
        assert _usage(answer.body) == _predicted(served, "which way did you come", 16)
        sent += 1

    # Switch the standard one to llm-d while a client keeps calling it: every request is answered.
    served = deployments["standard"]["served_model_name"]
    answers: list[int] = []
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            answers.append(loop.chat(key, served, "still there?").status)

    caller = threading.Thread(target=client)
    caller.start()
    try:
        switched = loop.api("PATCH", f"/api/v1/teams/{team}/deployments/std", {"serving_mode": "llm-d"})
        assert switched.status == 200, switched.text

        def switched_and_ready() -> bool:
            found = loop.api("GET", f"/api/v1/teams/{team}/deployments/std").body
            live = found["status"]["observed_generation"] == found["generation"]
            return live and found["status"]["phase"] == "Ready" and found["serving_mode"] == "llm-d"

        wait_until(switched_and_ready, timeout=90, what="std Ready in the llm-d mode")
        manifests = loop.api("GET", f"/api/v1/teams/{team}/deployments/std/manifests").body
        assert "InferenceService" not in {item["kind"] for item in manifests}
        count = len(answers)
        wait_until(lambda: len(answers) > count + 2, timeout=30, what="requests after the switch")
    finally:
        stop.set()
        caller.join(timeout=30)
    assert answers
    assert set(answers) == {200}, f"{len(answers)} requests: {sorted(set(answers))}"
    sent += len(answers)

    # Every request of the team, in both modes and across the switch, is in its cost report.
    def reported() -> dict[str, Any] | None:
        rows = [row for row in loop.costs(team)["series"] if row["model"] == MODEL]
        return rows[0] if rows and rows[0]["requests"] == sent else None

    wait_until(reported, timeout=60, what=f"{sent} requests of {MODEL} in the report")
