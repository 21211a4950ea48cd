"""The services of `make test`'s second pytest, the one of the tests that mostly wait (tests/soak).

It runs beside the rest of pytest so that its waiting (a killed worker's message coming back after the broker's
visibility timeout) overlaps the rest's work. Beside it, it needs its own database and Redis database: the soak purges
the broker's queues and Redis keys, and pytest-django creates and drops `test_<name>` of its DATABASE_URL. It gets
the machine's servers with other names: `<database>_waiting`, and Redis database PORTAL_TEST_WAITING_REDIS_DB (13: the
rest of pytest uses 9, tests/e2e's demo 14, the plugin's 15).

Usage: python -m tests.lanes DATABASE_URL=... REDIS_URL=...  ->  "DATABASE_URL=... REDIS_URL=...", or nothing when
one of them is missing (embedded services: one pytest runs everything, since two would share the embedded servers).
"""

from __future__ import annotations

import os
import sys
from urllib.parse import urlsplit, urlunsplit

WAITING_REDIS_DB = int(os.environ.get("PORTAL_TEST_WAITING_REDIS_DB", "13"))


def waiting_lane_services(services: dict[str, str]) -> dict[str, str]:
    """DATABASE_URL and REDIS_URL of the waiting lane, from those of the rest; {} when it cannot have its own."""
    database_url, redis_url = services.get("DATABASE_URL"), services.get("REDIS_URL")
    if not database_url or not redis_url or not redis_url.startswith(("redis://", "rediss://")):
        return {}
    database, redis = urlsplit(database_url), urlsplit(redis_url)
    name = database.path.strip("/") or "portal"
    if (redis.path.strip("/") or "0") == str(WAITING_REDIS_DB):
        return {}  # the rest already uses that Redis database: run everything in one pytest
    return {
        "DATABASE_URL": urlunsplit(database._replace(path=f"/{name}_waiting")),
        "REDIS_URL": urlunsplit(redis._replace(path=f"/{WAITING_REDIS_DB}")),
    }


def main(arguments: list[str]) -> None:
    services = dict(argument.split("=", 1) for argument in arguments if "=" in argument)
    print(" ".join(f"{name}={value}" for name, value in waiting_lane_services(services).items()))


if __name__ == "__main__":
    main(sys.argv[1:])
