"""Connections to clusters and the few verbs the reconcilers use: get, list by label, server-side apply, delete.

Requests go through the official client's public ApiClient API (`param_serialize` for auth, headers and the query
string, then `call_api`: the pair every generated API method uses in kubernetes>=31), with paths from
workers.kube.resources so no discovery round trip is spent per call. Connections are built by the client's own
kubeconfig loader, which keeps CA data in temp files it reuses by content and removes at exit.
"""

from __future__ import annotations

import base64
import contextlib
import contextvars
import hashlib
import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

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
# None: (CONNECT_TIMEOUT, the PORTAL_KUBE_READ_TIMEOUT_SECONDS setting).
_timeout: contextvars.ContextVar[tuple[float, float] | None] = contextvars.ContextVar("kube_timeout", default=None)


def _request_timeout() -> tuple[float, float]:
    return _timeout.get() or (CONNECT_TIMEOUT, float(settings.PORTAL_KUBE_READ_TIMEOUT_SECONDS))


@contextlib.contextmanager
def request_timeout(connect_seconds: float, read_seconds: float) -> Iterator[None]:
    """Every cluster call made inside the block (in this thread or task) uses this (connect, read) timeout.

    Clients are cached across tasks, so a timeout is the caller's context, never a field of a shared client."""
    token = _timeout.set((connect_seconds, read_seconds))
    try:
        yield
    finally:
        _timeout.reset(token)


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


class Cluster:
    """One cluster's API: every call either returns parsed JSON or raises a classified ClusterError."""

    def __init__(self, api_client: kubernetes_client.ApiClient, name: str) -> None:
        self.api_client = api_client
        self.name = name

    def _call(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, str] | None = None,
        body: Any = None,
        content_type: str | None = None,
    ) -> Any:
        headers = {"Accept": "application/json", "Content-Type": content_type or "application/json"}
        try:
            method, url, headers, body, _ = self.api_client.param_serialize(
                method,
                path,
                query_params=list((query or {}).items()),
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
            )
            response = self.api_client.call_api(
                method, url, header_params=headers, body=body, _request_timeout=_request_timeout()
            )
            response.read()  # type: ignore[no-untyped-call]  # public, but unannotated in kubernetes 37
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

    def delete(
        self, api_version: str, kind: str, name: str, namespace: str | None = None, *, orphan: bool = False
    ) -> bool:
        """Delete (background propagation; with `orphan`, its dependents stay, for a new owner to adopt); False when
        it was already gone."""
        kind_type = resource_type(api_version, kind)
        try:
            self._call(
                "DELETE",
                kind_type.object_path(name, namespace if kind_type.namespaced else None),
                body={
                    "kind": "DeleteOptions",
                    "apiVersion": "v1",
                    "propagationPolicy": "Orphan" if orphan else "Background",
                },
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
    material = f"{connection.api_server}|{connection.auth_kind}|{connection.kubeconfig}|{connection.token}|{connection.ca_bundle}"
    return hashlib.sha256(material.encode()).hexdigest()


def kubeconfig_of(connection: ClusterConnection) -> dict[str, Any]:
    """The connection as a kubeconfig: a stored kubeconfig as it is, a server and token as a one-context one."""
    if connection.kubeconfig is not None:
        config: dict[str, Any] = yaml.safe_load(connection.kubeconfig)
        return config
    cluster: dict[str, Any] = {"server": connection.api_server}
    if connection.ca_bundle:
        cluster["certificate-authority-data"] = base64.b64encode(connection.ca_bundle.encode()).decode()
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": connection.name, "cluster": cluster}],
        "users": [{"name": connection.name, "user": {"token": connection.token or ""}}],
        "contexts": [{"name": connection.name, "context": {"cluster": connection.name, "user": connection.name}}],
        "current-context": connection.name,
    }


def _api_client(connection: ClusterConnection) -> kubernetes_client.ApiClient:
    configuration = kubernetes_client.Configuration()
    # No retries inside urllib3 (it would make 4 requests of each call to a failing API server, logging a warning
    # for each): the reconcile task is the retry policy, with back-off, one pending message and one log line a try.
    configuration.retries = 0
    api_client: kubernetes_client.ApiClient = kubernetes_config.new_client_from_config_dict(  # type: ignore[no-untyped-call]
        kubeconfig_of(connection), client_configuration=configuration, persist_config=False
    )
    return api_client


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


__all__ = ["FIELD_MANAGER", "Cluster", "ListedObject", "ResourceType", "connect", "request_timeout"]
