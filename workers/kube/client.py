"""Connections to clusters and the few verbs the reconcilers use: get, list by label, server-side apply, delete.

Requests go through the official client's ApiClient (its configuration, auth and TLS handling), with paths
from workers.kube.resources so no discovery round trip is spent per call.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import urllib3
import yaml
from django.conf import settings
from kubernetes import client as kubernetes_client
from kubernetes import config as kubernetes_config
from kubernetes.client.exceptions import ApiException

from portal.clusters.contracts import ClusterConnection
from workers.kube.errors import ClusterError, RetryableClusterError, classify
from workers.kube.resources import ResourceType, resource_type

logger = logging.getLogger(__name__)

FIELD_MANAGER = "genai-portal"
CONNECT_TIMEOUT = 5.0  # seconds
Manifest = dict[str, Any]


@dataclass(frozen=True)
class ListedObject:
    """One item of a list answer, with the apiVersion and kind that were listed.

    A real kube-apiserver leaves `kind` and `apiVersion` off the items of a list of a built-in kind (a SecretList's
    or NamespaceList's items carry neither: kubernetes/kubernetes#3030, #63676, kubernetes-client/python#745), while
    a custom resource's items keep them (they are served unstructured). What an item is comes from what was listed,
    never from the item's own fields."""

    api_version: str
    kind: str
    manifest: Manifest

    @property
    def metadata(self) -> dict[str, Any]:
        metadata: dict[str, Any] = self.manifest.get("metadata") or {}
        return metadata

    @property
    def name(self) -> str:
        return str(self.metadata.get("name") or "")

    @property
    def namespace(self) -> str | None:
        namespace = self.metadata.get("namespace")
        return str(namespace) if namespace else None


def _request_timeout() -> tuple[float, float]:
    return CONNECT_TIMEOUT, float(settings.PORTAL_KUBE_READ_TIMEOUT_SECONDS)


class Cluster:
    """One cluster's API: every call either returns parsed JSON or raises a classified ClusterError."""

    def __init__(self, api_client: kubernetes_client.ApiClient, name: str) -> None:
        self.api_client = api_client
        self.name = name
        self.requests: Counter[str] = Counter()
        self.timeout: tuple[float, float] | None = None  # (connect, read); None: the settings'

    def _call(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, str] | None = None,
        body: Any = None,
        content_type: str | None = None,
    ) -> Any:
        url = self.api_client.configuration.host.rstrip("/") + path
        if query:
            url = f"{url}?{urlencode(query)}"
        headers = {"Accept": "application/json", "Content-Type": content_type or "application/json"}
        self.api_client.update_params_for_auth(headers, [], ["BearerToken"], url, method, body)
        self.requests[method] += 1
        try:
            response = self.api_client.rest_client.request(  # type: ignore[no-untyped-call]
                method, url, headers=headers, body=body, _request_timeout=self.timeout or _request_timeout()
            )
            response.read()
        except ApiException as error:
            raise classify(error.status, error.body) from None
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise RetryableClusterError(f"cannot reach {self.name}: {type(error).__name__}: {error}") from None
        if not 200 <= response.status <= 299:
            raise classify(response.status, response.data)
        if not response.data:
            return None
        return json.loads(response.data)

    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> Manifest | None:
        kind_type = resource_type(api_version, kind)
        try:
            result: Manifest = self._call(
                "GET", kind_type.object_path(name, namespace if kind_type.namespaced else None)
            )
        except ClusterError as error:
            if error.status == 404:
                return None
            raise
        return result

    def list(
        self,
        api_version: str,
        kind: str,
        *,
        label_selector: str,
        namespace: str | None = None,
        all_namespaces: bool = False,
    ) -> list[ListedObject]:
        """Objects matching the selector: in one namespace, or with all_namespaces across the cluster."""
        kind_type = resource_type(api_version, kind)
        try:
            result = self._call(
                "GET",
                kind_type.collection_path(namespace if kind_type.namespaced else None, all_namespaces=all_namespaces),
                query={"labelSelector": label_selector},
            )
        except ClusterError as error:
            if error.status == 404:  # the namespace (or the CRD) is not there: nothing to list
                return []
            raise
        return [ListedObject(api_version, kind, item) for item in result.get("items") or []]

    def apply(self, manifest: Manifest) -> Manifest:
        """Server-side apply under the portal's field manager; the portal owns these fields, so it forces."""
        kind_type = resource_type(manifest["apiVersion"], manifest["kind"])
        metadata = manifest["metadata"]
        path = kind_type.object_path(metadata["name"], metadata.get("namespace") if kind_type.namespaced else None)
        result: Manifest = self._call(
            "PATCH",
            path,
            query={"fieldManager": FIELD_MANAGER, "force": "true"},
            body=manifest,
            content_type="application/apply-patch+yaml",
        )
        return result

    def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> bool:
        """Delete (background propagation); False when it was already gone."""
        kind_type = resource_type(api_version, kind)
        try:
            self._call(
                "DELETE",
                kind_type.object_path(name, namespace if kind_type.namespaced else None),
                body={"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"},
            )
        except ClusterError as error:
            if error.status == 404:
                return False
            raise
        return True

    def version(self) -> str:
        info = self._call("GET", "/version")
        return str(info.get("gitVersion", "")) if isinstance(info, dict) else ""


_clients: dict[tuple[int, str], Cluster] = {}
_clients_lock = threading.Lock()


def _fingerprint(connection: ClusterConnection) -> str:
    import hashlib

    material = f"{connection.api_server}|{connection.auth_kind}|{connection.kubeconfig}|{connection.token}|{connection.ca_bundle}"
    return hashlib.sha256(material.encode()).hexdigest()


def _api_client(connection: ClusterConnection) -> kubernetes_client.ApiClient:
    configuration = kubernetes_client.Configuration()
    # No retries inside urllib3 (it would make 4 requests of each call to a failing API server, logging a warning
    # for each): the reconcile task is the retry policy, with back-off, one pending message and one log line a try.
    configuration.retries = 0
    if connection.kubeconfig is not None:
        kubernetes_config.load_kube_config_from_dict(  # type: ignore[no-untyped-call]
            yaml.safe_load(connection.kubeconfig), client_configuration=configuration, persist_config=False
        )
        return kubernetes_client.ApiClient(configuration)
    configuration.host = connection.api_server
    configuration.api_key = {"authorization": f"Bearer {connection.token}"}
    if connection.ca_bundle:
        handle, path = tempfile.mkstemp(prefix="cluster-ca-", suffix=".pem")
        with os.fdopen(handle, "w") as file:
            file.write(connection.ca_bundle)
        configuration.ssl_ca_cert = path
    configuration.verify_ssl = connection.api_server.startswith("https://")
    return kubernetes_client.ApiClient(configuration)


def connect(connection: ClusterConnection) -> Cluster:
    """A cached client per cluster and credentials: rotated credentials get a new one."""
    key = (connection.cluster_id, _fingerprint(connection))
    with _clients_lock:
        cached = _clients.get(key)
        if cached is None:
            for stale in [existing for existing in _clients if existing[0] == connection.cluster_id]:
                del _clients[stale]
            cached = _clients[key] = Cluster(_api_client(connection), connection.name)
        return cached


__all__ = ["FIELD_MANAGER", "Cluster", "ListedObject", "ResourceType", "connect"]
