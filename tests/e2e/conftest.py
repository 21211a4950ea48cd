"""The whole product, as a user meets it: `manage.py demo` (portal web, worker and beat; the sandbox API server and
its gateway data plane; OTLP ingestion) on a fresh database of the machine's PostgreSQL and a Redis database of its
own, driven only over HTTP: the portal's API with its tokens, the gateway with team keys.

One demo serves the whole module (about 20 s to start); tests use teams of their own, so they do not share limits,
budgets or keys. Beat cadences are shortened (PORTAL_*_SECONDS) so a change shows in seconds, not minutes.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
import redis

ROOT = Path(__file__).resolve().parents[2]
# The demo's broker and cache: never the test run's own database (its queue would be eaten). PORTAL_E2E_REDIS_DB lets
# two checkouts on one machine run their e2e tests at once.
E2E_REDIS_DB = int(os.environ.get("PORTAL_E2E_REDIS_DB", "14"))
CADENCE_SECONDS = "2"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until(check: Callable[[], Any], *, timeout: float = 60.0, interval: float = 0.25, what: str = "") -> Any:
    """Poll `check` until it returns something truthy; fail naming `what` and the last value after `timeout`."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"not within {timeout:.0f} s: {what} (last: {str(last)[:500]})")


@dataclass
class Answer:
    status: int
    body: Any
    headers: dict[str, str]
    text: str


def http(method: str, url: str, *, token: str | None = None, body: Any = None, raw: bytes | None = None) -> Answer:
    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = raw
    if body is not None:
        data = json.dumps(body).encode()
    if data is not None:
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, payload, response_headers = response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as error:
        status, payload, response_headers = error.code, error.read(), dict(error.headers)
    text = payload.decode(errors="replace")
    try:
        parsed: Any = json.loads(text) if text else None
    except ValueError:
        parsed = None
    return Answer(status, parsed, {key.lower(): value for key, value in response_headers.items()}, text)


def chat_body(content: str, model: str, max_tokens: int, *, stream: bool = False) -> dict[str, Any]:
    """A chat completion request as an OpenAI client sends it: one user message."""
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
    }
    if stream:
        body["stream"] = True
    return body


@dataclass
class Loop:
    """The running demo: its addresses and the credentials its banner printed."""

    base: str
    gateway: str
    admin_token: str
    developer_token: str
    demo_key: str
    demo_model: str
    output: list[str] = field(default_factory=list)

    def api(self, method: str, path: str, body: Any = None, *, token: str | None = None) -> Answer:
        return http(method, f"{self.base}{path}", token=token or self.admin_token, body=body)

    def call(
        self, key: str | None, body: Any = None, *, path: str = "/v1/chat/completions", raw: bytes | None = None
    ) -> Answer:
        """One request to the gateway, as a client of the OpenAI API sends it."""
        return http(
            "POST" if body is not None or raw is not None else "GET",
            f"{self.gateway}{path}",
            token=key,
            body=body,
            raw=raw,
        )

    def chat(self, key: str, model: str, content: str, *, max_tokens: int = 8, stream: bool = False) -> Answer:
        return self.call(key, chat_body(content, model, max_tokens, stream=stream))

    # ---- the portal, as a platform admin sets a team up

    def team(self, slug: str, *, gpus: int = 2, **quota: Any) -> str:
        created = self.api("POST", "/api/v1/teams", {"slug": slug, "display_name": slug.title()})
        assert created.status == 201, created.text
        changed = self.api("PATCH", f"/api/v1/teams/{slug}/quota", {"gpus": {"nvidia-l4": gpus}, **quota})
        assert changed.status == 200, changed.text
        return slug

    def key(self, team: str, name: str = "e2e", **options: Any) -> dict[str, Any]:
        issued = self.api("POST", f"/api/v1/teams/{team}/credentials", {"name": name, **options})
        assert issued.status == 201, issued.text
        return dict(issued.body)

    def deploy(self, team: str, name: str, model: str = "qwen2-5-7b-instruct") -> dict[str, Any]:
        created = self.api(
            "POST", f"/api/v1/teams/{team}/deployments", {"name": name, "model": model, "accelerator_type": "nvidia-l4"}
        )
        assert created.status == 201, created.text
        return self.ready(team, name)

    def ready(self, team: str, name: str) -> dict[str, Any]:
        def phase() -> dict[str, Any] | None:
            found = self.api("GET", f"/api/v1/teams/{team}/deployments/{name}")
            return found.body if found.body["status"]["phase"] == "Ready" else None

        return dict(wait_until(phase, timeout=90, what=f"{team}/{name} Ready"))

    def reaches(self, key: str, model: str, *, status: int = 200, timeout: float = 120.0) -> Answer:
        """Wait until the gateway answers `status` to this key and model (its policy and routes converged). The bound
        is generous (it costs nothing when the loop converges in seconds, as it does on an idle machine): a new team's
        first key did not reach the gateway within 60 s while this demo shared two cores with the rest of make test
        and other checkouts' tests (load average 19; the demo then ran after the soak in one pytest)."""
        answers: list[Answer] = []

        def attempt() -> bool:
            answers.append(self.chat(key, model, "are you there"))
            return answers[-1].status == status

        wait_until(
            attempt, timeout=timeout, what=f"{model} answers {status} (last {answers[-1].status if answers else '-'})"
        )
        return answers[-1]

    def costs(self, team: str, group_by: str = "model") -> dict[str, Any]:
        report = self.api("GET", f"/api/v1/teams/{team}/costs?group_by={group_by}")
        assert report.status == 200, report.text
        return dict(report.body)


def _fresh_database(url: str) -> tuple[str, Callable[[], None]]:
    parts = urlsplit(url)
    name = f"e2e_{uuid.uuid4().hex[:10]}"
    admin_url = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin_url, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with psycopg.connect(admin_url, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return urlunsplit(parts._replace(path=f"/{name}")), drop


def _own_redis(url: str, database: int) -> str:
    parts = urlsplit(url)
    own = urlunsplit(parts._replace(path=f"/{database}"))
    redis.Redis.from_url(own).flushdb()
    return own


def _banner(pattern: str, text: str) -> str:
    found = re.search(pattern, text)
    assert found is not None, f"the demo banner has no {pattern!r}:\n{text[-3000:]}"
    return found.group(1)


def _why_no_banner(text: str) -> str:
    """The demo's lines that say why it never printed its banner (a web worker killed while it booted, the web never
    ready, a traceback), which the beat and worker lines after them would otherwise push out of the message."""
    telling = ("TIMEOUT", "did not become ready", "exited", "Traceback", "Error", "error")
    lines = [line for line in text.splitlines() if any(word in line for word in telling)]
    return "\n".join(["the demo printed no banner; its telling lines:", *lines[:40], "its last lines:", text[-2500:]])


@contextlib.contextmanager
def running_demo(*, cadence_seconds: str | None = CADENCE_SECONDS, redis_db: int = E2E_REDIS_DB) -> Iterator[Loop]:
    """`manage.py demo` on a fresh database and Redis database `redis_db` (emptied first), until the block ends;
    `cadence_seconds` None keeps the production beat cadences (a benchmark measures those)."""
    database_url, redis_url = os.environ.get("DATABASE_URL"), os.environ.get("REDIS_URL")
    if not database_url or not redis_url:
        pytest.skip("the e2e tests need DATABASE_URL and REDIS_URL (make test sets them)")
    database, drop_database = _fresh_database(database_url)
    var_dir = ROOT / "var" / f"e2e-{uuid.uuid4().hex[:8]}"
    port = free_port()
    environment = {key: value for key, value in os.environ.items() if key != "DJANGO_SETTINGS_MODULE"}
    environment.update(
        {
            "DATABASE_URL": database,
            "REDIS_URL": _own_redis(redis_url, redis_db),
            "PORTAL_VAR_DIR": str(var_dir),
            "PORTAL_PORT": str(port),
            "PYTHONUNBUFFERED": "1",
            # make test runs this demo beside the plugin's lane and the checks and soak: on a busy machine a gunicorn
            # worker can take more than gunicorn's default 30 s to import the portal, and gunicorn counts booting
            # against --timeout (gunicorn/arbiter.py murder_workers: "WORKER TIMEOUT", then a new worker that boots as
            # slowly), so the web would never be ready. Only the demo's command-line-less setting changes here.
            "GUNICORN_CMD_ARGS": os.environ.get("GUNICORN_CMD_ARGS", "--timeout 120"),
        }
    )
    if cadence_seconds is not None:
        for name in (
            "PORTAL_USAGE_ROLLUP_SECONDS",
            "PORTAL_USAGE_BUDGET_SECONDS",
            "PORTAL_GATEWAY_RESYNC_SECONDS",
            "PORTAL_DEPLOYMENT_RESYNC_SECONDS",
        ):
            environment[name] = cadence_seconds
    demo = subprocess.Popen(
        [sys.executable, "manage.py", "demo"],
        cwd=ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    output: list[str] = []
    banner_seen = threading.Event()

    def read() -> None:
        assert demo.stdout is not None
        for line in demo.stdout:
            output.append(line)
            if "Press Ctrl-C" in line:
                banner_seen.set()
        banner_seen.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        banner_seen.wait(timeout=240)
        text = "".join(output)
        assert "Press Ctrl-C" in text, _why_no_banner(text)
        yield Loop(
            base=f"http://127.0.0.1:{port}",
            gateway=_banner(r"Gateway \(OpenAI-compatible\): (http://\S+)/v1", text),
            admin_token=_banner(r"platform admin:\s+(gpt_\S+)", text),
            developer_token=_banner(r"team 'demo' admin\): (gpt_\S+)", text),
            demo_key=_banner(r"gateway key \(shown once\): (\S+)", text),
            demo_model=_banner(r"is served as '([^']+)'", text),
            output=output,
        )
    finally:
        demo.send_signal(signal.SIGINT)
        try:
            demo.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait()
        reader.join(timeout=5)
        drop_database()
        shutil.rmtree(var_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def loop() -> Iterator[Loop]:
    with running_demo() as running:
        yield running
