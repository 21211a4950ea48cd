"""The cluster client uses the official client's public API and keeps no per-caller state on cached clients."""

from __future__ import annotations

import dataclasses
import os
import threading

import pytest

from portal.clusters.contracts import ClusterConnection
from workers.kube.client import _request_timeout, connect, kubeconfig_of, request_timeout
from workers.kube.errors import ClusterError
from workers.sandbox.server import DEFAULT_TOKEN, Sandbox

CA = "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n"


def connection(**overrides: object) -> ClusterConnection:
    values: dict[str, object] = {
        "cluster_id": 9001,
        "name": "gpu-test",
        "api_server": "https://127.0.0.1:1",
        "auth_kind": "token",
        "kubeconfig": None,
        "token": "sekret",
        "ca_bundle": CA,
    }
    return ClusterConnection(**(values | overrides))  # type: ignore[arg-type]


def test_a_token_connection_is_a_one_context_kubeconfig_with_the_ca_inline() -> None:
    config = kubeconfig_of(connection())
    assert config["current-context"] == "gpu-test"
    assert config["clusters"][0]["cluster"]["server"] == "https://127.0.0.1:1"
    assert config["clusters"][0]["cluster"]["certificate-authority-data"]
    assert config["users"][0]["user"] == {"token": "sekret"}


def test_the_ca_file_is_the_loaders_one_per_content_not_one_per_connection() -> None:
    first = connect(connection())
    rotated = connect(connection(token="rotated"))  # new credentials: a new client, the same CA content
    assert first is not rotated
    path = first.api_client.configuration.ssl_ca_cert
    assert path == rotated.api_client.configuration.ssl_ca_cert
    with open(path) as file:
        assert file.read() == CA
    # The kubeconfig loader stores the token under the generated client's auth setting, BearerToken.
    assert rotated.api_client.configuration.auth_settings()["BearerToken"]["value"] == "Bearer rotated"


def test_an_http_server_needs_no_ca() -> None:
    client = connect(connection(cluster_id=9002, api_server="http://127.0.0.1:1", ca_bundle=None))
    assert client.api_client.configuration.ssl_ca_cert is None


def test_a_timeout_belongs_to_its_caller_not_to_the_cached_client() -> None:
    client = connect(dataclasses.replace(connection(), cluster_id=9003))
    seen: dict[str, tuple[float, float]] = {}

    def elsewhere() -> None:
        seen["other thread"] = _request_timeout()

    with request_timeout(1.0, 0.3):
        seen["inside"] = _request_timeout()
        thread = threading.Thread(target=elsewhere)
        thread.start()
        thread.join()
    seen["after"] = _request_timeout()
    assert seen["inside"] == (1.0, 0.3)
    assert seen["other thread"] == seen["after"] == (5.0, 30.0)  # the PORTAL_KUBE_READ_TIMEOUT_SECONDS default
    assert not hasattr(client, "timeout")
    assert os.path.exists(client.api_client.configuration.ssl_ca_cert)


def test_the_token_reaches_the_api_server_and_a_wrong_one_is_refused(clean_sandbox: Sandbox) -> None:
    """The sandbox checks bearer tokens as kube-apiserver does, so a client that sent a wrong token or none fails."""
    good = connect(connection(cluster_id=9004, api_server=clean_sandbox.url, ca_bundle=None, token=DEFAULT_TOKEN))
    assert good.get("v1", "Namespace", "genai-gateway") is not None
    wrong = connect(connection(cluster_id=9005, api_server=clean_sandbox.url, ca_bundle=None, token="stale"))
    with pytest.raises(ClusterError) as refused:
        wrong.get("v1", "Namespace", "genai-gateway")
    assert (refused.value.status, refused.value.reason, refused.value.message) == (401, "Unauthorized", "Unauthorized")


def test_anonymous_requests_see_only_the_public_info_paths(clean_sandbox: Sandbox) -> None:
    import json
    import urllib.error
    import urllib.request

    with urllib.request.urlopen(f"{clean_sandbox.url}/version") as answer:
        assert json.load(answer)["gitVersion"]
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{clean_sandbox.url}/api/v1/namespaces")
    assert refused.value.code == 403
    assert json.load(refused.value)["reason"] == "Forbidden"
