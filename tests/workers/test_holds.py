"""What counts as drift: the live object must hold every field the portal sets, with its value."""

from __future__ import annotations

import pytest

from workers.provisioning.reconciler import holds


@pytest.mark.parametrize(
    ("live", "desired", "expected"),
    [
        ({"a": 1, "added": "by the server"}, {"a": 1}, True),
        ({"a": 2}, {"a": 1}, False),
        ({}, {"a": 1}, False),
        ({"cpu": "500m"}, {"cpu": "0.5"}, True),  # the API server writes quantities back canonically
        ({"memory": "32Gi"}, {"memory": "34359738368"}, True),
        ({"memory": "32Gi"}, {"memory": "32G"}, False),
        ({"args": ["--a", "--b"]}, {"args": ["--a"]}, False),  # a list is the portal's whole
        ({"tolerations": [{"key": "k", "effect": "NoSchedule"}]}, {"tolerations": [{"key": "k"}]}, True),
        ({"name": "x"}, {"name": "x", "extra": None}, True),  # a null the portal sets is an absent field
    ],
)
def test_holds(live: object, desired: object, expected: bool) -> None:
    assert holds(live, desired) is expected
