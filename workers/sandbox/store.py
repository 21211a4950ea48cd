"""The sandbox's object store: what a kube-apiserver does between the HTTP layer and etcd.

Kinds (built-in and registered CRDs), object metadata (uid, one global resourceVersion counter, generation,
managedFields), create/get/list/replace/patch/delete with the status codes and `Status` reasons of a real
API server, server-side apply with per-manager field ownership, the status subresource, label and field
selectors, namespace lifecycle, Secret `stringData`, and ResourceQuota admission of pods on
`requests.nvidia.com/gpu`. The facts come from shared/reference/kubernetes-test-server.md.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import copy
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from workers.sandbox import fields as f
from workers.sandbox.validation import CrdRegistry

logger = logging.getLogger(__name__)

Obj = dict[str, Any]
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
GPU_QUOTA_RESOURCE = "requests.nvidia.com/gpu"
GPU_RESOURCE = "nvidia.com/gpu"
METADATA_KEYS = {
    "name",
    "generateName",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
    "selfLink",
}


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ApiError(Exception):
    """A refusal, rendered as a metav1.Status."""

    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> Obj:
        body: Obj = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": self.message}
        if self.reason:  # an error the API server did not classify has no reason (StatusReasonUnknown is "")
            body["reason"] = self.reason
        body["code"] = self.code
        if self.details is not None:
            body["details"] = self.details
        return body


@dataclass(frozen=True)
class Kind:
    group: str
    version: str
    kind: str
    plural: str
    singular: str
    namespaced: bool
    status_subresource: bool = True
    custom: bool = False
    short_names: tuple[str, ...] = ()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def resource(self) -> str:
        """`plural.group`, as API server messages name a resource."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def qualified_kind(self) -> str:
        return f"{self.kind}.{self.group}" if self.group else self.kind


BUILTIN_KINDS = (
    Kind("", "v1", "Namespace", "namespaces", "namespace", namespaced=False, short_names=("ns",)),
    Kind("", "v1", "Node", "nodes", "node", namespaced=False, short_names=("no",)),
    Kind("", "v1", "Pod", "pods", "pod", namespaced=True, short_names=("po",)),
    Kind("", "v1", "Secret", "secrets", "secret", namespaced=True, status_subresource=False),
    Kind("", "v1", "ConfigMap", "configmaps", "configmap", namespaced=True, status_subresource=False),
    Kind("", "v1", "Service", "services", "service", namespaced=True, short_names=("svc",)),
    Kind("", "v1", "ServiceAccount", "serviceaccounts", "serviceaccount", namespaced=True, status_subresource=False),
    Kind("", "v1", "ResourceQuota", "resourcequotas", "resourcequota", namespaced=True, short_names=("quota",)),
    Kind("apps", "v1", "Deployment", "deployments", "deployment", namespaced=True, short_names=("deploy",)),
    Kind(
        "apiextensions.k8s.io",
        "v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        "customresourcedefinition",
        namespaced=False,
        short_names=("crd",),
    ),
)

# Custom kinds the portal manages, registered without a schema when no CRD directory is available so that a
# clone without ../shared/crds still works (objects stored unvalidated; the server says so once in its log).
FALLBACK_CUSTOM_KINDS = (
    Kind(
        "serving.kserve.io", "v1beta1", "InferenceService", "inferenceservices", "inferenceservice", True, custom=True
    ),
    Kind("serving.kserve.io", "v1alpha1", "LocalModelCache", "localmodelcaches", "localmodelcache", False, custom=True),
    Kind("gateway.envoyproxy.io", "v1alpha1", "Backend", "backends", "backend", True, custom=True),
    Kind(
        "gateway.envoyproxy.io", "v1alpha1", "SecurityPolicy", "securitypolicies", "securitypolicy", True, custom=True
    ),
    Kind(
        "gateway.envoyproxy.io",
        "v1alpha1",
        "BackendTrafficPolicy",
        "backendtrafficpolicies",
        "backendtrafficpolicy",
        True,
        custom=True,
    ),
    Kind("gateway.envoyproxy.io", "v1alpha1", "EnvoyProxy", "envoyproxies", "envoyproxy", True, custom=True),
    Kind(
        "gateway.envoyproxy.io",
        "v1alpha1",
        "ClientTrafficPolicy",
        "clienttrafficpolicies",
        "clienttrafficpolicy",
        True,
        custom=True,
    ),
    Kind(
        "aigateway.envoyproxy.io",
        "v1beta1",
        "AIServiceBackend",
        "aiservicebackends",
        "aiservicebackend",
        True,
        custom=True,
    ),
    Kind(
        "aigateway.envoyproxy.io", "v1beta1", "AIGatewayRoute", "aigatewayroutes", "aigatewayroute", True, custom=True
    ),
    Kind(
        "aigateway.envoyproxy.io",
        "v1beta1",
        "BackendSecurityPolicy",
        "backendsecuritypolicies",
        "backendsecuritypolicy",
        True,
        custom=True,
    ),
    Kind("aigateway.envoyproxy.io", "v1beta1", "GatewayConfig", "gatewayconfigs", "gatewayconfig", True, custom=True),
    Kind("gateway.networking.k8s.io", "v1", "Gateway", "gateways", "gateway", True, custom=True),
    Kind("gateway.networking.k8s.io", "v1", "HTTPRoute", "httproutes", "httproute", True, custom=True),
    # The llm-d mode: KServe's LLMInferenceService, the InferencePool it creates, what the endpoint picker reads, and
    # the grant that lets a route in the gateway's namespace reach a team's pool.
    Kind(
        "serving.kserve.io",
        "v1alpha2",
        "LLMInferenceService",
        "llminferenceservices",
        "llminferenceservice",
        True,
        custom=True,
    ),
    Kind("inference.networking.k8s.io", "v1", "InferencePool", "inferencepools", "inferencepool", True, custom=True),
    Kind("llm-d.ai", "v1alpha2", "InferenceObjective", "inferenceobjectives", "inferenceobjective", True, custom=True),
    Kind(
        "llm-d.ai",
        "v1alpha2",
        "InferenceModelRewrite",
        "inferencemodelrewrites",
        "inferencemodelrewrite",
        True,
        custom=True,
    ),
    Kind(
        "gateway.networking.k8s.io", "v1beta1", "ReferenceGrant", "referencegrants", "referencegrant", True, custom=True
    ),
    # Kueue's GPU quota.
    Kind("kueue.x-k8s.io", "v1beta2", "Cohort", "cohorts", "cohort", False, custom=True),
    Kind("kueue.x-k8s.io", "v1beta2", "ResourceFlavor", "resourceflavors", "resourceflavor", False, custom=True),
    Kind("kueue.x-k8s.io", "v1beta2", "ClusterQueue", "clusterqueues", "clusterqueue", False, custom=True),
    Kind("kueue.x-k8s.io", "v1beta2", "LocalQueue", "localqueues", "localqueue", True, custom=True),
)

# Custom kinds only the simulated controllers create, always stored without a schema: shared/crds has no CRD for them.
CONTROLLER_CUSTOM_KINDS = (Kind("kueue.x-k8s.io", "v1beta2", "Workload", "workloads", "workload", True, custom=True),)


# ---------------------------------------------------------------------------------------------------- selectors


def _split_selector(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += char
    if current.strip():
        parts.append(current.strip())
    return parts


_SET_TERM = re.compile(r"^([A-Za-z0-9./_-]+)\s+(in|notin)\s+\(([^)]*)\)$")
_EQ_TERM = re.compile(r"^([A-Za-z0-9./_-]+)\s*(==|=|!=)\s*([A-Za-z0-9._-]*)$")
_EXISTS_TERM = re.compile(r"^(!?)([A-Za-z0-9./_-]+)$")


@dataclass(frozen=True)
class _Requirement:
    key: str
    operator: str  # in, notin, exists, !exists
    values: frozenset[str] = frozenset()

    def matches(self, labels: dict[str, str]) -> bool:
        if self.operator == "exists":
            return self.key in labels
        if self.operator == "!exists":
            return self.key not in labels
        present = labels.get(self.key) in self.values
        return present if self.operator == "in" else not present


def _requirement(term: str) -> _Requirement:
    if match := _SET_TERM.match(term):
        values = frozenset(v.strip() for v in match.group(3).split(","))
        return _Requirement(match.group(1), match.group(2), values)
    if match := _EQ_TERM.match(term):
        key, op, value = match.groups()
        return _Requirement(key, "notin" if op == "!=" else "in", frozenset({value}))
    if match := _EXISTS_TERM.match(term):
        return _Requirement(match.group(2), "!exists" if match.group(1) == "!" else "exists")
    raise ApiError(400, "BadRequest", f"unable to parse requirement: invalid label selector term {term!r}")


def label_matcher(selector: str) -> Callable[[dict[str, str]], bool]:
    """`=`, `==`, `!=`, `in`, `notin`, exists and `!`exists; a bad selector is a 400."""
    requirements = [_requirement(term) for term in _split_selector(selector or "")]

    def matches(labels: dict[str, str]) -> bool:
        return all(requirement.matches(labels) for requirement in requirements)

    return matches


def field_matcher(selector: str) -> Callable[[Obj], bool]:
    """`metadata.name` and `metadata.namespace` with `=`, `==` and `!=`."""
    terms: list[tuple[str, str, bool]] = []
    for term in _split_selector(selector or ""):
        match = re.match(r"^(metadata\.name|metadata\.namespace)\s*(==|=|!=)\s*(.*)$", term)
        if not match:
            raise ApiError(
                400, "BadRequest", f'"{term}" is not a known field selector: only "metadata.name", "metadata.namespace"'
            )
        path, op, value = match.groups()
        terms.append((path.split(".")[1], value, op == "!="))

    def matches(obj: Obj) -> bool:
        return all((obj["metadata"].get(key, "") == value) != negate for key, value, negate in terms)

    return matches


# ---------------------------------------------------------------------------------------------------- the store

Key = tuple[str, str, str, str]  # (group, plural, namespace, name)


class ObjectTable(dict[Key, "Entry"]):
    """Every stored object by key, indexed by kind and namespace as etcd's key prefixes are.

    Lists, quota admission and the simulated controllers read one kind in one namespace; without the index each
    of those scans the whole store, and a cluster of a thousand deployments slows to a crawl.
    """

    def __init__(self) -> None:
        super().__init__()
        self._buckets: dict[tuple[str, str], dict[str, dict[str, Entry]]] = {}

    def __setitem__(self, key: Key, entry: Entry) -> None:
        super().__setitem__(key, entry)
        group, plural, namespace, name = key
        self._buckets.setdefault((group, plural), {}).setdefault(namespace, {})[name] = entry

    def __delitem__(self, key: Key) -> None:
        super().__delitem__(key)
        group, plural, namespace, name = key
        namespaces = self._buckets[(group, plural)]
        del namespaces[namespace][name]
        if not namespaces[namespace]:
            del namespaces[namespace]

    def pop(self, key: Key, *default: Any) -> Any:  # type: ignore[override]
        if key not in self:
            if default:
                return default[0]
            raise KeyError(key)
        entry = self[key]
        del self[key]
        return entry

    def of_kind(self, group: str, plural: str, namespace: str | None = None) -> list[tuple[Key, Entry]]:
        """(key, entry) of one kind, in one namespace or all, sorted by namespace and name as a list answers."""
        namespaces = self._buckets.get((group, plural)) or {}
        chosen = [namespace] if namespace is not None else sorted(namespaces)
        return [
            ((group, plural, ns, name), entry)
            for ns in chosen
            for name, entry in sorted((namespaces.get(ns) or {}).items())
        ]

    def in_namespace(self, namespace: str) -> list[Key]:
        """Keys of every object, of any kind, in one namespace."""
        return [
            (group, plural, namespace, name)
            for (group, plural), namespaces in self._buckets.items()
            for name in namespaces.get(namespace) or {}
        ]


@dataclass
class Entry:
    obj: Obj
    owners: dict[str, tuple[str, set[f.Path], str]] = field(default_factory=dict)  # manager -> (operation, paths, time)


def _gpu_request(pod: Obj) -> int:
    total = 0
    for container in (pod.get("spec") or {}).get("containers") or []:
        resources = container.get("resources") or {}
        value = (resources.get("requests") or {}).get(GPU_RESOURCE) or (resources.get("limits") or {}).get(GPU_RESOURCE)
        with contextlib.suppress(ValueError):
            total += int(str(value or 0))
    return total


class Store:
    """Thread-safe; every public method either returns JSON-ready dicts or raises ApiError."""

    def __init__(self, crds: CrdRegistry | None = None, *, validate: bool = True) -> None:
        self.lock = threading.RLock()
        self.crds = crds or CrdRegistry()
        self.validate_custom = validate
        self.kinds: dict[tuple[str, str, str], Kind] = {}  # (group, version, plural)
        self.objects = ObjectTable()
        self._resource_version = 1000
        self.listeners: list[Callable[[str, Kind, Obj], None]] = []
        # Validating admission webhooks on updates of an object's main resource (not its status), dry runs included
        # (a webhook with sideEffects None is called for them too): each gets (kind, old, new) and raises ApiError.
        self.update_webhooks: list[Callable[[Kind, Obj, Obj], None]] = []
        self.establish_delay = 0.0  # seconds from a CRD's creation through the API until its kinds are served
        self._establishing: dict[str, float] = {}  # CRD name -> time.monotonic() its kinds are served from
        for kind in BUILTIN_KINDS:
            self.kinds[(kind.group, kind.version, kind.plural)] = kind

    # ------------------------------------------------------------------ kinds

    def register_crd(self, crd: Obj, *, serve: bool = True) -> Kind:
        """Know a CRD's schema; with `serve`, route its served versions at once (else `_serve_crd` does, later)."""
        info = self.crds.register(crd)
        kind = Kind(
            info.group,
            info.version,
            info.kind,
            info.plural,
            info.singular,
            info.namespaced,
            status_subresource=info.has_status_subresource,
            custom=True,
            short_names=tuple(info.short_names),
        )
        if serve:
            self._serve_crd(crd)
        return kind

    def _serve_crd(self, crd: Obj) -> None:
        """Route (and list in discovery) every served version of a registered CRD."""
        spec = crd["spec"]
        names = spec["names"]
        with self.lock:
            for version in _served_versions(crd):
                self.kinds[(spec["group"], version, names["plural"])] = Kind(
                    spec["group"],
                    version,
                    names["kind"],
                    names["plural"],
                    names.get("singular") or names["kind"].lower(),
                    spec.get("scope", "Namespaced") == "Namespaced",
                    status_subresource=_has_status(crd, version),
                    custom=True,
                    short_names=tuple(names.get("shortNames") or ()),
                )

    def forget_crd(self, crd: Obj) -> None:
        """Stop serving a CRD and forget its schema (the sandbox's reset of a CRD a test created)."""
        spec = crd.get("spec") or {}
        group, plural = spec.get("group"), (spec.get("names") or {}).get("plural")
        with self.lock:
            for key in [key for key in self.kinds if (key[0], key[2]) == (group, plural)]:
                del self.kinds[key]
            self._establishing.pop(crd["metadata"]["name"], None)
            self.crds.unregister(crd["metadata"]["name"])

    def establish_due(self, now: float | None = None) -> None:
        """The naming and establishing controllers, for CRDs created through the API: a real API server answers the
        create with no conditions, accepts the names (NamesAccepted True, Established False "Installing"), then marks
        the CRD Established and only then lists it in discovery (apiextensions-apiserver's naming_controller.go and
        establishing_controller.go; kubernetes/website#6660: "it might take a second or two for the endpoint to be
        created"). Its resource paths may already answer once the names are accepted (crdHandler serves on
        NamesAccepted or Established); the sandbox holds them back (404) until Established, the stricter order, so a
        client that waits for Established and discovery is right on both. Run lazily, on each request."""
        if not self._establishing:
            return
        now = time.monotonic() if now is None else now
        crd_kind = self.kinds[("apiextensions.k8s.io", "v1", "customresourcedefinitions")]
        with self.lock:
            for name, due in list(self._establishing.items()):
                key = ("apiextensions.k8s.io", "customresourcedefinitions", "", name)
                entry = self.objects.get(key)
                if entry is None:
                    del self._establishing[name]
                    continue
                established = now >= due
                if established:
                    del self._establishing[name]
                    self._serve_crd(entry.obj)
                status = _crd_status(entry.obj, established=established, previous=entry.obj.get("status"))
                if status != entry.obj.get("status"):
                    entry.obj["status"] = status
                    self._commit(crd_kind, key, entry, "MODIFIED")

    def served_kinds(self) -> list[Kind]:
        """What discovery lists: built-in kinds and every established CRD's served versions."""
        self.establish_due()
        return list(self.kinds.values())

    def register_schemaless(self, kind: Kind) -> None:
        with self.lock:
            self.kinds.setdefault((kind.group, kind.version, kind.plural), kind)

    def kind(self, group: str, version: str, plural: str) -> Kind:
        self.establish_due()
        found = self.kinds.get((group, version, plural))
        if found is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return found

    def kind_by_api_version(self, api_version: str, kind_name: str) -> Kind | None:
        self.establish_due()
        group, _, version = api_version.rpartition("/")
        for kind in self.kinds.values():
            if kind.group == group and kind.version == version and kind.kind == kind_name:
                return kind
        return None

    # ------------------------------------------------------------------ helpers

    def _schema(self, kind: Kind) -> f.Schema | None:
        """The structural schema of a custom kind, for map lists in server-side apply; None for built-ins."""
        if not kind.custom or kind.kind == "CustomResourceDefinition":
            return None
        try:
            return self.crds.validator(kind.group, kind.version, kind.plural).schema
        except KeyError:
            return None

    def _status_schema(self, kind: Kind) -> f.Schema | None:
        schema = self._schema(kind)
        status = ((schema or {}).get("properties") or {}).get("status")
        return status if isinstance(status, dict) else None

    def _next_rv(self) -> str:
        self._resource_version += 1
        return str(self._resource_version)

    @staticmethod
    def _key(kind: Kind, namespace: str | None, name: str) -> tuple[str, str, str, str]:
        return (kind.group, kind.plural, namespace or "", name)

    def _not_found(self, kind: Kind, name: str) -> ApiError:
        return ApiError(
            404,
            "NotFound",
            f'{kind.resource} "{name}" not found',
            {"name": name, "group": kind.group, "kind": kind.plural},
        )

    def _require_namespace(self, kind: Kind, namespace: str | None, *, creating: bool) -> None:
        if not kind.namespaced:
            return
        if not namespace:
            raise ApiError(
                400,
                "BadRequest",
                "the namespace of the provided object does not match the namespace sent on the request",
            )
        entry = self.objects.get(("", "namespaces", "", namespace))
        if entry is None:
            raise ApiError(
                404, "NotFound", f'namespaces "{namespace}" not found', {"name": namespace, "kind": "namespaces"}
            )
        if creating and entry.obj["metadata"].get("deletionTimestamp"):
            raise ApiError(
                403,
                "Forbidden",
                f"{kind.plural} is forbidden: unable to create new content in namespace {namespace} because it is being terminated",
            )

    def _invalid(self, kind: Kind, name: str, causes: list[dict[str, str]]) -> ApiError:
        summary = ", ".join(f"{c['field']}: {c['message']}" if c.get("field") else c["message"] for c in causes)
        if len(causes) > 1:
            summary = f"[{summary}]"
        return ApiError(
            422,
            "Invalid",
            f'{kind.qualified_kind()} "{name}" is invalid: {summary}',
            {"name": name, "group": kind.group, "kind": kind.kind, "causes": causes},
        )

    def _check_identity(self, kind: Kind, body: Any, namespace: str | None, name: str | None) -> Obj:
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "the body of the request was in an unknown format")
        obj = copy.deepcopy(body)
        if obj.get("kind", kind.kind) != kind.kind or obj.get("apiVersion", kind.api_version) != kind.api_version:
            raise ApiError(
                400,
                "BadRequest",
                f"the API version in the data ({obj.get('apiVersion')}) does not match the expected API version "
                f"({kind.api_version}) or kind ({obj.get('kind')} vs {kind.kind})",
            )
        obj["apiVersion"], obj["kind"] = kind.api_version, kind.kind
        metadata = obj.setdefault("metadata", {})
        if not isinstance(metadata, dict):
            raise ApiError(400, "BadRequest", "metadata must be an object")
        body_namespace = metadata.get("namespace")
        if kind.namespaced:
            if body_namespace and body_namespace != namespace:
                raise ApiError(
                    400,
                    "BadRequest",
                    "the namespace of the provided object does not match the namespace sent on the request",
                )
            metadata["namespace"] = namespace
        else:
            metadata.pop("namespace", None)
        if name is not None:
            if metadata.get("name") and metadata["name"] != name:
                raise ApiError(
                    400,
                    "BadRequest",
                    "the name of the object ({}) does not match the name on the URL ({})".format(
                        metadata["name"], name
                    ),
                )
            metadata["name"] = name
        return obj

    def _check_typed_patch(self, kind: Kind, body: Obj) -> None:
        """Server-side apply first converts the applied object to a typed value of the CRD's schema, and a field the
        schema does not declare fails that conversion with a plain error, which the API server answers as a 500 with
        no reason, whether or not fieldValidation asks for pruning (an open upstream bug: kubernetes/kubernetes#139253
        and #122480; the message is structuredmerge.go's, with the namespace and name from the body as sent).
        Other writes prune unknown fields instead (_prepare)."""
        if not kind.custom or kind.kind == "CustomResourceDefinition" or not self.validate_custom:
            return
        try:
            validator = self.crds.validator(kind.group, kind.version, kind.plural)
        except KeyError:
            return
        undeclared = [f"{path}: field not declared in schema" for path in validator.undeclared_fields(body)]
        if not undeclared:
            return
        errors = (
            undeclared[0] if len(undeclared) == 1 else "\n".join(["errors:", *(f"  {line}" for line in undeclared)])
        )
        metadata = body.get("metadata") or {}
        raise ApiError(
            500,
            "",
            f"failed to create typed patch object ({metadata.get('namespace') or ''}/{metadata.get('name') or ''}; "
            f"{kind.group}/{kind.version}, Kind={kind.kind}): {errors}",
        )

    def _validate_name(self, kind: Kind, name: str) -> None:
        pattern, limit, what = (
            (DNS_LABEL, 63, "RFC 1123 label")
            if kind.kind == "Namespace"
            else (DNS_SUBDOMAIN, 253, "RFC 1123 subdomain")
        )
        if not name:
            raise self._invalid(
                kind,
                name,
                [
                    {
                        "reason": "FieldValueRequired",
                        "field": "metadata.name",
                        "message": "Required value: name or generateName is required",
                    }
                ],
            )
        if len(name) > limit or not pattern.match(name):
            raise self._invalid(
                kind,
                name,
                [
                    {
                        "reason": "FieldValueInvalid",
                        "field": "metadata.name",
                        "message": f'Invalid value: "{name}": a lowercase {what} must consist of lower case alphanumeric '
                        "characters, '-' or '.', and must start and end with an alphanumeric character",
                    }
                ],
            )

    def _prepare(self, kind: Kind, obj: Obj, *, strict: bool) -> Obj:
        """Kind-specific defaulting and validation of a complete object about to be stored."""
        name = obj["metadata"]["name"]
        if kind.kind == "Secret":
            string_data = obj.pop("stringData", None) or {}
            data = obj.setdefault("data", {}) or {}
            for key, value in (data or {}).items():
                try:
                    base64.b64decode(str(value), validate=True)
                except (binascii.Error, ValueError):
                    raise self._invalid(
                        kind,
                        name,
                        [
                            {
                                "reason": "FieldValueInvalid",
                                "field": f"data[{key}]",
                                "message": "Invalid value: illegal base64 data",
                            }
                        ],
                    ) from None
            for key, value in string_data.items():
                data[key] = base64.b64encode(str(value).encode()).decode()
            obj["data"] = data
            obj.setdefault("type", "Opaque")
        if kind.kind == "Namespace":
            obj.setdefault("spec", {"finalizers": ["kubernetes"]})
            obj.setdefault("status", {"phase": "Active"})
            obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = name
        if kind.custom and self.validate_custom:
            try:
                validator = self.crds.validator(kind.group, kind.version, kind.plural)
            except KeyError:
                validator = None
            if validator is not None:
                metadata = obj["metadata"]
                validated, causes, _warnings = validator.validate(obj, strict=strict)
                if causes:
                    code = (
                        400
                        if strict
                        and all(c.reason == "FieldValueForbidden" and "unknown field" in c.message for c in causes)
                        else 422
                    )
                    problems = [{"reason": c.reason, "field": c.field, "message": c.message} for c in causes]
                    if code == 400:
                        raise ApiError(400, "BadRequest", "; ".join(f"{c['message']}" for c in problems))
                    raise self._invalid(kind, name, problems)
                validated["metadata"] = metadata
                obj = validated
        return obj

    def _bump_generation(self, kind: Kind, old: Obj | None, new: Obj) -> None:
        if not (kind.custom or kind.kind in ("Pod", "Service")):
            return
        if old is None:
            new["metadata"]["generation"] = 1
            return
        generation = int(old["metadata"].get("generation") or 1)
        if f.canonical(_spec_like(old)) != f.canonical(_spec_like(new)):
            generation += 1
        new["metadata"]["generation"] = generation

    def _render_managed_fields(self, entry: Entry, kind: Kind) -> None:
        entry.obj["metadata"]["managedFields"] = [
            {
                "manager": manager,
                "operation": operation,
                "apiVersion": kind.api_version,
                "time": when,
                "fieldsType": "FieldsV1",
                "fieldsV1": f.fields_v1(paths),
                **({"subresource": "status"} if manager.endswith("/status") else {}),
            }
            for manager, (operation, paths, when) in sorted(entry.owners.items())
            if paths
        ]

    def _take_ownership(self, entry: Entry, manager: str, operation: str, paths: set[f.Path], *, replace: bool) -> None:
        """`manager` now owns `paths`; nobody else does (an Update takes fields over)."""
        for other, (op, owned, when) in list(entry.owners.items()):
            if other != manager:
                entry.owners[other] = (op, owned - paths, when)
        current = set() if replace else entry.owners.get(manager, ("", set(), ""))[1]
        entry.owners[manager] = (operation, current | paths, now_rfc3339())
        for other in [name for name, (_, owned, _) in entry.owners.items() if not owned]:
            del entry.owners[other]

    def _commit(self, kind: Kind, key: tuple[str, str, str, str], entry: Entry, event: str) -> Obj:
        entry.obj["metadata"]["resourceVersion"] = self._next_rv()
        self._render_managed_fields(entry, kind)
        self.objects[key] = entry
        result = copy.deepcopy(entry.obj)
        for listener in self.listeners:
            listener(event, kind, result)
        return result

    # ------------------------------------------------------------------ verbs

    def get(self, kind: Kind, namespace: str | None, name: str) -> Obj:
        with self.lock:
            entry = self.objects.get(self._key(kind, namespace if kind.namespaced else None, name))
            if entry is None:
                raise self._not_found(kind, name)
            return copy.deepcopy(entry.obj)

    def list(self, kind: Kind, namespace: str | None, *, label_selector: str = "", field_selector: str = "") -> Obj:
        labels_ok = label_matcher(label_selector)
        fields_ok = field_matcher(field_selector)
        with self.lock:
            scope = namespace if kind.namespaced and namespace is not None else None
            items = [
                copy.deepcopy(entry.obj)
                for _, entry in self.objects.of_kind(kind.group, kind.plural, scope)
                if labels_ok(entry.obj["metadata"].get("labels") or {}) and fields_ok(entry.obj)
            ]
            for item in items:
                # A real kube-apiserver leaves `kind` and `apiVersion` off the items of a built-in kind's list (typed
                # objects are encoded without their TypeMeta inside a list: kubernetes/kubernetes#3030, #63676,
                # kubernetes-client/python#745); a custom resource's items keep both, in the version listed, because
                # they are served unstructured (kyverno/kyverno#213).
                if kind.custom:
                    item["apiVersion"], item["kind"] = kind.api_version, kind.kind
                else:
                    item.pop("apiVersion", None)
                    item.pop("kind", None)
            return {
                "kind": f"{kind.kind}List",
                "apiVersion": kind.api_version,
                "metadata": {"resourceVersion": str(self._resource_version)},
                "items": items,
            }

    def iter_objects(self, kind: Kind) -> Iterator[Obj]:
        with self.lock:
            items = [copy.deepcopy(e.obj) for _, e in self.objects.of_kind(kind.group, kind.plural)]
        yield from items

    def versions(self, kind: Kind) -> tuple[tuple[str, str, str], ...]:
        """(namespace, name, resourceVersion) of every object of a kind: what a controller's informer would see,
        without copying the objects."""
        with self.lock:
            return tuple(
                (ns, name, entry.obj["metadata"]["resourceVersion"])
                for (_, _, ns, name), entry in self.objects.of_kind(kind.group, kind.plural)
            )

    def create(
        self, kind: Kind, namespace: str | None, body: Any, *, manager: str, dry_run: bool = False, strict: bool = False
    ) -> Obj:
        with self.lock:
            obj = self._check_identity(kind, body, namespace if kind.namespaced else None, None)
            metadata = obj["metadata"]
            if not metadata.get("name") and metadata.get("generateName"):
                metadata["name"] = f"{metadata['generateName']}{uuid.uuid4().hex[:5]}"
            self._validate_name(kind, metadata.get("name") or "")
            self._require_namespace(kind, namespace, creating=True)
            key = self._key(kind, namespace if kind.namespaced else None, metadata["name"])
            if key in self.objects:
                raise ApiError(
                    409,
                    "AlreadyExists",
                    f'{kind.resource} "{metadata["name"]}" already exists',
                    {"name": metadata["name"], "group": kind.group, "kind": kind.plural},
                )
            if kind.status_subresource and kind.custom:
                obj.pop("status", None)
            obj = self._prepare(kind, obj, strict=strict)
            self._admit(kind, obj)
            for server_field in (
                "uid",
                "resourceVersion",
                "creationTimestamp",
                "deletionTimestamp",
                "managedFields",
                "generation",
            ):
                obj["metadata"].pop(server_field, None)
            obj["metadata"]["uid"] = str(uuid.uuid4())
            obj["metadata"]["creationTimestamp"] = now_rfc3339()
            self._bump_generation(kind, None, obj)
            if kind.kind == "CustomResourceDefinition":
                # As created, before the naming controller has looked at it: no conditions, no accepted names.
                obj["status"] = _crd_status(obj, established=None)
            if dry_run:
                return obj
            if kind.kind == "CustomResourceDefinition":
                self.register_crd(obj, serve=False)
                self._establishing[metadata["name"]] = time.monotonic() + self.establish_delay
            entry = Entry(obj)
            if kind.kind != "CustomResourceDefinition":  # ownership of a 2 MB schema is slow and never needed
                self._take_ownership(entry, manager, "Update", f.owned_paths(obj, self._schema(kind)), replace=True)
            result = self._commit(kind, key, entry, "ADDED")
            self._after_write(kind, result)
            return result

    def replace(
        self,
        kind: Kind,
        namespace: str | None,
        name: str,
        body: Any,
        *,
        manager: str,
        subresource: str = "",
        dry_run: bool = False,
        strict: bool = False,
    ) -> Obj:
        with self.lock:
            obj = self._check_identity(kind, body, namespace if kind.namespaced else None, name)
            key = self._key(kind, namespace if kind.namespaced else None, name)
            entry = self.objects.get(key)
            if entry is None:
                raise self._not_found(kind, name)
            wanted_rv = obj["metadata"].get("resourceVersion")
            if not wanted_rv and not subresource:
                raise self._invalid(
                    kind,
                    name,
                    [
                        {
                            "reason": "FieldValueInvalid",
                            "field": "metadata.resourceVersion",
                            "message": "Invalid value: 0x0: must be specified for an update",
                        }
                    ],
                )
            if wanted_rv and wanted_rv != entry.obj["metadata"]["resourceVersion"]:
                raise self._conflict(kind, name)
            return self._update(
                kind, key, entry, obj, manager=manager, subresource=subresource, dry_run=dry_run, strict=strict
            )

    def _conflict(self, kind: Kind, name: str) -> ApiError:
        return ApiError(
            409,
            "Conflict",
            f'Operation cannot be fulfilled on {kind.resource} "{name}": the object has been modified; please apply your changes to the latest version and try again',
            {"name": name, "group": kind.group, "kind": kind.plural},
        )

    def _update(
        self,
        kind: Kind,
        key: tuple[str, str, str, str],
        entry: Entry,
        new: Obj,
        *,
        manager: str,
        subresource: str,
        dry_run: bool,
        strict: bool,
        operation: str = "Update",
        applied_paths: set[f.Path] | None = None,
    ) -> Obj:
        old = entry.obj
        if subresource == "status":
            merged = copy.deepcopy(old)
            merged["status"] = new.get("status")
            if merged["status"] is None:
                merged.pop("status")
            owner = f"{manager}/status"
        else:
            merged = new
            if kind.status_subresource and kind.kind != "Namespace":
                if "status" in old:
                    merged["status"] = copy.deepcopy(old["status"])
                else:
                    merged.pop("status", None)
            owner = manager
        for server_field in ("uid", "creationTimestamp", "deletionTimestamp", "generation", "resourceVersion"):
            if server_field in old["metadata"]:
                merged["metadata"][server_field] = old["metadata"][server_field]
            else:
                merged["metadata"].pop(server_field, None)
        merged["metadata"].pop("managedFields", None)
        if kind.kind == "CustomResourceDefinition":
            if subresource != "status":
                # A CRD not yet established stays unserved; an established one serves its new versions at once.
                establishing = merged["metadata"]["name"] in self._establishing
                if not dry_run:
                    self.register_crd(merged, serve=not establishing)
                merged["status"] = (
                    copy.deepcopy(old.get("status"))
                    if establishing
                    else _crd_status(merged, established=True, previous=old.get("status"))
                )
        else:
            merged = self._prepare(kind, merged, strict=strict)
        self._bump_generation(kind, old, merged)
        if subresource != "status":
            for webhook in self.update_webhooks:
                webhook(kind, old, merged)

        if dry_run:
            merged["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
            return merged
        changed_content = f.canonical(_comparable(old)) != f.canonical(_comparable(merged))
        before_owners = {m: (op, frozenset(p)) for m, (op, p, _) in entry.owners.items()}
        new_entry = Entry(merged, {m: (op, set(p), t) for m, (op, p, t) in entry.owners.items()})
        if kind.kind != "CustomResourceDefinition":
            if applied_paths is not None:
                self._take_ownership(new_entry, owner, operation, applied_paths, replace=True)
            else:
                candidates = (
                    f.leaf_paths(merged.get("status") or {}, ("status",), self._status_schema(kind))
                    if subresource == "status"
                    else f.owned_paths(merged, self._schema(kind))
                )
                changed = {path for path in candidates if f.get_path(old, path) != f.get_path(merged, path)}
                if changed:
                    self._take_ownership(new_entry, owner, operation, changed, replace=False)
        after_owners = {m: (op, frozenset(p)) for m, (op, p, _) in new_entry.owners.items()}
        if not changed_content and before_owners == after_owners:
            return copy.deepcopy(old)
        if not changed_content:
            for manager_name, (op, paths, _when) in new_entry.owners.items():
                if before_owners.get(manager_name) == (op, frozenset(paths)):
                    previous = entry.owners.get(manager_name)
                    if previous is not None:
                        new_entry.owners[manager_name] = (op, paths, previous[2])
        if old["metadata"].get("deletionTimestamp") and not merged["metadata"].get("finalizers"):
            del self.objects[key]
            result = copy.deepcopy(merged)
            for listener in self.listeners:
                listener("DELETED", kind, result)
            return result
        result = self._commit(kind, key, new_entry, "MODIFIED")
        self._after_write(kind, result)
        return result

    def patch(
        self,
        kind: Kind,
        namespace: str | None,
        name: str,
        patch_type: str,
        body: Any,
        *,
        manager: str | None,
        force: bool = False,
        subresource: str = "",
        dry_run: bool = False,
        strict: bool = False,
    ) -> tuple[Obj, bool]:
        """Returns (object, created): server-side apply creates a missing object."""
        ns = namespace if kind.namespaced else None
        with self.lock:
            key = self._key(kind, ns, name)
            entry = self.objects.get(key)
            if patch_type == "application/apply-patch+yaml":
                if not manager:
                    raise ApiError(
                        422,
                        "Invalid",
                        'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is required for apply patch',
                    )
                applied = self._check_identity(kind, body, ns, name)
                self._check_typed_patch(kind, body)
                if entry is None:
                    if subresource:
                        raise self._not_found(kind, name)
                    created = self.create(kind, namespace, applied, manager=manager, dry_run=dry_run, strict=strict)
                    if not dry_run and kind.kind != "CustomResourceDefinition":
                        created_entry = self.objects[key]
                        created_entry.owners = {}
                        self._take_ownership(
                            created_entry, manager, "Apply", f.owned_paths(applied, self._schema(kind)), replace=True
                        )
                        self._render_managed_fields(created_entry, kind)
                        created = copy.deepcopy(created_entry.obj)
                    return created, True
                return self._apply(
                    kind,
                    key,
                    entry,
                    applied,
                    manager=manager,
                    force=force,
                    subresource=subresource,
                    dry_run=dry_run,
                    strict=strict,
                ), False
            if entry is None:
                raise self._not_found(kind, name)
            live = copy.deepcopy(entry.obj)
            try:
                if patch_type == "application/merge-patch+json":
                    patched = f.json_merge_patch(live, body)
                elif patch_type == "application/json-patch+json":
                    patched = f.json_patch(live, body)
                elif patch_type == "application/strategic-merge-patch+json":
                    if kind.custom:
                        raise ApiError(
                            415,
                            "UnsupportedMediaType",
                            "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
                        )
                    patched = f.strategic_merge_patch(live, body)
                else:
                    raise ApiError(415, "UnsupportedMediaType", f"the media type {patch_type!r} is not supported")
            except f.PatchError as error:
                raise ApiError(
                    422, "Invalid", f"the server rejected our request due to an error in our request: {error}"
                ) from None
            if not isinstance(patched, dict):
                raise ApiError(400, "BadRequest", "the patch does not produce an object")
            wanted_rv = ((body or {}).get("metadata") or {}).get("resourceVersion") if isinstance(body, dict) else None
            if wanted_rv and wanted_rv != entry.obj["metadata"]["resourceVersion"]:
                raise self._conflict(kind, name)
            patched = self._check_identity(kind, patched, ns, name)
            return self._update(
                kind,
                key,
                entry,
                patched,
                manager=manager or "unknown",
                subresource=subresource,
                dry_run=dry_run,
                strict=strict,
            ), False

    def _apply(
        self,
        kind: Kind,
        key: tuple[str, str, str, str],
        entry: Entry,
        applied: Obj,
        *,
        manager: str,
        force: bool,
        subresource: str,
        dry_run: bool,
        strict: bool,
    ) -> Obj:
        owner = f"{manager}/status" if subresource == "status" else manager
        if subresource == "status":
            applied = {
                "apiVersion": applied["apiVersion"],
                "kind": applied["kind"],
                "metadata": applied["metadata"],
                "status": applied.get("status") or {},
            }
            new_paths = f.leaf_paths(applied["status"], ("status",), self._status_schema(kind))
        else:
            new_paths = f.owned_paths(applied, self._schema(kind))
        live = entry.obj
        conflicts: list[tuple[str, f.Path]] = []
        for other, (_, paths, _) in entry.owners.items():
            if other == owner:
                continue
            for path in new_paths & paths:
                if f.get_path(live, path) != f.get_path(applied, path):
                    conflicts.append((other, path))
        if conflicts and not force:
            causes = [
                {
                    "type": "FieldManagerConflict",
                    "message": f'conflict with "{other}": {f.describe(path)}',
                    "field": f.describe(path),
                }
                for other, path in sorted(conflicts)
            ]
            listed = "\n".join(f'- conflict with "{other}": {f.describe(path)}' for other, path in sorted(conflicts))
            raise ApiError(
                409,
                "Conflict",
                f"Apply failed with {len(conflicts)} conflict{'s' if len(conflicts) > 1 else ''}: {listed}",
                {"causes": causes},
            )
        scratch = Entry(entry.obj, {m: (op, set(p), t) for m, (op, p, t) in entry.owners.items()})
        if conflicts:
            for other, path in conflicts:
                op, paths, when = scratch.owners[other]
                scratch.owners[other] = (op, paths - {path}, when)
        previous = scratch.owners.get(owner, ("Apply", set(), ""))[1]
        applied_body = {k: v for k, v in applied.items() if k != "metadata"}
        applied_body["metadata"] = {k: v for k, v in applied["metadata"].items() if k in f.OWNABLE_METADATA}
        merged = f.merge_apply(live, applied_body, self._schema(kind))
        others = (
            set().union(*(p for m, (_, p, _) in scratch.owners.items() if m != owner))
            if len(scratch.owners) > (owner in scratch.owners)
            else set()
        )
        for path in sorted(previous - new_paths, key=len, reverse=True):
            if path not in others and not any(o[: len(path)] == path or path[: len(o)] == o for o in new_paths):
                f.remove_path(merged, path, self._schema(kind))
        merged.pop("managedFields", None)
        updated_entry = Entry(entry.obj, scratch.owners)
        return self._update(
            kind,
            key,
            updated_entry if not dry_run else entry,
            merged,
            manager=manager,
            subresource="" if subresource != "status" else "status",
            dry_run=dry_run,
            strict=strict,
            operation="Apply",
            applied_paths=new_paths,
        )

    def delete(
        self, kind: Kind, namespace: str | None, name: str, *, dry_run: bool = False, orphan: bool = False
    ) -> Obj:
        """Delete; with `orphan` (propagationPolicy Orphan), the object goes with the `orphan` finalizer in its last
        state, which tells the garbage collector to strip its dependents' owner references instead of deleting them
        (controllers_apps.collect_garbage)."""
        with self.lock:
            key = self._key(kind, namespace if kind.namespaced else None, name)
            entry = self.objects.get(key)
            if entry is None:
                raise self._not_found(kind, name)
            details = {"name": name, "group": kind.group, "kind": kind.plural, "uid": entry.obj["metadata"]["uid"]}
            success = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}
            if dry_run:
                return success
            finalizers = entry.obj["metadata"].get("finalizers") or []
            if kind.kind == "Namespace":
                if not entry.obj["metadata"].get("deletionTimestamp"):
                    entry.obj["metadata"]["deletionTimestamp"] = now_rfc3339()
                    entry.obj["status"] = {"phase": "Terminating"}
                    return self._commit(kind, key, entry, "MODIFIED")
                return copy.deepcopy(entry.obj)
            if finalizers:
                if not entry.obj["metadata"].get("deletionTimestamp"):
                    entry.obj["metadata"]["deletionTimestamp"] = now_rfc3339()
                    return self._commit(kind, key, entry, "MODIFIED")
                return copy.deepcopy(entry.obj)
            del self.objects[key]
            if kind.kind == "CustomResourceDefinition":  # its kinds are no longer served
                self.forget_crd(entry.obj)
            self._after_delete(kind, entry.obj)
            gone = copy.deepcopy(entry.obj)
            if orphan:
                gone["metadata"]["finalizers"] = ["orphan"]
            for listener in self.listeners:
                listener("DELETED", kind, gone)
            return success

    # ------------------------------------------------------------------ built-in behaviour

    def _admit(self, kind: Kind, obj: Obj) -> None:
        """ResourceQuota admission of pods on requests.nvidia.com/gpu, with the API server's message format."""
        if kind.kind != "Pod":
            return
        namespace = obj["metadata"]["namespace"]
        requested = _gpu_request(obj)
        if not requested:
            return
        used = self.gpu_used(namespace)
        for _, entry in self.objects.of_kind("", "resourcequotas", namespace):
            hard = ((entry.obj.get("status") or {}).get("hard") or {}).get(GPU_QUOTA_RESOURCE)
            if hard is None:  # a quota is enforced only once its status is filled in
                continue
            limit = int(str(hard))
            if used + requested > limit:
                raise ApiError(
                    403,
                    "Forbidden",
                    f'pods "{obj["metadata"]["name"]}" is forbidden: exceeded quota: {entry.obj["metadata"]["name"]}, '
                    f"requested: {GPU_QUOTA_RESOURCE}={requested}, used: {GPU_QUOTA_RESOURCE}={used}, "
                    f"limited: {GPU_QUOTA_RESOURCE}={limit}",
                    {"name": obj["metadata"]["name"], "kind": "pods"},
                )

    def gpu_used(self, namespace: str) -> int:
        return sum(
            _gpu_request(entry.obj)
            for _, entry in self.objects.of_kind("", "pods", namespace)
            if (entry.obj.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
        )

    def _after_write(self, kind: Kind, obj: Obj) -> None:
        if kind.kind in ("ResourceQuota", "Pod"):
            self.refresh_quota_status(obj["metadata"]["namespace"])

    def _after_delete(self, kind: Kind, obj: Obj) -> None:
        if kind.kind == "Pod":
            self.refresh_quota_status(obj["metadata"]["namespace"])

    def refresh_quota_status(self, namespace: str) -> None:
        """The quota controller's job, done synchronously: status.hard from spec, status.used from pods."""
        quota_kind = self.kinds[("", "v1", "resourcequotas")]
        used = self.gpu_used(namespace)
        for key, entry in self.objects.of_kind("", "resourcequotas", namespace):
            hard = copy.deepcopy((entry.obj.get("spec") or {}).get("hard") or {})
            status = {"hard": hard, "used": {name: (str(used) if name == GPU_QUOTA_RESOURCE else "0") for name in hard}}
            if entry.obj.get("status") != status:
                entry.obj["status"] = status
                self._commit(quota_kind, key, entry, "MODIFIED")

    def finish_namespace_deletions(self) -> int:
        """The namespace controller: empty terminating namespaces, then remove them. Returns namespaces removed."""
        removed = 0
        with self.lock:
            terminating = [
                e.obj["metadata"]["name"]
                for _, e in self.objects.of_kind("", "namespaces")
                if e.obj["metadata"].get("deletionTimestamp")
            ]
            for namespace in terminating:
                for key in self.objects.in_namespace(namespace):
                    entry = self.objects.pop(key)
                    kind = next((k for k in self.kinds.values() if k.group == key[0] and k.plural == key[1]), None)
                    if kind is not None:
                        for listener in self.listeners:
                            listener("DELETED", kind, copy.deepcopy(entry.obj))
                self.objects.pop(("", "namespaces", "", namespace), None)
                removed += 1
        return removed

    def update_status(self, kind: Kind, namespace: str | None, name: str, status: Obj, *, manager: str) -> Obj | None:
        """A controller's status write; None when the object is gone."""
        with self.lock:
            key = self._key(kind, namespace if kind.namespaced else None, name)
            entry = self.objects.get(key)
            if entry is None:
                return None
            body = copy.deepcopy(entry.obj)
            body["status"] = status
            return self._update(
                kind, key, entry, body, manager=manager, subresource="status", dry_run=False, strict=False
            )


def _spec_like(obj: Obj) -> Obj:
    """What a generation counts: everything but metadata and status."""
    return {key: value for key, value in obj.items() if key not in ("metadata", "status")}


def _comparable(obj: Obj) -> Obj:
    """An object without the fields every write changes, to tell a no-op write from a real one."""
    metadata = {k: v for k, v in obj["metadata"].items() if k not in ("managedFields", "resourceVersion")}
    return {key: value for key, value in obj.items() if key != "metadata"} | {"metadata": metadata}


def _served_versions(crd: Obj) -> list[str]:
    return [v["name"] for v in (crd.get("spec") or {}).get("versions") or [] if v.get("served", True)]


def _has_status(crd: Obj, version: str) -> bool:
    for item in (crd.get("spec") or {}).get("versions") or []:
        if item.get("name") == version:
            return "status" in (item.get("subresources") or {})
    return False


def _crd_status(crd: Obj, *, established: bool | None = True, previous: Obj | None = None) -> Obj:
    """A CRD's status as a real API server reports it: as created (established None: no conditions, names not yet
    accepted), then names accepted and Established False "Installing", then Established True. The reasons and
    messages are apiextensions-apiserver's naming and establishing controllers'; a condition keeps its
    lastTransitionTime while its status does not change."""
    spec = crd.get("spec") or {}
    stored = [v["name"] for v in spec.get("versions") or [] if v.get("storage")]
    if established is None:
        return {"acceptedNames": {"plural": "", "kind": ""}, "storedVersions": stored}
    before = {str(c.get("type")): c for c in (previous or {}).get("conditions") or [] if isinstance(c, dict)}

    def condition(kind: str, status: str, reason: str, message: str) -> Obj:
        earlier = before.get(kind) or {}
        when = earlier.get("lastTransitionTime") if earlier.get("status") == status else None
        return {
            "type": kind,
            "status": status,
            "reason": reason,
            "message": message,
            "lastTransitionTime": when or now_rfc3339(),
        }

    return {
        "acceptedNames": spec.get("names") or {},
        "conditions": [
            condition("NamesAccepted", "True", "NoConflicts", "no conflicts found"),
            condition("Established", "True", "InitialNamesAccepted", "the initial names have been accepted")
            if established
            else condition("Established", "False", "Installing", "the initial names have been accepted"),
        ],
        "storedVersions": stored,
    }
