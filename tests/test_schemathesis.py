"""No input to any endpoint yields a 500: schemathesis fuzzes the running service from its OpenAPI schema."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from portal.api.services import api_token_issue
from portal.tenancy.models import Role
from tests.factories import (
    ManagedVersionFactory,
    MembershipFactory,
    PriceFactory,
    SelfHostedVersionFactory,
    TeamFactory,
    UserFactory,
)

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
# `make test` runs a bounded smoke (a few generated cases per operation, no coverage phase: about a minute);
# `make schemathesis` runs the full fuzz (100 examples, every phase: many minutes).
MAX_EXAMPLES = os.environ.get("PORTAL_FUZZ_EXAMPLES", "3")
PHASES = os.environ.get("PORTAL_FUZZ_PHASES", "examples,fuzzing")


def _run(base_url: str, token: str, report_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(SCHEMATHESIS),
            "run",
            f"{base_url}/api/schema/",
            "--url",
            base_url,
            "--checks",
            "not_a_server_error",
            "--header",
            f"Authorization: Bearer {token}",
            "--max-examples",
            MAX_EXAMPLES,
            "--phases",
            PHASES,
            "--workers",
            "1",
            "--request-timeout",
            "20",
            "--seed",
            "20261122",
            "--suppress-health-check",
            "all",
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        cwd=report_dir,
    )


@pytest.mark.schemathesis
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("who", ["platform_admin", "team_admin"])
def test_no_input_yields_a_server_error(live_server: object, settings: object, tmp_path: Path, who: str) -> None:
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"principal": "100000/minute"}}  # type: ignore[attr-defined]
    team = TeamFactory(slug="alpha")
    person = UserFactory(backstage_ref="user:default/fuzzer", is_staff=who == "platform_admin")
    MembershipFactory(team=team, user=person, role=Role.ADMIN)
    SelfHostedVersionFactory(model__slug="llama", version="v1")
    PriceFactory(model=ManagedVersionFactory(model__slug="gpt", version="2025-01-01").model)
    token = api_token_issue(actor=None, principal=person, name="fuzz", scopes=[]).plaintext
    result = _run(live_server.url, token, tmp_path)  # type: ignore[attr-defined]
    summary = "\n".join(result.stdout.splitlines()[-60:])
    print(summary)
    assert result.returncode == 0, summary
