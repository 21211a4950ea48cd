"""Find the machine's own PostgreSQL and Redis for `make test` (a CI machine provides both);
print nothing for a service that is absent, so the settings fall back to the embedded one.

Usage: python -m portal.localservices  ->  lines like DATABASE_URL=...  (only for services not already set)
"""

from __future__ import annotations

import os
import socket

CANDIDATES = {
    "DATABASE_URL": (("127.0.0.1", 5432), "postgres://postgres@127.0.0.1:5432/portal"),
    "REDIS_URL": (("127.0.0.1", 6379), "redis://127.0.0.1:6379/9"),
}


def _answers(address: tuple[str, int]) -> bool:
    try:
        with socket.create_connection(address, timeout=0.5):
            return True
    except OSError:
        return False


def _postgres_accepts(url: str) -> bool:
    import psycopg

    try:
        with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", connect_timeout=2):
            return True
    except psycopg.Error:
        return False


def main() -> None:
    for name, (address, url) in CANDIDATES.items():
        if os.environ.get(name):
            print(f"{name}={os.environ[name]}")
            continue
        if not _answers(address):
            continue
        if name == "DATABASE_URL" and not _postgres_accepts(url):
            continue
        print(f"{name}={url}")


if __name__ == "__main__":
    main()
