"""The OpenAPI document committed in the Backstage plugin is the one the portal generates now: the plugin's types and
client are generated from it (the plugin's own test fails when they are stale), so an API change reaches the plugin
only through a regenerated document."""

from __future__ import annotations

import json
from pathlib import Path

from django.core.management import call_command

COMMITTED = Path(__file__).resolve().parents[3] / "backstage-plugin/plugins/genai-portal-node/openapi.json"
REGENERATE = "make plugin-openapi"


def test_the_plugins_openapi_document_is_the_one_the_portal_generates(tmp_path: Path) -> None:
    generated = tmp_path / "openapi.json"
    call_command("spectacular", "--format", "openapi-json", "--validate", "--fail-on-warn", "--file", str(generated))

    committed = COMMITTED.read_text(encoding="utf-8")
    now = generated.read_text(encoding="utf-8")
    if committed != now:
        changed = sorted(
            path
            for path in set(json.loads(committed)["paths"]) | set(json.loads(now)["paths"])
            if json.loads(committed)["paths"].get(path) != json.loads(now)["paths"].get(path)
        )
        raise AssertionError(
            f"{COMMITTED.relative_to(COMMITTED.parents[3])} is stale: the portal's API changed "
            f"(paths that differ: {', '.join(changed) or 'none; components or info differ'}). "
            f"Run `{REGENERATE}` (it regenerates the document and the plugin's types) and commit the result."
        )


def test_the_document_states_the_deployment_name_rule_the_portal_enforces() -> None:
    # The plugin's deployment-name check comes from this pattern: a leading digit is refused by the portal (KServe
    # names an InferenceService with a DNS-1035 label), so the document must say so.
    from portal.deployments.models import DEPLOYMENT_NAME_PATTERN

    document = json.loads(COMMITTED.read_text(encoding="utf-8"))
    name = document["components"]["schemas"]["DeploymentCreateInputRequest"]["properties"]["name"]
    assert name["pattern"] == DEPLOYMENT_NAME_PATTERN == r"^[a-z]([-a-z0-9]{0,38}[a-z0-9])?$"
    assert name["maxLength"] == 40
