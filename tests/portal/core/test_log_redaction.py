"""No secret reaches a log: the demo's real gunicorn (access log and Django's warnings) serving one-time reveal links.

A reveal link's secret is its path (/reveal/<token>): an access log that wrote it would let anyone who reads the logs
reveal the key first. The page itself only describes the link on GET and reveals on an explicit POST (RFC 9110
section 9.2.1: GET is safe, so link previews and prefetchers must not use the link up); the logs hold neither.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.db import connection

from portal.core.logs import REDACTED, JsonFormatter, RedactSecretsFilter, redact_secrets
from portal.gateway import services as gateway_services
from portal.gateway.models import Credential
from portal.ops.management.commands.demo import web_command
from tests.factories import MembershipFactory, TeamFactory, UserFactory

ROOT = Path(__file__).resolve().parents[3]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _call(url: str, method: str = "GET") -> int:
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            response.read()
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except urllib.error.URLError:
        return 0  # not listening (yet)


class ServedPortal:
    """The demo's web command on a free port, on this test's database; `stop()` returns every line it logged."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        database = connection.settings_dict
        environment = {
            **os.environ,
            "DATABASE_URL": f"postgres://{database['USER']}@{database['HOST'] or '127.0.0.1'}:{database['PORT']}/"
            f"{database['NAME']}",
            "PYTHONUNBUFFERED": "1",
            "PORTAL_LOG_LEVEL": "INFO",
        }
        self.log_path = ROOT / "var" / f"test-log-redaction-{self.port}.log"
        self.log_path.parent.mkdir(exist_ok=True)
        self.log = self.log_path.open("w+")
        self.process = subprocess.Popen(
            web_command(f"127.0.0.1:{self.port}"), cwd=ROOT, env=environment, stdout=self.log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 120
        while _call(f"{self.url}/healthz") != 200:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"gunicorn did not serve:\n{self.stop()}")
            time.sleep(0.3)

    def stop(self) -> str:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)
        if self.log.closed:
            return ""
        self.log.seek(0)
        text = self.log.read()
        self.log.close()
        self.log_path.unlink(missing_ok=True)
        return text


@pytest.fixture
def served_portal(transactional_db: None) -> Iterator[ServedPortal]:
    served = ServedPortal()
    try:
        yield served
    finally:
        served.stop()


def test_reveal_links_and_keys_never_reach_the_real_logs(served_portal: ServedPortal) -> None:
    base = served_portal.url
    team = TeamFactory(slug="logs")
    developer = MembershipFactory(team=team, role="developer", user=UserFactory()).user
    issued = gateway_services.credential_issue(actor=developer, team=team, name="app")
    credential = Credential.objects.get(pk=issued.credential_id)
    link = gateway_services.credential_reveal_link_create(actor=developer, credential=credential)
    unknown = link.token[:-4] + ("abcd" if not link.token.endswith("abcd") else "wxyz")

    assert _call(f"{base}/reveal/{link.token}") == 200  # the page describes the link; the key is not shown
    assert _call(f"{base}/reveal/{link.token}") == 200  # a link preview does not use it up
    assert _call(f"{base}/reveal/{link.token}", "POST") == 200  # the key, once
    assert _call(f"{base}/reveal/{link.token}", "POST") == 410  # gone: Django warns about it
    assert _call(f"{base}/reveal/{unknown}") == 404  # Django warns "Not Found: /reveal/..."
    assert _call(f"{base}/api/v1/credential-reveals/{link.token}") == 401
    log = served_portal.stop()

    # gpk_<12 hex key id>_<43-character secret>: the secret may itself hold "_" (URL-safe base64), so it is what
    # follows the second "_", never what follows the last (which can be one character, found anywhere in a log).
    secret_part = issued.key.split("_", 2)[2]
    assert len(secret_part) == 43
    for secret in (link.token, unknown, issued.key, secret_part):
        assert secret not in log, f"a secret reached the log:\n{log}"
    request_lines = [line for line in log.splitlines() if '"GET /reveal/' in line or '"POST /reveal/' in line]
    assert len(request_lines) == 5, log  # the access log still records every request, redacted
    assert all(f"/reveal/{REDACTED} HTTP/1.1" in line for line in request_lines), log
    assert re.search(rf"Gone: /reveal/{re.escape(REDACTED)}", log), log
    assert re.search(rf"Not Found: /reveal/{re.escape(REDACTED)}", log), log
    assert f"/api/v1/credential-reveals/{REDACTED}" in log, log


def test_redaction_of_each_secret_shape() -> None:
    token = "Zx9_-" + "a" * 38
    assert redact_secrets(f"GET /reveal/{token} HTTP/1.1") == f"GET /reveal/{REDACTED} HTTP/1.1"
    assert redact_secrets(f"Not Found: /api/v1/credential-reveals/{token}?x=1") == (
        f"Not Found: /api/v1/credential-reveals/{REDACTED}?x=1"
    )
    assert redact_secrets("key gpk_ab12cd34_" + "s" * 43 + " done") == f"key gpk_ab12cd34_{REDACTED} done"
    assert redact_secrets("token gpt_1a2b3c4d_" + "t" * 43) == f"token gpt_1a2b3c4d_{REDACTED}"
    assert redact_secrets("GET /api/v1/teams/alpha/credentials HTTP/1.1") == (
        "GET /api/v1/teams/alpha/credentials HTTP/1.1"
    )
    record = logging.makeLogRecord({"msg": "Gone: %s", "args": (f"/reveal/{token}",), "path": f"/reveal/{token}"})
    assert RedactSecretsFilter().filter(record)
    assert (record.getMessage(), record.path) == (f"Gone: /reveal/{REDACTED}", f"/reveal/{REDACTED}")


def test_a_traceback_naming_a_secret_is_written_redacted() -> None:
    token = "Q" * 43
    try:
        raise ValueError(f"no route for /reveal/{token}")
    except ValueError:
        record = logging.makeLogRecord({"msg": "failed", "exc_info": sys.exc_info()})
    assert RedactSecretsFilter().filter(record)
    written = JsonFormatter().format(record)
    assert token not in written
    assert f"/reveal/{REDACTED}" in written
    assert token not in logging.Formatter().format(record)
