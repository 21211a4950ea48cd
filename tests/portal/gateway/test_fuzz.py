"""No input to a gateway endpoint yields a 500: schemathesis fuzzes only the gateway's operations, with their path
parameters fixed to existing objects so that it reaches the views' logic. `make test` runs a bounded smoke and
`make schemathesis` the full fuzz, as for the whole-API run in tests/test_schemathesis.py."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from portal.gateway.services import credential_issue, provider_backend_create
from portal.tenancy.models import Role
from portal.tokens.services import api_token_issue
from tests.factories import ClusterFactory, ManagedVersionFactory, MembershipFactory, TeamFactory, UserFactory
from tests.test_schemathesis import SCHEMATHESIS

# The smoke of `make test` (examples, fuzzing: about 10 s) unless `make schemathesis` asks for the full fuzz.
MAX_EXAMPLES = os.environ.get("PORTAL_GATEWAY_FUZZ_EXAMPLES", "5")
PHASES = os.environ.get("PORTAL_FUZZ_PHASES", "examples,fuzzing")

GATEWAY_PATHS = (
    r"/api/v1/(teams/\{team\}/credentials|credential-reveals|clusters/\{cluster\}/(provider-backends|gateway-))"
)


@pytest.mark.schemathesis
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("who", ["platform_admin", "team_developer"])
def test_no_gateway_input_yields_a_server_error(
    live_server: object, settings: object, tmp_path: Path, who: str
) -> None:
    import subprocess

    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"principal": "100000/minute"}}  # type: ignore[attr-defined]
    team = TeamFactory(slug="alpha")
    person = UserFactory(backstage_ref="user:default/fuzzer", is_staff=who == "platform_admin")
    MembershipFactory(team=team, user=person, role=Role.DEVELOPER)
    ManagedVersionFactory(model__slug="gpt", version="2025-01-01")
    cluster = ClusterFactory(name="gpu-eu")
    provider_backend_create(
        actor=None,
        cluster=cluster,
        values={"name": "openai", "provider": "openai", "hostname": "api.openai.com", "credential": "sk-x"},
    )
    credential_issue(actor=person, team=team, name="existing")
    # Path parameters fixed to existing objects, so the fuzzer reaches the views' logic instead of 404s.
    (tmp_path / "schemathesis.toml").write_text(
        '[parameters]\n"path.team" = "alpha"\n"path.cluster" = "gpu-eu"\n"path.name" = "openai"\n'
    )
    token = api_token_issue(actor=None, principal=person, name="fuzz", scopes=[]).plaintext
    result = subprocess.run(
        [
            str(SCHEMATHESIS),
            "run",
            f"{live_server.url}/api/schema/",  # type: ignore[attr-defined]
            "--url",
            live_server.url,  # type: ignore[attr-defined]
            "--include-path-regex",
            GATEWAY_PATHS,
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
            "--seed",
            "20261127",
            "--suppress-health-check",
            "all",
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        cwd=tmp_path,
    )
    summary = "\n".join(result.stdout.splitlines()[-60:])
    print(summary)
    assert result.returncode == 0, summary
    reached = re.search(r"Selected: (\d+)/\d+\s+Tested: (\d+)", result.stdout)
    assert reached is not None, summary
    assert int(reached.group(1)) >= 10, summary  # the gateway's operations, found by GATEWAY_PATHS
    assert reached.group(2) == reached.group(1), summary  # every one of them reached
