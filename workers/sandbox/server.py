"""The sandbox Kubernetes API server: HTTP routing, discovery, fault injection and the controller loop.

The real `kubernetes` client talks to it over a socket, unmodified. Requests authenticate with the sandbox's bearer
token, answered as kube-apiserver answers (see `authenticate`); there is no TLS, watch or pagination: the portal
uses none of them.

    sandbox = Sandbox(crd_dir=default_crd_dir()); sandbox.start(); ...; sandbox.stop()
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import re
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

from workers.sandbox.controllers import Controllers, ControllerSettings
from workers.sandbox.store import CONTROLLER_CUSTOM_KINDS, FALLBACK_CUSTOM_KINDS, ApiError, Kind, Store
from workers.sandbox.validation import CrdKinds, CrdRegistry, crd_documents

logger = logging.getLogger(__name__)

VERSION_INFO = {
    "major": "1",
    "minor": "32",
    "gitVersion": "v1.32.0-sandbox",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.23.0",
    "compiler": "gc",
    "platform": "linux/amd64",
}
PATCH_TYPES = (
    "application/apply-patch+yaml",
    "application/merge-patch+json",
    "application/json-patch+json",
    "application/strategic-merge-patch+json",
)


@dataclass
class Fault:
    """Make matching requests fail: an error status, a delay before answering, or a dropped connection.

    `times` is how many requests it hits (None: until cleared); `probability` is the chance that it hits a matching
    request (a fault soak injects several at once, each on a share of the requests)."""

    method: str | None = None
    path: str | None = None  # regular expression searched in the request path
    status: int | None = None
    delay: float = 0.0
    drop: bool = False
    times: int | None = 1
    message: str = "injected fault"
    probability: float = 1.0

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method) and (
            self.path is None or re.search(self.path, path) is not None
        )


@dataclass(frozen=True)
class RequestRecord:
    method: str
    path: str
    query: str
    status: int


@dataclass
class GpuNodePool:
    """Nodes the sandbox pretends to have: `count` nodes of `gpus` GPUs of one product."""

    product: str
    count: int = 2
    gpus: int = 8
    memory_gb: int = 80
    labels: dict[str, str] = field(default_factory=dict)


# The CRDs a sandbox loads from its directory unless told otherwise: those of the custom kinds it models, the kinds
# the portal applies and the InferencePool the llm-d controller creates (tests/workers/sandbox checks the portal's
# builders stay within them). The directory's others (InferenceService's sibling runtimes, LLMInferenceServiceConfig,
# the legacy inference extension, MCP routes, ...) are MBs of YAML the portal never touches.
PORTAL_CRD_KINDS: CrdKinds = frozenset((kind.group, kind.plural) for kind in FALLBACK_CUSTOM_KINDS)
DEFAULT_TOKEN = "sandbox-token"
DEFAULT_GATEWAY = ("genai-gateway", "ai-gateway")  # (namespace, name) of the Envoy AI Gateway's Gateway
DEFAULT_NODE_POOLS = (
    GpuNodePool("NVIDIA-L4", count=2, gpus=8, memory_gb=24),
    GpuNodePool("NVIDIA-H100-80GB-HBM3", count=2, gpus=8, memory_gb=80),
)


class Sandbox:
    def __init__(
        self,
        *,
        crd_dir: str | Path | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        ready_delay: float = 0.0,
        tick: float = 0.05,
        node_pools: tuple[GpuNodePool, ...] = DEFAULT_NODE_POOLS,
        gateway: tuple[str, str] = DEFAULT_GATEWAY,
        crd_establish_delay: float = 0.5,
        crd_kinds: CrdKinds | None = PORTAL_CRD_KINDS,
        token: str | None = DEFAULT_TOKEN,
    ) -> None:
        """`crd_establish_delay`: seconds until a CRD created through the API is Established and served (its
        resource paths 404 and discovery omits it until then); CRDs loaded from `crd_dir` are served at once.
        `crd_kinds`: the (group, plural) pairs whose CRDs are loaded from `crd_dir`; None loads every one.
        `token`: the bearer token the API accepts; None accepts any request, authenticated or not."""
        self.token = token
        registry = CrdRegistry()
        self.store = Store(registry)
        self.store.establish_delay = crd_establish_delay
        self.crd_dir = Path(crd_dir) if crd_dir else None
        self.validating = False
        self._loaded_crds: dict[str, dict[str, Any]] = {}  # by name, as loaded from crd_dir
        if self.crd_dir is not None and self.crd_dir.is_dir():
            for crd in crd_documents(self.crd_dir, kinds=crd_kinds):
                self.store.register_crd(crd)
                self.store.objects[_crd_key(crd["metadata"]["name"])] = _entry(crd)
                self._loaded_crds[crd["metadata"]["name"]] = crd
            self.validating = True
        for kind in (*FALLBACK_CUSTOM_KINDS, *CONTROLLER_CUSTOM_KINDS):
            self.store.register_schemaless(kind)
        if not self.validating:
            logger.warning(
                "sandbox: no CRD directory (%s); custom resources are stored without schema validation",
                crd_dir or "none given",
            )
        self.controllers = Controllers(self.store, ControllerSettings(ready_delay=ready_delay))
        self.tick = tick
        self.faults: list[Fault] = []
        self.fault_random = random.Random(0)  # noqa: S311 (which requests fail, not a secret): seeded, repeatable
        self.records: list[RequestRecord] = []
        self._records_lock = threading.Lock()
        self._stopping = threading.Event()
        self._paused = threading.Event()
        self._stepping = threading.Lock()
        self._seed_nodes(node_pools)
        self._seed_gateway(*gateway)
        self._seeded = set(self.store.objects)
        self.server = _Server((host, port), _handler_class(self))
        self.server.daemon_threads = True
        self._threads: list[threading.Thread] = []

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> Sandbox:
        serve = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, name="sandbox-http", daemon=True
        )
        loop = threading.Thread(target=self._control_loop, name="sandbox-controllers", daemon=True)
        self._threads = [serve, loop]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self.server.shutdown()
        self.server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @contextlib.contextmanager
    def controllers_paused(self) -> Iterator[None]:
        """No simulated controller acts meanwhile: a cluster with the CRDs installed but no controllers, as the
        wire-contract tests see a real cluster."""
        self._paused.set()
        with self._stepping:  # a step already under way finishes first
            pass
        try:
            yield
        finally:
            self._paused.clear()

    def _control_loop(self) -> None:
        while not self._stopping.wait(self.tick):
            with self._stepping:
                if self._paused.is_set():
                    continue
                try:
                    self.controllers.step()
                except Exception:  # a controller bug must not stop the API server; it is logged and retried
                    logger.exception("sandbox controller step failed")

    def settle(self, *, after: float = 0.0) -> None:
        """Run one controller step now, as if `after` more seconds had passed (tests: no waiting for the loop)."""
        with self._stepping:  # never two steps at once (the loop's thread and a test's)
            self.controllers.step(time.monotonic() + after)

    def kubeconfig(self, *, token: str | None = None, name: str = "sandbox") -> str:
        """A kubeconfig for this sandbox, with its own token unless another is given."""
        token = token or self.token or DEFAULT_TOKEN
        return yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": name, "cluster": {"server": self.url}}],
                "users": [{"name": name, "user": {"token": token}}],
                "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
                "current-context": name,
            }
        )

    # ------------------------------------------------------------------ test helpers

    def reset(self) -> None:
        """Back to the state after start: every object created since is gone (a CRD created since is no longer
        served; one loaded at start and changed since is as loaded again), faults and records cleared."""
        with self.store.lock:
            for key in [key for key in self.store.objects if key not in self._seeded]:
                entry = self.store.objects.pop(key)
                if key == _crd_key(key[3]):
                    self.store.forget_crd(entry.obj)
            for name, crd in self._loaded_crds.items():
                entry = self.store.objects.get(_crd_key(name))
                if entry is not None and entry.obj["metadata"]["resourceVersion"] == LOADED_RESOURCE_VERSION:
                    continue
                if entry is not None:
                    self.store.forget_crd(entry.obj)
                self.store.register_crd(crd)
                self.store.objects[_crd_key(name)] = _entry(crd)
        self.controllers.forget()
        self.clear_faults()
        self.reset_records()

    def add_fault(self, fault: Fault) -> Fault:
        with self._records_lock:
            self.faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self._records_lock:
            self.faults.clear()

    def take_fault(self, method: str, path: str) -> Fault | None:
        with self._records_lock:
            for fault in self.faults:
                if fault.matches(method, path):
                    if fault.probability < 1.0 and self.fault_random.random() >= fault.probability:
                        continue
                    if fault.times is not None:
                        fault.times -= 1
                        if fault.times <= 0:
                            self.faults.remove(fault)
                    return fault
        return None

    def record(self, entry: RequestRecord) -> None:
        with self._records_lock:
            self.records.append(entry)

    def reset_records(self) -> None:
        with self._records_lock:
            self.records.clear()

    def request_counts(self) -> Counter[str]:
        with self._records_lock:
            return Counter(record.method for record in self.records)

    def writes(self) -> list[RequestRecord]:
        with self._records_lock:
            return [r for r in self.records if r.method in ("POST", "PUT", "PATCH", "DELETE")]

    def objects(
        self, api_version: str, kind: str, namespace: str | None = None, label_selector: str = ""
    ) -> list[dict[str, Any]]:
        found = self.store.kind_by_api_version(api_version, kind)
        if found is None:
            return []
        return list(self.store.list(found, namespace, label_selector=label_selector)["items"])

    def _seed_nodes(self, pools: tuple[GpuNodePool, ...]) -> None:
        node_kind = self.store.kinds[("", "v1", "nodes")]
        for pool in pools:
            for index in range(pool.count):
                name = f"gpu-{pool.product.lower()}-{index}"[:63].rstrip("-")
                gpus = str(pool.gpus)
                labels = {
                    "kubernetes.io/hostname": name,
                    "nvidia.com/gpu.product": pool.product,
                    "nvidia.com/gpu.count": gpus,
                    "nvidia.com/gpu.memory": str(pool.memory_gb * 1024),
                    **pool.labels,
                }
                node: dict[str, Any] = {
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {"name": name, "labels": labels},
                    "status": {
                        "capacity": {"cpu": "96", "memory": "1000Gi", "nvidia.com/gpu": gpus, "pods": "110"},
                        "allocatable": {"cpu": "95", "memory": "990Gi", "nvidia.com/gpu": gpus, "pods": "110"},
                        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
                    },
                }
                self.store.create(node_kind, None, node, manager="kubelet")
                self.store.update_status(node_kind, None, name, node["status"], manager="kubelet")

    def _seed_gateway(self, namespace: str, name: str) -> None:
        """The Gateway an installed Envoy AI Gateway would have: the portal attaches routes to it."""
        self.store.create(
            self.store.kinds[("", "v1", "namespaces")], None, {"metadata": {"name": namespace}}, manager="installer"
        )
        gateway_kind = self.store.kind_by_api_version("gateway.networking.k8s.io/v1", "Gateway")
        if gateway_kind is None:
            return
        gateway = {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "Gateway",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "gatewayClassName": "envoy-ai-gateway",
                "listeners": [{"name": "http", "protocol": "HTTP", "port": 80}],
            },
        }
        self.store.create(gateway_kind, namespace, gateway, manager="installer")

    # ------------------------------------------------------------------ discovery

    def discovery(self, path: str) -> dict[str, Any] | None:
        kinds = self.store.served_kinds()
        if path == "/version":
            return VERSION_INFO
        if path == "/api":
            return {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": self.url.split("//")[1]}],
            }
        if path == "/apis":
            groups: dict[str, list[str]] = {}
            for kind in kinds:
                if kind.group:
                    versions = groups.setdefault(kind.group, [])
                    if kind.version not in versions:
                        versions.append(kind.version)
            return {
                "kind": "APIGroupList",
                "apiVersion": "v1",
                "groups": [
                    {
                        "name": group,
                        "versions": [{"groupVersion": f"{group}/{v}", "version": v} for v in versions],
                        "preferredVersion": {"groupVersion": f"{group}/{versions[0]}", "version": versions[0]},
                    }
                    for group, versions in sorted(groups.items())
                ],
            }
        match = re.fullmatch(r"/api/v1|/apis/([^/]+)/([^/]+)", path)
        if match is None:
            return None
        group, version = (match.group(1) or "", match.group(2) or "v1")
        selected = [k for k in kinds if k.group == group and k.version == version]
        if not selected:
            return None
        resources = []
        for kind in selected:
            verbs = ["create", "delete", "get", "list", "patch", "update"]
            resources.append(
                {
                    "name": kind.plural,
                    "singularName": kind.singular,
                    "namespaced": kind.namespaced,
                    "kind": kind.kind,
                    "verbs": verbs,
                    "shortNames": list(kind.short_names),
                }
            )
            if kind.status_subresource:
                resources.append(
                    {
                        "name": f"{kind.plural}/status",
                        "singularName": "",
                        "namespaced": kind.namespaced,
                        "kind": kind.kind,
                        "verbs": ["get", "patch", "update"],
                    }
                )
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else "v1",
            "resources": resources,
        }

    # ------------------------------------------------------------------ resource requests

    def route(self, path: str) -> tuple[Kind, str | None, str | None, str]:
        """(kind, namespace, name, subresource) for a resource path, or ApiError 404."""
        match = re.fullmatch(r"/api/v1/(.+)|/apis/([^/]+)/([^/]+)/(.+)", path)
        if match is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if match.group(1) is not None:
            group, version, rest = "", "v1", match.group(1)
        else:
            group, version, rest = match.group(2), match.group(3), match.group(4)
        parts = rest.strip("/").split("/")
        namespace: str | None = None
        if parts[0] == "namespaces" and len(parts) >= 3 and not (group == "" and parts[2] in ("status", "finalize")):
            namespace, parts = parts[1], parts[2:]
        if len(parts) > 3:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        kind = self.store.kind(group, version, parts[0])
        name = parts[1] if len(parts) > 1 else None
        subresource = parts[2] if len(parts) > 2 else ""
        if subresource and (subresource != "status" or not kind.status_subresource):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if namespace is not None and not kind.namespaced:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return kind, namespace, name, subresource

    def authenticate(self, path: str, authorization: str | None) -> None:
        """As kube-apiserver with anonymous auth on (its default) and RBAC: a bearer token that does not
        authenticate is 401 "Unauthorized" (authentication fails before anonymous is considered, see
        kubernetes/apiserver pkg/endpoints/filters/authentication.go, which writes the Status with message
        "Unauthorized"); no credentials at all is system:anonymous, allowed only the public-info-viewer paths
        (/version, /healthz, /livez, /readyz, per the system:public-info-viewer ClusterRole) and 403 elsewhere."""
        if self.token is None or path.startswith("/_sandbox/"):
            return
        if authorization is None:
            if path.rstrip("/") in {"/version", "/healthz", "/livez", "/readyz"}:
                return
            # Simplified: for a resource path the real message names the resource, verb and namespace.
            raise ApiError(403, "Forbidden", f'forbidden: User "system:anonymous" cannot get path "{path}"')
        scheme, _, credential = authorization.partition(" ")
        if scheme.lower() != "bearer" or credential.strip() != self.token:
            raise ApiError(401, "Unauthorized", "Unauthorized")

    def handle(
        self, method: str, path: str, query: dict[str, list[str]], content_type: str, body: bytes, user_agent: str
    ) -> tuple[int, dict[str, Any]]:
        path = path.rstrip("/") or "/"
        if path.startswith("/_sandbox/"):
            return self._admin(method, path, body)
        if method == "GET":
            found = self.discovery(path)
            if found is not None:
                return 200, found
        kind, namespace, name, subresource = self.route(path)
        first = {key: values[0] for key, values in query.items() if values}
        dry_run = first.get("dryRun") == "All"
        strict = first.get("fieldValidation") == "Strict"
        manager = first.get("fieldManager") or (user_agent.split("/")[0] if user_agent else "unknown")
        store = self.store
        if method == "GET":
            if name is None:
                return 200, store.list(
                    kind,
                    namespace,
                    label_selector=first.get("labelSelector", ""),
                    field_selector=first.get("fieldSelector", ""),
                )
            return 200, store.get(kind, namespace, name)
        payload = _parse_body(body, content_type) if body else None
        if method == "POST":
            if name is not None:
                raise ApiError(
                    405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
                )
            return 201, store.create(kind, namespace, payload, manager=manager, dry_run=dry_run, strict=strict)
        if name is None:
            raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
        if method == "PUT":
            return 200, store.replace(
                kind, namespace, name, payload, manager=manager, subresource=subresource, dry_run=dry_run, strict=strict
            )
        if method == "PATCH":
            patch_type = content_type.split(";")[0].strip()
            if patch_type not in PATCH_TYPES:
                raise ApiError(
                    415,
                    "UnsupportedMediaType",
                    f"the body of the request was in an unknown format - accepted media types include: {', '.join(PATCH_TYPES)}",
                )
            obj, created = store.patch(
                kind,
                namespace,
                name,
                patch_type,
                payload,
                manager=first.get("fieldManager")
                or (None if patch_type == "application/apply-patch+yaml" else manager),
                force=first.get("force") == "true",
                subresource=subresource,
                dry_run=dry_run,
                strict=strict,
            )
            return (201 if created else 200), obj
        if method == "DELETE":
            try:
                options = json.loads(body) if body else {}
            except ValueError:
                options = {}
            policy = (query.get("propagationPolicy") or [""])[0] or (options or {}).get("propagationPolicy") or ""
            result = store.delete(kind, namespace, name, dry_run=dry_run, orphan=policy == "Orphan")
            return 200, result
        raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")

    def _admin(self, method: str, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
        """Test and demo controls over HTTP: faults and request counts (never part of the Kubernetes API)."""
        if path == "/_sandbox/faults" and method == "POST":
            try:
                fault = Fault(**json.loads(body or b"{}"))
            except (TypeError, ValueError) as error:
                raise ApiError(400, "BadRequest", f"invalid fault: {error}") from None
            self.add_fault(fault)
            return 201, {"faults": len(self.faults)}
        if path == "/_sandbox/faults" and method == "DELETE":
            self.clear_faults()
            return 200, {"faults": 0}
        if path == "/_sandbox/requests" and method == "GET":
            return 200, {"requests": dict(self.request_counts()), "writes": len(self.writes())}
        raise ApiError(404, "NotFound", "the server could not find the requested resource")


def _parse_body(body: bytes, content_type: str) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        pass
    if "yaml" in content_type:
        try:
            return yaml.load(body, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: S506 (a safe loader)
        except yaml.YAMLError as error:
            raise ApiError(400, "BadRequest", f"error decoding YAML: {error}") from None
    raise ApiError(400, "BadRequest", "the body of the request was in an unknown format")


LOADED_RESOURCE_VERSION = "1"  # of a CRD loaded from the CRD directory, until it is changed through the API


def _crd_key(name: str) -> tuple[str, str, str, str]:
    return ("apiextensions.k8s.io", "customresourcedefinitions", "", name)


def _entry(crd: dict[str, Any]) -> Any:
    from workers.sandbox.store import Entry, _crd_status

    stored = dict(crd)
    stored["status"] = _crd_status(crd)
    stored["metadata"] = {
        **crd.get("metadata", {}),
        "uid": "00000000-0000-0000-0000-000000000000",
        "resourceVersion": LOADED_RESOURCE_VERSION,
        "creationTimestamp": "2026-01-01T00:00:00Z",
    }
    return Entry(stored)


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away before the answer (its read timed out on a delayed one) is not the server's
        error: no traceback for it, as a real API server logs none."""
        if isinstance(sys.exc_info()[1], BrokenPipeError | ConnectionResetError):
            return
        super().handle_error(request, client_address)


def _handler_class(sandbox: Sandbox) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "portal-sandbox"

        def setup(self) -> None:
            super().setup()
            # Without it every request stalls ~40 ms on Nagle and delayed ACK (the reference, point 9).
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def log_message(self, format: str, *args: Any) -> None:
            logger.debug("sandbox: " + format, *args)

        def _serve(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            try:
                sandbox.authenticate(parts.path, self.headers.get("Authorization"))
            except ApiError as refused:
                sandbox.record(RequestRecord(self.command, parts.path, parts.query, refused.code))
                self._answer(refused.code, refused.status())
                return
            fault = sandbox.take_fault(self.command, parts.path)
            if fault is not None:
                if fault.delay:
                    time.sleep(fault.delay)
                if fault.drop:
                    sandbox.record(RequestRecord(self.command, parts.path, parts.query, 0))
                    self.close_connection = True
                    with contextlib.suppress(OSError):
                        self.connection.shutdown(socket.SHUT_RDWR)
                    return
            try:
                if fault is not None and fault.status:
                    reasons = {
                        429: "TooManyRequests",
                        500: "InternalError",
                        503: "ServiceUnavailable",
                        504: "Timeout",
                        409: "Conflict",
                        403: "Forbidden",
                        422: "Invalid",
                        400: "BadRequest",
                    }
                    raise ApiError(fault.status, reasons.get(fault.status, "Unknown"), fault.message)
                status, payload = sandbox.handle(
                    self.command,
                    parts.path,
                    parse_qs(parts.query),
                    self.headers.get("Content-Type", ""),
                    body,
                    self.headers.get("User-Agent", ""),
                )
            except ApiError as error:
                status, payload = error.code, error.status()
            except Exception as error:  # the stand-in's own bug: answer like an apiserver would, and log it
                logger.exception("sandbox: %s %s failed", self.command, self.path)
                status, payload = 500, ApiError(500, "InternalError", f"sandbox error: {error}").status()
            sandbox.record(RequestRecord(self.command, parts.path, parts.query, status))
            self._answer(status, payload)

        def _answer(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if status == 429:
                self.send_header("Retry-After", "1")
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    return Handler
