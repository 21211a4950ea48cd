"""Faults that hit a share of the requests: a soak injects several at once, each on its own probability, and the
same seed fails the same requests."""

from __future__ import annotations

from workers.sandbox.server import Fault, Sandbox


def _hits(sandbox: Sandbox, fault: Fault, requests: int) -> int:
    sandbox.clear_faults()
    sandbox.add_fault(fault)
    return sum(sandbox.take_fault("GET", "/api/v1/namespaces") is not None for _ in range(requests))


def test_a_fault_hits_about_its_share_of_the_requests_and_keeps_hitting(clean_sandbox: Sandbox) -> None:
    hits = _hits(clean_sandbox, Fault(status=500, times=None, probability=0.1), 2000)
    assert 140 <= hits <= 260  # 200 expected; the seeded generator gives the same count every run
    assert _hits(clean_sandbox, Fault(status=500, times=None), 50) == 50  # probability 1: every request
    assert _hits(clean_sandbox, Fault(status=500, times=3, probability=0.5), 100) == 3  # `times` still bounds it
