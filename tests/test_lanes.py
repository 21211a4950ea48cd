"""make test's pytest of the waiting tests gets a database and a Redis database of its own, or none (one pytest)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.lanes import WAITING_REDIS_DB, waiting_lane_services

ROOT = Path(__file__).resolve().parents[1]


def test_the_waiting_lane_gets_its_own_database_name_and_redis_database_on_the_same_servers() -> None:
    services = {
        "DATABASE_URL": "postgres://ci:secret@db:5433/portal?sslmode=disable",
        "REDIS_URL": "redis://cache:6380/9",
    }
    assert waiting_lane_services(services) == {
        "DATABASE_URL": "postgres://ci:secret@db:5433/portal_waiting?sslmode=disable",
        "REDIS_URL": f"redis://cache:6380/{WAITING_REDIS_DB}",
    }


def test_without_both_servers_or_with_its_redis_database_taken_everything_runs_in_one_pytest() -> None:
    database = "postgres://postgres@127.0.0.1:5432/portal"
    assert waiting_lane_services({"DATABASE_URL": database}) == {}  # embedded Redis
    assert waiting_lane_services({"REDIS_URL": "redis://127.0.0.1:6379/9"}) == {}  # embedded PostgreSQL
    assert waiting_lane_services({"DATABASE_URL": database, "REDIS_URL": "unix:///var/redis.sock"}) == {}
    taken = f"redis://127.0.0.1:6379/{WAITING_REDIS_DB}"
    assert waiting_lane_services({"DATABASE_URL": database, "REDIS_URL": taken}) == {}


def test_the_makefile_reads_it_from_the_command_line() -> None:
    printed = subprocess.run(
        [sys.executable, "-m", "tests.lanes", "DATABASE_URL=postgres://h/portal", "REDIS_URL=redis://h:6379/9"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin", "PORTAL_TEST_WAITING_REDIS_DB": "12"},
    ).stdout
    assert printed.split() == ["DATABASE_URL=postgres://h/portal_waiting", "REDIS_URL=redis://h:6379/12"]
    nothing = subprocess.run(
        [sys.executable, "-m", "tests.lanes"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert nothing.strip() == ""
