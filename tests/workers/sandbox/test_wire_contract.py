"""The Kubernetes wire contract, through the real `kubernetes` client over HTTP.

Marked `k8s_contract`: with KUBE_TEST_KUBECONFIG set these run against a real cluster as well, which is what
keeps the sandbox honest (shared/reference/kubernetes-test-server.md, "Keeping the stand-in honest").
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.dynamic import DynamicClient

from tests.workers.conftest import wait_until_crds_served
from workers.sandbox.server import Sandbox

pytestmark = pytest.mark.k8s_contract


@pytest.fixture(autouse=True)
def _no_controllers(contract_api: tuple[str, k8s.ApiClient], sandbox: Sandbox) -> Iterator[None]:
    """A real test cluster gets the CRDs but no KServe or gateway controller; the sandbox's simulated ones would
    race these tests' own status writes."""
    if contract_api[0] != "sandbox":
        yield
        return
    with sandbox.controllers_paused():
        yield


ISVC = ("serving.kserve.io", "v1beta1", "inferenceservices")


def _isvc(name: str, **predictor: Any) -> dict[str, Any]:
    model = {"modelFormat": {"name": "huggingface"}, "storageUri": "hf://Qwen/Qwen2.5-7B-Instruct"}
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": name, "annotations": {"serving.kserve.io/deploymentMode": "Standard"}},
        "spec": {"predictor": {"model": model, **predictor}},
    }


def _error(call: Any) -> tuple[int, dict[str, Any]]:
    with pytest.raises(k8s.ApiException) as caught:
        call()
    return caught.value.status, json.loads(caught.value.body)


def test_version_and_discovery_work_with_the_dynamic_client(contract_api: tuple[str, k8s.ApiClient]) -> None:
    api_client = contract_api[1]
    assert k8s.VersionApi(api_client).get_code().git_version
    dynamic = DynamicClient(api_client)
    isvc = dynamic.resources.get(api_version="serving.kserve.io/v1beta1", kind="InferenceService")
    assert isvc.namespaced
    assert isvc.name == "inferenceservices"


def test_create_returns_201_with_server_metadata(contract_api: tuple[str, k8s.ApiClient], namespace: str) -> None:
    custom = k8s.CustomObjectsApi(contract_api[1])
    created = custom.create_namespaced_custom_object(*ISVC[:2], namespace, ISVC[2], _isvc("llm"))
    metadata = created["metadata"]
    assert metadata["uid"]
    assert metadata["resourceVersion"]
    assert metadata["creationTimestamp"]
    assert metadata["generation"] == 1
    assert metadata["namespace"] == namespace
    status, body = _error(lambda: custom.create_namespaced_custom_object(*ISVC[:2], namespace, ISVC[2], _isvc("llm")))
    assert (status, body["reason"]) == (409, "AlreadyExists")


def test_missing_objects_and_namespaces_are_404(contract_api: tuple[str, k8s.ApiClient], namespace: str) -> None:
    custom = k8s.CustomObjectsApi(contract_api[1])
    status, body = _error(lambda: custom.get_namespaced_custom_object(*ISVC[:2], namespace, ISVC[2], "absent"))
    assert (status, body["reason"], body["kind"]) == (404, "NotFound", "Status")
    status, body = _error(
        lambda: custom.create_namespaced_custom_object(*ISVC[:2], "no-such-namespace", ISVC[2], _isvc("x"))
    )
    assert (status, body["reason"]) == (404, "NotFound")


def test_schema_violations_are_422_with_causes(contract_api: tuple[str, k8s.ApiClient], namespace: str) -> None:
    custom = k8s.CustomObjectsApi(contract_api[1])
    bad = _isvc("bad", minReplicas="two")
    status, body = _error(lambda: custom.create_namespaced_custom_object(*ISVC[:2], namespace, ISVC[2], bad))
    assert (status, body["reason"]) == (422, "Invalid")
    assert any("minReplicas" in cause.get("field", "") for cause in body["details"]["causes"]), body
    status, body = _error(
        lambda: custom.create_namespaced_custom_object(*ISVC[:2], namespace, ISVC[2], _isvc("Bad_Name"))
    )
    assert (status, body["reason"]) == (422, "Invalid")


def test_body_namespace_must_match_the_url(contract_api: tuple[str, k8s.ApiClient], namespace: str) -> None:
    custom = k8s.CustomObjectsApi(contract_api[1])
    body = _isvc("elsewhere")
    body["metadata"]["namespace"] = "another"
    status, _ = _error(lambda: custom.create_namespaced_custom_object(*ISVC[:2], namespace, ISVC[2], body))
    assert status == 400


def test_generation_bumps_on_spec_changes_only(contract_api: tuple[str, k8s.ApiClient], namespace: str) -> None:
    custom = k8s.CustomObjectsApi(contract_api[1])
    custom.create_namespaced_custom_object(*ISVC[:2], namespace, ISVC[2], _isvc("gen"))
    labelled = custom.patch_namespaced_custom_object(
        *ISVC[:2], namespace, ISVC[2], "gen", {"metadata": {"labels": {"a": "b"}}}
    )
    assert labelled["metadata"]["generation"] == 1
    scaled = custom.patch_namespaced_custom_object(
        *ISVC[:2], namespace, ISVC[2], "gen", {"spec": {"predictor": {"minReplicas": 2}}}
    )
    assert scaled["metadata"]["generation"] == 2
    assert int(scaled["metadata"]["resourceVersion"]) > int(labelled["metadata"]["resourceVersion"])


def test_stale_resource_version_is_a_conflict(contract_api: tuple[str, k8s.ApiClient], namespace: str) -> None:
    core = k8s.CoreV1Api(contract_api[1])
    created = core.create_namespaced_config_map(namespace, {"metadata": {"name": "cm"}, "data": {"a": "1"}})
    core.patch_namespaced_config_map("cm", namespace, {"data": {"a": "2"}})
    stale = {"metadata": {"name": "cm", "resourceVersion": created.metadata.resource_version}, "data": {"a": "3"}}
    status, body = _error(lambda: core.replace_namespaced_config_map("cm", namespace, stale))
    assert (status, body["reason"]) == (409, "Conflict")


def _apply(api_client: k8s.ApiClient, path: str, body: dict[str, Any], manager: str | None, force: bool = False) -> Any:
    """Server-side apply through the client's own patch call; returns (object, HTTP status, headers)."""
    namespace, name = path.split("/namespaces/")[1].split("/")[0], path.rsplit("/", 1)[1]
    options: dict[str, Any] = {"_content_type": "application/apply-patch+yaml"}
    if manager is not None:
        options["field_manager"] = manager
    if force:
        options["force"] = True
    response = k8s.CustomObjectsApi(api_client).patch_namespaced_custom_object_with_http_info(
        *ISVC[:2], namespace, ISVC[2], name, body, **options
    )
    if isinstance(response, tuple):  # (data, status, headers)
        return response
    return response.data, response.status_code, response.headers


def test_server_side_apply_creates_owns_conflicts_and_forces(
    contract_api: tuple[str, k8s.ApiClient], namespace: str
) -> None:
    api_client = contract_api[1]
    path = f"/apis/serving.kserve.io/v1beta1/namespaces/{namespace}/inferenceservices/ssa"
    _, code, _ = _apply(api_client, path, _isvc("ssa", minReplicas=1), "portal")
    assert code == 201  # created by apply (the v37 client maps no body type for a 201 PATCH, so read it back)
    obj = k8s.CustomObjectsApi(api_client).get_namespaced_custom_object(*ISVC[:2], namespace, ISVC[2], "ssa")
    assert obj["spec"]["predictor"]["minReplicas"] == 1
    # Only the portal owns the spec; a KServe controller (simulated, or real) may already own status.
    managers = {
        entry["manager"]: entry["operation"]
        for entry in obj["metadata"]["managedFields"]
        if entry.get("subresource") != "status"
    }
    assert managers == {"portal": "Apply"}
    status, body = _error(lambda: _apply(api_client, path, _isvc("ssa", minReplicas=3), "someone-else"))
    assert (status, body["reason"]) == (409, "Conflict")
    assert "minReplicas" in body["message"]
    forced, code, _ = _apply(api_client, path, _isvc("ssa", minReplicas=3), "someone-else", force=True)
    assert code == 200
    assert forced["spec"]["predictor"]["minReplicas"] == 3


def test_fields_a_manager_stops_applying_are_removed(contract_api: tuple[str, k8s.ApiClient], namespace: str) -> None:
    api_client = contract_api[1]
    path = f"/apis/serving.kserve.io/v1beta1/namespaces/{namespace}/inferenceservices/prune"
    _apply(api_client, path, _isvc("prune", minReplicas=1, maxReplicas=4), "portal")
    obj, _, _ = _apply(api_client, path, _isvc("prune", minReplicas=1), "portal")
    assert "maxReplicas" not in obj["spec"]["predictor"]
    assert obj["spec"]["predictor"]["minReplicas"] == 1


def test_apply_without_field_manager_is_refused(contract_api: tuple[str, k8s.ApiClient], namespace: str) -> None:
    api_client = contract_api[1]
    path = f"/apis/serving.kserve.io/v1beta1/namespaces/{namespace}/inferenceservices/nomanager"
    status, _ = _error(lambda: _apply(api_client, path, _isvc("nomanager"), None))
    assert status == 422


def test_status_subresource_is_separate_from_the_main_resource(
    contract_api: tuple[str, k8s.ApiClient], namespace: str
) -> None:
    custom = k8s.CustomObjectsApi(contract_api[1])
    custom.create_namespaced_custom_object(*ISVC[:2], namespace, ISVC[2], _isvc("st"))
    custom.patch_namespaced_custom_object_status(
        *ISVC[:2], namespace, ISVC[2], "st", {"status": {"url": "http://x.example"}}
    )
    after = custom.patch_namespaced_custom_object(
        *ISVC[:2],
        namespace,
        ISVC[2],
        "st",
        {"spec": {"predictor": {"minReplicas": 2}}, "status": {"url": "http://ignored"}},
    )
    assert after["status"]["url"] == "http://x.example"
    status_only = custom.patch_namespaced_custom_object_status(
        *ISVC[:2],
        namespace,
        ISVC[2],
        "st",
        {"spec": {"predictor": {"minReplicas": 5}}, "status": {"url": "http://y.example"}},
    )
    assert status_only["spec"]["predictor"]["minReplicas"] == 2
    assert status_only["status"]["url"] == "http://y.example"


def test_label_selectors(contract_api: tuple[str, k8s.ApiClient], namespace: str) -> None:
    core = k8s.CoreV1Api(contract_api[1])
    for name, labels in (("a", {"team": "x", "tier": "gold"}), ("b", {"team": "y"}), ("c", {})):
        core.create_namespaced_config_map(namespace, {"metadata": {"name": name, "labels": labels}})

    def names(selector: str) -> list[str]:
        return sorted(
            item.metadata.name
            for item in core.list_namespaced_config_map(namespace, label_selector=selector).items
            if item.metadata.name in "abc"
        )

    assert names("team=x") == ["a"]
    assert names("team==x") == ["a"]
    assert names("team!=x") == ["b", "c"]
    assert names("team in (x,y)") == ["a", "b"]
    assert names("team notin (x)") == ["b", "c"]
    assert names("tier") == ["a"]
    assert names("!team") == ["c"]
    assert names("team,tier=gold") == ["a"]


def test_secret_string_data_is_folded_into_data(contract_api: tuple[str, k8s.ApiClient], namespace: str) -> None:
    core = k8s.CoreV1Api(contract_api[1])
    secret = core.create_namespaced_secret(namespace, {"metadata": {"name": "s"}, "stringData": {"key": "value"}})
    assert secret.data == {"key": "dmFsdWU="}
    assert secret.string_data is None


def test_resource_quota_admits_pods_on_gpu_requests(contract_api: tuple[str, k8s.ApiClient], namespace: str) -> None:
    core = k8s.CoreV1Api(contract_api[1])
    core.create_namespaced_resource_quota(
        namespace, {"metadata": {"name": "gpus"}, "spec": {"hard": {"requests.nvidia.com/gpu": "1"}}}
    )
    deadline = time.monotonic() + 10
    while not (core.read_namespaced_resource_quota("gpus", namespace).status or k8s.V1ResourceQuotaStatus()).hard:
        assert time.monotonic() < deadline, "the quota status was never filled in"
        time.sleep(0.1)

    def pod(name: str) -> dict[str, Any]:
        resources = {"limits": {"nvidia.com/gpu": "1"}, "requests": {"nvidia.com/gpu": "1"}}
        return {
            "metadata": {"name": name},
            "spec": {"containers": [{"name": "c", "image": "busybox", "resources": resources}]},
        }

    core.create_namespaced_pod(namespace, pod("first"))
    status, body = _error(lambda: core.create_namespaced_pod(namespace, pod("second")))
    assert (status, body["reason"]) == (403, "Forbidden")
    assert "exceeded quota: gpus" in body["message"]
    assert "requests.nvidia.com/gpu=1" in body["message"]


def test_strategic_merge_patch_on_a_custom_resource_is_415(
    contract_api: tuple[str, k8s.ApiClient], namespace: str
) -> None:
    api_client = contract_api[1]
    k8s.CustomObjectsApi(api_client).create_namespaced_custom_object(*ISVC[:2], namespace, ISVC[2], _isvc("smp"))
    status, _ = _error(
        lambda: k8s.CustomObjectsApi(api_client).patch_namespaced_custom_object(
            *ISVC[:2],
            namespace,
            ISVC[2],
            "smp",
            {"metadata": {"labels": {"a": "b"}}},
            _content_type="application/strategic-merge-patch+json",
        )
    )
    assert status == 415


def test_delete_returns_status_and_the_object_is_gone(contract_api: tuple[str, k8s.ApiClient], namespace: str) -> None:
    custom = k8s.CustomObjectsApi(contract_api[1])
    custom.create_namespaced_custom_object(*ISVC[:2], namespace, ISVC[2], _isvc("gone"))
    result = custom.delete_namespaced_custom_object(*ISVC[:2], namespace, ISVC[2], "gone")
    assert result["kind"] == "Status"
    assert result["status"] == "Success"
    deadline = time.monotonic() + 30
    while True:  # a real API server may take a moment to remove it
        try:
            custom.get_namespaced_custom_object(*ISVC[:2], namespace, ISVC[2], "gone")
        except k8s.ApiException as error:
            status = error.status
            break
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert status == 404


def _env(obj: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item.get("value", "") for item in obj["spec"]["predictor"]["model"].get("env") or []}


def _env_isvc(name: str, env: dict[str, str]) -> dict[str, Any]:
    body = _isvc(name)
    body["spec"]["predictor"]["model"]["env"] = [{"name": key, "value": value} for key, value in env.items()]
    return body


def _env_only(name: str, env: dict[str, str]) -> dict[str, Any]:
    """A second manager's partial configuration: just its own env entries."""
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": name},
        "spec": {"predictor": {"model": {"env": [{"name": k, "value": v} for k, v in env.items()]}}},
    }


def test_map_lists_are_merged_per_item_between_managers(
    contract_api: tuple[str, k8s.ApiClient], namespace: str
) -> None:
    """`env` is `x-kubernetes-list-type: map` keyed by name in the KServe CRD: each manager owns its items."""
    api_client = contract_api[1]
    path = f"/apis/serving.kserve.io/v1beta1/namespaces/{namespace}/inferenceservices/envs"
    _apply(api_client, path, _env_isvc("envs", {"A": "1"}), "portal")
    merged, _, _ = _apply(api_client, path, _env_only("envs", {"B": "2"}), "injector")
    assert _env(merged) == {"A": "1", "B": "2"}
    owned = {entry["manager"]: json.dumps(entry["fieldsV1"]) for entry in merged["metadata"]["managedFields"]}
    assert 'k:{\\"name\\":\\"A\\"}' in owned["portal"]
    assert 'k:{\\"name\\":\\"B\\"}' in owned["injector"]
    assert 'k:{\\"name\\":\\"B\\"}' not in owned["portal"]

    # The portal stops applying A and adds C: A goes, the injector's B stays.
    obj, _, _ = _apply(api_client, path, _env_isvc("envs", {"C": "3"}), "portal")
    assert _env(obj) == {"B": "2", "C": "3"}

    # Changing an item another manager owns is a conflict naming the item, unless forced.
    status, body = _error(lambda: _apply(api_client, path, _env_only("envs", {"C": "changed"}), "injector"))
    assert (status, body["reason"]) == (409, "Conflict")
    assert 'env[name="C"].value' in body["message"]
    forced, _, _ = _apply(api_client, path, _env_only("envs", {"B": "2", "C": "changed"}), "injector", force=True)
    assert _env(forced) == {"B": "2", "C": "changed"}


def test_list_items_of_a_built_in_kind_carry_no_kind_while_custom_resources_do(
    contract_api: tuple[str, k8s.ApiClient], namespace: str
) -> None:
    """A real API server leaves `kind` and `apiVersion` off the items of a built-in kind's list
    (kubernetes/kubernetes#3030); a custom resource's items keep both (they are served unstructured)."""
    api_client = contract_api[1]
    core = k8s.CoreV1Api(api_client)
    core.create_namespaced_secret(namespace, {"metadata": {"name": "listed", "labels": {"listed": "yes"}}})
    secrets = json.loads(
        core.list_namespaced_secret(namespace, label_selector="listed=yes", _preload_content=False).data
    )
    assert (secrets["apiVersion"], secrets["kind"]) == ("v1", "SecretList")
    [secret] = secrets["items"]
    assert secret["metadata"]["name"] == "listed"
    assert "kind" not in secret
    assert "apiVersion" not in secret
    namespaces = json.loads(
        core.list_namespace(field_selector=f"metadata.name={namespace}", _preload_content=False).data
    )
    [listed_namespace] = namespaces["items"]
    assert "kind" not in listed_namespace
    assert "apiVersion" not in listed_namespace
    read = json.loads(core.read_namespaced_secret("listed", namespace, _preload_content=False).data)
    assert (read["apiVersion"], read["kind"]) == ("v1", "Secret")  # one object read alone does carry them

    custom = k8s.CustomObjectsApi(api_client)
    custom.create_namespaced_custom_object(*ISVC[:2], namespace, ISVC[2], _isvc("listed"))
    [isvc] = custom.list_namespaced_custom_object(*ISVC[:2], namespace, ISVC[2])["items"]
    assert (isvc["apiVersion"], isvc["kind"]) == ("serving.kserve.io/v1beta1", "InferenceService")


def test_server_side_apply_of_a_field_the_crd_does_not_declare_is_a_500_other_writes_prune_it(
    contract_api: tuple[str, k8s.ApiClient], namespace: str
) -> None:
    """An open upstream bug (kubernetes/kubernetes#139253): the typed conversion of an apply body fails with a plain
    error, answered as a 500 with no reason; create, update and merge patch prune the field instead."""
    api_client = contract_api[1]
    custom = k8s.CustomObjectsApi(api_client)
    body = _isvc("undeclared", notAField="x")
    body["metadata"]["namespace"] = namespace
    path = f"/apis/serving.kserve.io/v1beta1/namespaces/{namespace}/inferenceservices/undeclared"
    status, answer = _error(lambda: _apply(api_client, path, body, "portal", force=True))
    assert status == 500
    assert "reason" not in answer
    assert answer["message"] == (
        f"failed to create typed patch object ({namespace}/undeclared; serving.kserve.io/v1beta1, "
        "Kind=InferenceService): .spec.predictor.notAField: field not declared in schema"
    )
    status, _ = _error(lambda: custom.get_namespaced_custom_object(*ISVC[:2], namespace, ISVC[2], "undeclared"))
    assert status == 404  # nothing was created

    created = custom.create_namespaced_custom_object(*ISVC[:2], namespace, ISVC[2], body)
    assert "notAField" not in created["spec"]["predictor"]
    patched = custom.patch_namespaced_custom_object(
        *ISVC[:2], namespace, ISVC[2], "undeclared", {"spec": {"predictor": {"minReplicas": 2, "notAField": "y"}}}
    )
    assert patched["spec"]["predictor"]["minReplicas"] == 2
    assert "notAField" not in patched["spec"]["predictor"]


def _widget_crd(group: str) -> dict[str, Any]:
    schema = {"type": "object", "properties": {"spec": {"type": "object", "properties": {"size": {"type": "integer"}}}}}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
            "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": schema}}],
        },
    }


def test_a_crd_created_through_the_api_is_usable_once_established_and_discoverable(
    contract_api: tuple[str, k8s.ApiClient], namespace: str
) -> None:
    api_client = contract_api[1]
    group = f"w{uuid.uuid4().hex[:8]}.contract.portal.genai.io"
    extensions = k8s.ApiextensionsV1Api(api_client)
    created = extensions.create_custom_resource_definition(_widget_crd(group))
    try:
        # As created, before the API server's naming and establishing controllers have looked at it.
        assert not any(item.type == "Established" and item.status == "True" for item in created.status.conditions or [])
        wait_until_crds_served(api_client, [f"widgets.{group}"], timeout=30)
        crd = extensions.read_custom_resource_definition(f"widgets.{group}")
        conditions = {item.type: (item.status, item.reason) for item in crd.status.conditions}
        assert conditions["NamesAccepted"] == ("True", "NoConflicts")
        assert conditions["Established"] == ("True", "InitialNamesAccepted")
        widget = {"apiVersion": f"{group}/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"size": 1}}
        custom = k8s.CustomObjectsApi(api_client)
        assert custom.create_namespaced_custom_object(group, "v1", namespace, "widgets", widget)["metadata"]["uid"]
        assert "widgets" in {resource.name for resource in custom.get_api_resources(group, "v1").resources}
    finally:
        extensions.delete_custom_resource_definition(f"widgets.{group}")
