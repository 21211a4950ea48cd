"""Status of an llm-d deployment and of a Kueue-queued one, from the objects as KServe, the AI gateway and Kueue
write them (pure: dicts in, an ObservedStatus out)."""

from __future__ import annotations

from typing import Any

from portal.deployments.contracts import ObservedStatus
from workers.provisioning.status import derive_llmd_status, llmd_serving_ready, queued_by_kueue


def _condition(kind: str, status: str, reason: str = "", message: str = "") -> dict[str, str]:
    return {"type": kind, "status": status, "reason": reason, "message": message}


def _service(*conditions: dict[str, str], generation: int = 1, observed: int = 1) -> dict[str, Any]:
    return {
        "metadata": {"name": "chat", "generation": generation},
        "status": {"observedGeneration": observed, "conditions": list(conditions)},
    }


# KServe v0.20.0 with the AIGatewayRoute as the only route: workloads serve, Ready stays False (WaitingForGateway).
SERVING = _service(
    _condition(
        "Ready", "False", "WaitingForGateway", "Inference Pool x exists but no Gateway controller has accepted it"
    ),
    _condition("WorkloadsReady", "True"),
    _condition("SchedulerWorkloadReady", "True"),
    _condition("PresetsCombined", "True"),
)
POOL: dict[str, Any] = {"metadata": {"name": "chat-inference-pool"}, "status": {}}
ROUTE = {"status": {"conditions": [_condition("Accepted", "True", "Accepted")]}}


def _status(service: dict[str, Any] | None = SERVING, pool: dict[str, Any] | None = POOL, route: Any = ROUTE):  # type: ignore[no-untyped-def]
    return derive_llmd_status(
        llm_inference_service=service,
        inference_pool=pool,
        route=route,
        endpoint_base="https://gw.example",
        served_model_name="alpha--chat",
        ready_replicas=2,
    )


def test_serving_workloads_with_an_accepted_route_are_ready_though_kserves_ready_waits_for_a_gateway() -> None:
    status = _status()
    assert (status.phase, status.endpoint, status.observed_replicas) == ("Ready", "https://gw.example/v1", 2)
    assert status.message == "serving 'alpha--chat' through the gateway (llm-d)"
    assert [item["type"] for item in status.conditions] == [
        "Ready",
        "WorkloadsReady",
        "SchedulerWorkloadReady",
        "PresetsCombined",
        "RouteAccepted",
    ]


def test_not_ready_until_the_pool_exists_and_the_latest_spec_is_acted_on() -> None:
    assert not llmd_serving_ready(SERVING, None)
    assert _status(pool=None).message == "waiting for the InferencePool"
    stale = _service(_condition("WorkloadsReady", "True"), generation=3, observed=2)
    assert _status(service=stale).message == "rolling out generation 3 of the LLMInferenceService"
    assert _status(service=None).phase == "Pending"


def test_a_workload_still_starting_says_what_it_waits_for() -> None:
    starting = _service(
        _condition("WorkloadsReady", "False", "Progressing"),
        _condition("MainWorkloadReady", "False", "MinimumReplicasUnavailable", "Deployment does not have minimum"),
    )
    status = _status(service=starting)
    assert (status.phase, status.message, status.endpoint) == ("Provisioning", "Deployment does not have minimum", "")


def test_a_refused_route_or_pool_is_degraded_and_presets_that_do_not_combine_fail() -> None:
    refused = {"status": {"conditions": [_condition("Accepted", "False", "Invalid", "no such backend")]}}
    assert (_status(route=refused).phase, _status(route=refused).message) == (
        "Degraded",
        "the gateway did not accept the route: no such backend",
    )
    pool = {"status": {"parents": [{"conditions": [_condition("Accepted", "False", "NotAccepted", "epp missing")]}]}}
    assert _status(pool=pool).phase == "Degraded"
    broken = _service(_condition("PresetsCombined", "False", "CombineBaseError", "no such preset"))
    assert (_status(service=broken).phase, _status(service=broken).message) == (
        "Failed",
        "CombineBaseError: no such preset",
    )


WAITING = {
    "status": {
        "conditions": [
            _condition(
                "QuotaReserved",
                "False",
                "Pending",
                "couldn't assign flavors to pod set main: insufficient unused quota for nvidia.com/gpu in flavor "
                "nvidia-l4, 1 more needed",
            )
        ]
    }
}
ADMITTED = {"status": {"conditions": [_condition("QuotaReserved", "True", "QuotaReserved")]}}


def test_a_replica_kueue_queues_is_said_with_kueues_reason() -> None:
    starting = ObservedStatus("Provisioning", (), "starting the model server", "", 0)
    queued = queued_by_kueue(starting, [ADMITTED, WAITING])
    assert queued.phase == "Provisioning"
    assert queued.message == (
        "1 replica(s) queued by Kueue (Pending): couldn't assign flavors to pod set main: insufficient unused quota "
        "for nvidia.com/gpu in flavor nvidia-l4, 1 more needed"
    )
    assert queued.conditions[-1]["type"] == "KueueQuotaReserved"
    serving = ObservedStatus("Ready", (), "serving", "https://gw/v1", 1)
    assert queued_by_kueue(serving, [WAITING]).phase == "Ready"  # it serves, with a replica short
    assert queued_by_kueue(serving, [ADMITTED]) == serving
