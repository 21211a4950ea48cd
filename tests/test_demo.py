"""`make demo` end to end: embedded PostgreSQL and Redis, web, worker and beat, then Ctrl-C leaves nothing running."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _get(url: str, token: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def _post(url: str, token: str, body: dict[str, object]) -> tuple[int, bytes]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_make_demo_serves_the_portal_and_stops_cleanly() -> None:
    # Under the repository (not /tmp): the embedded PostgreSQL runs as its own system user when we are root.
    var_dir = ROOT / "var" / f"demo-test-{uuid.uuid4().hex[:8]}"
    port = _free_port()
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "DJANGO_SETTINGS_MODULE"}
    }
    environment.update({"PORTAL_VAR_DIR": str(var_dir), "PORTAL_PORT": str(port), "PYTHONUNBUFFERED": "1"})
    demo = subprocess.Popen(
        [sys.executable, "manage.py", "demo"],
        cwd=ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: list[str] = []
    try:
        deadline = time.monotonic() + 180
        assert demo.stdout is not None
        while time.monotonic() < deadline:
            line = demo.stdout.readline()
            if not line:
                break
            output.append(line)
            if "Press Ctrl-C" in line:
                break
        text = "".join(output)
        assert "Press Ctrl-C" in text, text[-3000:]
        developer_token = re.search(r"team 'demo' admin\): (gpt_\S+)", text).group(1)  # type: ignore[union-attr]
        base = f"http://127.0.0.1:{port}"
        assert f"{base}/api/docs/" in text

        assert _get(f"{base}/healthz")[0] == 200
        assert _get(f"{base}/readyz")[0] == 200
        status, body = _get(f"{base}/api/v1/catalog/models?page_size=200", developer_token)
        assert status == 200
        catalog = json.loads(body)
        assert catalog["count"] >= 10
        status, body = _get(f"{base}/api/schema/?format=json")
        assert status == 200
        assert json.loads(body)["openapi"].startswith("3.")
        status, body = _get(f"{base}/api/v1/me", developer_token)
        assert json.loads(body)["teams"] == [{"team": "demo", "display_name": "Demo team", "role": "admin"}]

        # The banner's deployment reaches Ready on the sandbox cluster, and its curl works through the gateway.
        deadline = time.monotonic() + 120
        phase = ""
        while time.monotonic() < deadline:
            status, body = _get(f"{base}/api/v1/teams/demo/deployments/chat", developer_token)
            phase = json.loads(body)["status"]["phase"]
            if phase == "Ready":
                break
            time.sleep(1)
        assert phase == "Ready", body
        assert json.loads(body)["status"]["endpoint"]
        curl = re.search(
            r"curl -s (http://\S+/v1/chat/completions) -H 'Authorization: Bearer (\S+)' .* -d '(.+)'", text
        )
        assert curl is not None, text[-3000:]
        gateway_url, key, payload = curl.group(1), curl.group(2), json.loads(curl.group(3))
        deadline = time.monotonic() + 60
        answer: tuple[int, bytes] = (0, b"")
        while time.monotonic() < deadline:
            answer = _post(gateway_url, key, payload)
            if answer[0] == 200:
                break
            time.sleep(0.5)
        assert answer[0] == 200, answer
        assert json.loads(answer[1])["usage"]["completion_tokens"] == payload["max_tokens"]
    finally:
        demo.send_signal(signal.SIGINT)
        try:
            rest, _ = demo.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            demo.kill()
            rest, _ = demo.communicate()
        output.append(rest or "")
    try:
        assert demo.returncode == 0, "".join(output)[-3000:]
        assert "nothing left running" in "".join(output)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        assert not (var_dir / "postgres" / "postmaster.pid").exists()
        sandbox_port = int(re.search(r"Sandbox cluster: http://127.0.0.1:(\d+)", "".join(output)).group(1))  # type: ignore[union-attr]
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", sandbox_port), timeout=1).close()
        redis_pidfile = var_dir / "redis" / "redis.pid"
        if redis_pidfile.exists():
            assert not _alive(int(redis_pidfile.read_text().strip()))
    finally:
        shutil.rmtree(var_dir, ignore_errors=True)
