"""The sandbox's own behaviour beyond the wire contract: when a CRD created through the API is served, and what
`reset` puts back, through the real `kubernetes` client over HTTP."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest
from kubernetes import client as k8s

from portal.gateway import bootstrap
from tests.workers.conftest import (
    crd_not_served,
    remove_from_crd_schema,
    sandbox_api_client,
    wait_until_crds_served,
)
from workers.provisioning import gateway, reconciler
from workers.sandbox.server import PORTAL_CRD_KINDS, Sandbox


def _widget_crd(group: str) -> dict[str, Any]:
    schema = {"type": "object", "properties": {"spec": {"type": "object", "properties": {"size": {"type": "integer"}}}}}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": schema}}],
        },
    }


def _conditions(api_client: k8s.ApiClient, name: str) -> dict[str, tuple[str, str]]:
    crd = k8s.ApiextensionsV1Api(api_client).read_custom_resource_definition(name)
    return {item.type: (item.status, item.reason) for item in crd.status.conditions or []}


def test_a_crd_created_through_the_api_is_served_only_once_established(clean_sandbox: Sandbox) -> None:
    api_client = sandbox_api_client(clean_sandbox)
    group = f"w{uuid.uuid4().hex[:8]}.sandbox.portal.genai.io"
    name = f"widgets.{group}"
    custom = k8s.CustomObjectsApi(api_client)
    started = time.monotonic()
    created = k8s.ApiextensionsV1Api(api_client).create_custom_resource_definition(_widget_crd(group))
    assert created.status.conditions is None  # as a real API server answers the create
    assert (created.status.accepted_names.plural, created.status.accepted_names.kind) == ("", "")

    # Names accepted at once, not yet Established: its objects are 404 and discovery does not list it.
    assert _conditions(api_client, name) == {
        "NamesAccepted": ("True", "NoConflicts"),
        "Established": ("False", "Installing"),
    }
    with pytest.raises(k8s.ApiException) as missing:
        custom.list_namespaced_custom_object(group, "v1", "genai-gateway", "widgets")
    assert missing.value.status == 404
    assert json.loads(missing.value.body)["message"] == "the server could not find the requested resource"
    with pytest.raises(k8s.ApiException) as undiscovered:
        custom.get_api_resources(group, "v1")
    assert undiscovered.value.status == 404
    groups = k8s.ApisApi(api_client).get_api_versions().groups
    assert group not in {item.name for item in groups}
    assert crd_not_served(api_client, name).startswith("not Established")

    wait_until_crds_served(api_client, [name], timeout=10)
    assert time.monotonic() - started >= 0.5  # the sandbox's default crd_establish_delay
    assert _conditions(api_client, name)["Established"] == ("True", "InitialNamesAccepted")
    assert crd_not_served(api_client, name) == ""
    widget = {"apiVersion": f"{group}/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"size": 2}}
    assert custom.create_namespaced_custom_object(group, "v1", "genai-gateway", "widgets", widget)["spec"] == {
        "size": 2
    }
    assert group in {item.name for item in k8s.ApisApi(api_client).get_api_versions().groups}


def test_the_sandbox_loads_the_crd_of_every_custom_kind_the_portal_applies_and_no_other(clean_sandbox: Sandbox) -> None:
    """Only the CRDs of PORTAL_CRD_KINDS are parsed at start (the directory's others cost seconds per start)."""
    applied = {
        *((api_version, kind) for api_version, kind, _ in reconciler.OWNED_KINDS),
        *gateway.OWNED_KINDS,
        (bootstrap.AIGW_API_VERSION, "GatewayConfig"),
        (bootstrap.EG_API_VERSION, "EnvoyProxy"),
        ("gateway.networking.k8s.io/v1", "Gateway"),
    }
    custom = {(api_version, kind) for api_version, kind in applied if "/" in api_version}
    assert len(custom) >= 12
    loaded = {(crd["spec"]["group"], crd["spec"]["names"]["plural"]) for crd in clean_sandbox.store.crds.crds()}
    for api_version, kind in custom:
        info = clean_sandbox.store.crds.by_kind(api_version, kind)
        assert info is not None, f"no CRD loaded for {api_version} {kind}"
        assert (info.group, info.plural) in PORTAL_CRD_KINDS
    assert loaded == PORTAL_CRD_KINDS
    # The llm-d and Kueue kinds are in (tests/workers/sandbox/test_llmd_kueue.py checks their builders'); the
    # directory's kinds nobody renders or creates are not.
    assert ("serving.kserve.io", "llminferenceservices") in loaded
    assert not loaded & {("serving.kserve.io", "llminferenceserviceconfigs"), ("aigateway.envoyproxy.io", "mcproutes")}


def test_the_wait_gives_up_with_what_is_missing() -> None:
    with Sandbox(crd_establish_delay=60) as sandbox:
        api_client = sandbox_api_client(sandbox)
        k8s.ApiextensionsV1Api(api_client).create_custom_resource_definition(_widget_crd("slow.portal.genai.io"))
        with pytest.raises(TimeoutError, match=r"widgets.slow.portal.genai.io is not served .* not Established"):
            wait_until_crds_served(api_client, ["widgets.slow.portal.genai.io"], timeout=0.3)


def test_reset_forgets_created_crds_and_restores_changed_ones(clean_sandbox: Sandbox) -> None:
    api_client = sandbox_api_client(clean_sandbox)
    group = f"w{uuid.uuid4().hex[:8]}.sandbox.portal.genai.io"
    k8s.ApiextensionsV1Api(api_client).create_custom_resource_definition(_widget_crd(group))
    wait_until_crds_served(api_client, [f"widgets.{group}"], timeout=10)
    name = "securitypolicies.gateway.envoyproxy.io"
    remove_from_crd_schema(api_client, name, ".spec.apiKeyAuth.forwardClientIDHeader")

    def declared() -> bool:
        response = k8s.ApiextensionsV1Api(api_client).read_custom_resource_definition(name, _preload_content=False)
        schema = json.loads(response.data)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        return "forwardClientIDHeader" in schema["properties"]["spec"]["properties"]["apiKeyAuth"]["properties"]

    assert not declared()
    clean_sandbox.reset()
    assert declared()
    with pytest.raises(k8s.ApiException) as gone:
        k8s.CustomObjectsApi(api_client).get_api_resources(group, "v1")
    assert gone.value.status == 404
