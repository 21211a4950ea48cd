"""Real Celery worker processes for tests: `celery worker` subprocesses on the test run's broker (its Redis
database) and test database, one queue each, as k8s/portal runs them. A test that uses them needs a transactional
database (`django_db(transaction=True)`): a worker sees only what was committed."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import redis
from django.conf import settings
from django.db import connection

from portal.core.queues import celery_queues

ROOT = Path(__file__).resolve().parents[2]
CELERY = str(Path(sys.executable).with_name("celery"))


def worker_environment(**extra: str) -> dict[str, str]:
    """The environment of a worker of this test run: its test database and its Redis database."""
    database = connection.settings_dict
    password = f":{quote(str(database['PASSWORD']))}" if database.get("PASSWORD") else ""
    host = database.get("HOST") or "127.0.0.1"
    port = f":{database['PORT']}" if database.get("PORT") else ""
    environment = dict(os.environ)
    environment.update(
        {
            "DATABASE_URL": f"postgres://{quote(str(database['USER']))}{password}@{host}{port}/{database['NAME']}",
            "REDIS_URL": settings.RESOLVED_REDIS_URL,
            "PORTAL_LOG_FORMAT": "plain",
            **extra,
        }
    )
    return environment


def purge_queues() -> None:
    """Every queue, and the messages workers took but never acknowledged (a killed worker's)."""
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    client.delete(*celery_queues(), "unacked", "unacked_index", "unacked_mutex")


def queued_messages() -> int:
    """Messages waiting in every queue, plus those taken and not yet acknowledged."""
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    waiting = sum(int(client.llen(queue)) for queue in celery_queues())
    return waiting + int(client.hlen("unacked"))


class CeleryWorker:
    """One `celery worker` process tree (its main process and prefork children), in a process group of its own."""

    def __init__(self, queue: str, *, name: str, concurrency: int, environment: dict[str, str], log: Path) -> None:
        self.queue, self.name, self.concurrency = queue, name, concurrency
        self.environment, self.log = environment, log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> CeleryWorker:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self._offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as output:
            self.process = subprocess.Popen(
                [
                    CELERY,
                    "--app=portal",
                    "worker",
                    f"--queues={self.queue}",
                    f"--hostname={self.name}@%h",
                    f"--concurrency={self.concurrency}",
                    "--loglevel=INFO",
                    "--without-gossip",
                    "--without-mingle",
                    "--without-heartbeat",
                ],
                cwd=ROOT,
                env=self.environment,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: a kill takes its children too, as a pod's would
            )
        return self

    def wait_ready(self, timeout: float = 60.0) -> CeleryWorker:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"worker {self.name} exited: {self.log.read_text()[-3000:]}")
            with self.log.open("rb") as output:
                output.seek(self._offset)
                if b" ready." in output.read():
                    return self
            time.sleep(0.1)
        raise AssertionError(f"worker {self.name} not ready after {timeout:.0f} s: {self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL to the whole tree, as when a node dies: no task is finished, no message acknowledged."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        """A warm shutdown (SIGTERM: running tasks finish), then SIGKILL if it takes too long."""
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()
