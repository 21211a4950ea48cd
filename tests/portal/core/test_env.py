"""Startup fails fast with a message naming the variable when a setting is malformed."""

from __future__ import annotations

import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from portal.settings.env import ConfigurationError, Environment

ROOT = Path(__file__).resolve().parents[3]


def test_typed_readers_accept_good_values() -> None:
    env = Environment({"N": "5", "B": "yes", "D": "12.50", "U": "redis://h:1/0", "L": "a, b,,c"})
    assert env.integer("N", 1, minimum=0) == 5
    assert env.boolean("B", default=False) is True
    assert env.decimal("D", Decimal("0")) == Decimal("12.50")
    assert env.url("U", schemes=frozenset({"redis"})) == "redis://h:1/0"
    assert env.text_list("L", []) == ["a", "b", "c"]
    assert env.integer("MISSING", 7) == 7


@pytest.mark.parametrize(
    ("values", "call", "message"),
    [
        ({"N": "five"}, lambda env: env.integer("N", 1), "N must be an integer"),
        ({"N": "-1"}, lambda env: env.integer("N", 1, minimum=0), "N must be at least 0"),
        ({"B": "maybe"}, lambda env: env.boolean("B", default=False), "B must be one of"),
        ({"D": "NaN"}, lambda env: env.decimal("D", Decimal("1")), "D must be a finite"),
        (
            {"U": "mysql://x"},
            lambda env: env.url("U", schemes=frozenset({"postgres"})),
            "U must be a URL with scheme postgres",
        ),
        ({"C": "purple"}, lambda env: env.choice("C", "a", choices=frozenset({"a", "b"})), "C must be one of a, b"),
    ],
)
def test_bad_values_name_the_variable(values: dict[str, str], call: object, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        call(Environment(values))  # type: ignore[operator]


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("DATABASE_URL", "mysql://root@localhost/portal", "DATABASE_URL must be a URL with scheme"),
        ("PORTAL_PORT", "eighty", "PORTAL_PORT must be an integer"),
        ("PORTAL_DEFAULT_GPU_QUOTA", "nvidia-l4=2", "PORTAL_DEFAULT_GPU_QUOTA entries must look like"),
        ("DJANGO_SECRET_KEY", "short", "DJANGO_SECRET_KEY must be at least 32 characters"),
    ],
)
def test_process_startup_fails_fast_with_a_clear_message(name: str, value: str, message: str) -> None:
    environment = {**os.environ, name: value, "DJANGO_SETTINGS_MODULE": "portal.settings"}
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert message in result.stderr
