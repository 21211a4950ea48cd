"""A deployment made under round one's name moves to its new name without its callers losing the model: the
migration renames it (keeping the old name as an alias), one reconcile applies the new gateway objects before it
prunes the old ones, and through the sandbox gateway both names answer with the team's key all along."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from importlib import import_module

import pytest
from django.apps import apps

from portal.deployments.models import Deployment, ServedName
from portal.gateway import services as gateway_services
from portal.gateway.models import ClusterGatewayPolicy
from tests.conftest import RoleMatrix
from tests.workers.conftest import deploy, reconcile_until
from workers.provisioning.gateway import reconcile_gateway_policy
from workers.sandbox.gateway import SandboxGateway
from workers.sandbox.server import Sandbox

pytestmark = pytest.mark.django_db

AIGW = "aigateway.envoyproxy.io/v1beta1"


@pytest.fixture
def gateway(world: tuple[RoleMatrix, Sandbox]) -> Iterator[SandboxGateway]:
    with SandboxGateway(world[1].store) as running:
        yield running


def _chat(gateway: SandboxGateway, key: str, model: str) -> tuple[int, str]:
    request = urllib.request.Request(
        f"{gateway.url}/v1/chat/completions",
        data=json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())["model"]
    except urllib.error.HTTPError as error:
        return error.code, ""


def _routes(sandbox: Sandbox) -> set[str]:
    return {item["metadata"]["name"] for item in sandbox.objects(AIGW, "AIGatewayRoute", namespace="genai-gateway")}


def test_a_renamed_deployment_keeps_answering_under_both_names(
    world: tuple[RoleMatrix, Sandbox], gateway: SandboxGateway
) -> None:
    matrix, sandbox = world
    key = gateway_services.credential_issue(actor=matrix.developer, team=matrix.team, name="app").key
    gateway_services.gateway_policies_ensure()
    for policy in ClusterGatewayPolicy.objects.all():
        reconcile_gateway_policy(policy.pk)
    deployment = deploy(matrix)
    # As round one made it: served, and its gateway objects named, 'alpha-chat'.
    Deployment.objects.filter(pk=deployment.pk).update(served_model_name="alpha-chat")
    ServedName.objects.all().delete()
    reconcile_until(deployment.pk, sandbox, "Ready")
    assert _routes(sandbox) == {"alpha-chat"}
    assert _chat(gateway, key, "alpha-chat") == (200, "alpha-chat")

    import_module("portal.deployments.migrations.0002_served_names_unique_by_construction").rename(apps, None)
    deployment.refresh_from_db()
    assert (deployment.served_model_name, deployment.served_model_aliases) == ("alpha--chat", ["alpha-chat"])
    assert deployment.observed_generation < deployment.generation  # the reconcile is pending

    reconcile_until(deployment.pk, sandbox, "Ready")
    assert _routes(sandbox) == {"alpha--chat"}  # the old objects pruned once the new ones were applied
    assert _chat(gateway, key, "alpha-chat") == (200, "alpha--chat")  # old callers reach it, sent upstream by name
    assert _chat(gateway, key, "alpha--chat") == (200, "alpha--chat")
