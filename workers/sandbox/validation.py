"""Custom resources checked the way an API server checks them: defaults, pruning, schema, CEL rules.

From shared/reference/kubernetes-test-server.md: a CRD's structural `openAPIV3Schema` is translated for
`jsonschema` (`nullable`, `x-kubernetes-int-or-string`, `x-kubernetes-preserve-unknown-fields`,
`x-kubernetes-embedded-resource`, list types `set` and `map`), schema defaults are applied first and unknown
fields pruned, then `x-kubernetes-validations` CEL rules are evaluated with the `common-expression-language`
package. That library lacks Kubernetes' CEL extensions (`quantity()`, `url()`, `isURL`, ip/cidr, some string
functions) and transition rules (`oldSelf`): rules using them are skipped and listed in `skipped_rules`.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cel
import jsonschema
import yaml

Schema = dict[str, Any]
CrdKinds = frozenset[tuple[str, str]]  # (group, plural) pairs
METADATA_FIELDS = (
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
)
# Functions the CEL library evaluates; anything else in a rule (Kubernetes extensions) makes it skipped.
SUPPORTED_FUNCTIONS = frozenset(
    {
        "has", "size", "all", "exists", "exists_one", "filter", "map", "matches", "startsWith", "endsWith",
        "contains", "int", "uint", "double", "string", "bool", "bytes", "type", "duration", "timestamp", "dyn",
        "in", "max", "min",
    }
)  # fmt: skip
_FUNCTION_CALL = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*\(")


@dataclass(frozen=True)
class Cause:
    """One failure, as Kubernetes reports it in Status.details.causes."""

    field: str
    reason: str  # FieldValueInvalid, FieldValueRequired, FieldValueNotSupported, FieldValueTypeInvalid, ...
    message: str


@dataclass(frozen=True)
class CrdInfo:
    group: str
    version: str  # the storage version
    kind: str
    plural: str
    singular: str
    namespaced: bool
    short_names: tuple[str, ...]
    has_status_subresource: bool
    list_kind: str


def _field(path: tuple[str | int, ...]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _translate(schema: Schema) -> Schema:
    """A structural schema as plain JSON Schema (draft 7)."""
    out: Schema = {}
    for key, value in schema.items():
        if key in ("properties", "patternProperties"):
            out[key] = {name: _translate(sub) for name, sub in value.items()}
        elif (key == "items" and isinstance(value, dict)) or (
            key == "additionalProperties" and isinstance(value, dict)
        ):
            out[key] = _translate(value)
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = [_translate(sub) for sub in value]
        elif key == "not":
            out[key] = _translate(value)
        elif key.startswith("x-kubernetes-") or key in ("default", "nullable", "format", "description", "example"):
            continue
        else:
            out[key] = value
    if schema.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["allOf"] = [
            *out.get("allOf", []),
            {"type": ["integer", "string", "null"] if schema.get("nullable") else ["integer", "string"]},
        ]
    if schema.get("x-kubernetes-list-type") == "set":
        out["uniqueItems"] = True
    if schema.get("nullable") and "type" in out:
        types = out["type"] if isinstance(out["type"], list) else [out["type"]]
        out["type"] = [*types, "null"]
    if schema.get("nullable") and "enum" in out:
        out["enum"] = [*out["enum"], None]
    return out


_REASONS = {
    "required": "FieldValueRequired",
    "enum": "FieldValueNotSupported",
    "type": "FieldValueTypeInvalid",
    "uniqueItems": "FieldValueDuplicate",
}


class CrdValidator:
    """Validates custom resources of one CRD version: defaults applied, unknown fields pruned, schema + CEL checked."""

    def __init__(self, schema: Schema, registry: CrdRegistry) -> None:
        self.schema = schema
        self.registry = registry
        self._jsonschema = jsonschema.Draft7Validator(_translate(schema))
        self._programs: dict[str, Any] = {}

    # ------------------------------------------------------------------ defaults and pruning

    def _default_and_prune(
        self, value: Any, schema: Schema, path: tuple[str | int, ...], unknown: list[str], *, root: bool = False
    ) -> Any:
        if isinstance(value, dict) and (schema.get("type") == "object" or "properties" in schema or root):
            properties: dict[str, Schema] = schema.get("properties") or {}
            additional = schema.get("additionalProperties")
            preserve = schema.get("x-kubernetes-preserve-unknown-fields") is True
            embedded = schema.get("x-kubernetes-embedded-resource") is True
            for name, sub in properties.items():
                if name not in value and "default" in sub:
                    value[name] = copy.deepcopy(sub["default"])
            for name in list(value):
                if root and name in ("apiVersion", "kind", "metadata"):  # ObjectMeta, whatever the schema says
                    continue
                if name in properties:
                    value[name] = self._default_and_prune(value[name], properties[name], (*path, name), unknown)
                elif isinstance(additional, dict):
                    value[name] = self._default_and_prune(value[name], additional, (*path, name), unknown)
                elif embedded and name in ("apiVersion", "kind", "metadata"):
                    continue
                elif not preserve and additional is not True:
                    unknown.append(_field((*path, name)))
                    del value[name]
        elif isinstance(value, list) and isinstance(schema.get("items"), dict):
            for index, item in enumerate(value):
                value[index] = self._default_and_prune(item, schema["items"], (*path, index), unknown)
        return value

    # ------------------------------------------------------------------ server-side apply's typed patch

    def undeclared_fields(self, obj: dict[str, Any]) -> list[str]:
        """Fields of an apply body the schema does not declare, as server-side apply's typed conversion names them
        (`.spec.foo`, `.spec.env[name="A"].bar`, `.spec.items[0].bar`).

        That conversion (structured-merge-diff's validatingObjectWalker.visitMapItems) stops at the first
        undeclared field of each map, and Go's map order decides which one: the sorted first one stands in here."""
        found: list[str] = []
        metadata = obj.get("metadata")
        if isinstance(metadata, dict):
            unknown = sorted(name for name in metadata if name not in METADATA_FIELDS)
            if unknown:
                found.append(f".metadata.{unknown[0]}")
        body = {key: value for key, value in obj.items() if key not in ("apiVersion", "kind", "metadata")}
        self._undeclared(body, self.schema, "", found)
        return found

    def _undeclared(self, value: Any, schema: Schema, path: str, found: list[str]) -> None:
        if isinstance(value, dict):
            properties: dict[str, Schema] = schema.get("properties") or {}
            additional = schema.get("additionalProperties")
            preserve = schema.get("x-kubernetes-preserve-unknown-fields") is True
            embedded = schema.get("x-kubernetes-embedded-resource") is True
            for name in sorted(value):
                sub = properties.get(name) or (additional if isinstance(additional, dict) else None)
                if sub is not None:
                    self._undeclared(value[name], sub, f"{path}.{name}", found)
                elif not (preserve or additional is True or (embedded and name in ("apiVersion", "kind", "metadata"))):
                    found.append(f"{path}.{name}")
                    return
        elif isinstance(value, list) and isinstance(schema.get("items"), dict):
            keys = [str(key) for key in schema.get("x-kubernetes-list-map-keys") or []]
            keyed = schema.get("x-kubernetes-list-type") == "map" and keys
            for index, item in enumerate(value):
                element = f"[{index}]"
                if keyed and isinstance(item, dict) and all(key in item for key in keys):
                    element = "[" + ",".join(f"{key}={json.dumps(item[key])}" for key in sorted(keys)) + "]"
                self._undeclared(item, schema["items"], f"{path}{element}", found)

    # ------------------------------------------------------------------ list-type map uniqueness

    def _map_lists(self, value: Any, schema: Schema, path: tuple[str | int, ...], causes: list[Cause]) -> None:
        if isinstance(value, list):
            items = schema.get("items") if isinstance(schema.get("items"), dict) else None
            if schema.get("x-kubernetes-list-type") == "map":
                keys = schema.get("x-kubernetes-list-map-keys") or []
                seen: set[str] = set()
                for index, item in enumerate(value):
                    if not isinstance(item, dict):
                        continue
                    identity = json.dumps([item.get(key) for key in keys])
                    if identity in seen:
                        causes.append(
                            Cause(_field((*path, index)), "FieldValueDuplicate", f"Duplicate value: {identity}")
                        )
                    seen.add(identity)
            if items is not None:
                for index, item in enumerate(value):
                    self._map_lists(item, items, (*path, index), causes)
        elif isinstance(value, dict):
            properties = schema.get("properties") or {}
            additional = schema.get("additionalProperties")
            for name, item in value.items():
                sub = properties.get(name) or (additional if isinstance(additional, dict) else None)
                if sub is not None:
                    self._map_lists(item, sub, (*path, name), causes)

    # ------------------------------------------------------------------ CEL

    def _program(self, rule: str) -> Any | None:
        if rule in self._programs:
            return self._programs[rule]
        program = None
        functions = set(_FUNCTION_CALL.findall(rule))
        if "oldSelf" in rule or not functions <= SUPPORTED_FUNCTIONS:
            self.registry.skip(rule)
        else:
            try:
                program = cel.compile(rule)
            except (ValueError, RuntimeError):
                self.registry.skip(rule)
        self._programs[rule] = program
        return program

    def _cel(self, value: Any, schema: Schema, path: tuple[str | int, ...], causes: list[Cause]) -> None:
        if value is None:
            return
        for validation in schema.get("x-kubernetes-validations") or []:
            rule = str(validation.get("rule", ""))
            program = self._program(rule)
            if program is None:
                continue
            try:
                result = program.execute({"self": value})
            except KeyError as missing:  # Kubernetes too: a rule reading an absent field fails ("no such key")
                result = f"no such key: {missing}"
            except (RuntimeError, ValueError, TypeError):  # a function this library lacks
                self.registry.skip(rule)
                self._programs[rule] = None
                continue
            if result is not True:
                field_path = str(validation.get("fieldPath") or "")
                where = _field(path) + field_path if field_path else _field(path)
                message = str(validation.get("message") or f"failed rule: {rule}")
                reason = {
                    "FieldValueRequired": "FieldValueRequired",
                    "FieldValueForbidden": "FieldValueForbidden",
                    "FieldValueDuplicate": "FieldValueDuplicate",
                }.get(str(validation.get("reason") or ""), "FieldValueInvalid")
                causes.append(Cause(where.lstrip("."), reason, f"Invalid value: {_short(value)}: {message}"))
        if isinstance(value, dict):
            properties = schema.get("properties") or {}
            additional = schema.get("additionalProperties")
            for name, item in value.items():
                sub = properties.get(name) or (additional if isinstance(additional, dict) else None)
                if sub is not None:
                    self._cel(item, sub, (*path, name), causes)
        elif isinstance(value, list) and isinstance(schema.get("items"), dict):
            for index, item in enumerate(value):
                self._cel(item, schema["items"], (*path, index), causes)

    # ------------------------------------------------------------------ the whole check

    def validate(self, obj: dict[str, Any], *, strict: bool = False) -> tuple[dict[str, Any], list[Cause], list[str]]:
        """Return (the object with defaults applied and unknown fields pruned, causes (empty = valid), warnings).

        strict=True (fieldValidation=Strict) reports unknown fields as causes instead of pruning silently."""
        result = copy.deepcopy(obj)
        metadata = result.get("metadata")
        if isinstance(metadata, dict):
            result["metadata"] = {key: value for key, value in metadata.items() if key in METADATA_FIELDS}
        unknown: list[str] = []
        result = self._default_and_prune(result, self.schema, (), unknown, root=True)
        warnings = [f'unknown field "{name}"' for name in unknown]
        causes: list[Cause] = []
        if strict:
            causes.extend(Cause(name, "FieldValueForbidden", f'unknown field "{name}"') for name in unknown)
        for error in sorted(self._jsonschema.iter_errors(result), key=lambda e: list(map(str, e.absolute_path))):
            path = tuple(error.absolute_path)
            if error.validator == "required":
                missing = re.match(r"'([^']+)' is a required property", error.message)
                path = (*path, missing.group(1)) if missing else path
                causes.append(Cause(_field(path), "FieldValueRequired", "Required value"))
                continue
            causes.append(
                Cause(
                    _field(path),
                    _REASONS.get(str(error.validator), "FieldValueInvalid"),
                    f"Invalid value: {_short(error.instance)}: {error.message}",
                )
            )
        self._map_lists(result, self.schema, (), causes)
        if not any(cause.reason == "FieldValueTypeInvalid" for cause in causes):  # CEL assumes well-typed values
            self._cel(result, self.schema, (), causes)
        return result, causes, warnings


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


class CrdRegistry:
    def __init__(self) -> None:
        self._crds: dict[str, dict[str, Any]] = {}  # by metadata.name
        self._infos: dict[tuple[str, str, str], CrdInfo] = {}  # (group, version, plural): every served version
        self._validators: dict[tuple[str, str, str], CrdValidator] = {}
        self._skipped: dict[str, None] = {}
        self._lock = threading.Lock()

    @property
    def skipped_rules(self) -> list[str]:
        return list(self._skipped)

    def skip(self, rule: str) -> None:
        self._skipped.setdefault(rule, None)

    def register(self, crd: dict[str, Any]) -> CrdInfo:
        """Register an apiextensions.k8s.io/v1 CustomResourceDefinition; returns its storage version's info."""
        spec = crd.get("spec") or {}
        names = spec.get("names") or {}
        versions = spec.get("versions") or []
        if not spec.get("group") or not names.get("plural") or not names.get("kind") or not versions:
            raise ValueError("a CustomResourceDefinition needs spec.group, spec.names.plural/kind and versions")
        storage: CrdInfo | None = None
        with self._lock:
            self._crds[str((crd.get("metadata") or {}).get("name") or f"{names['plural']}.{spec['group']}")] = crd
            for version in versions:
                info = CrdInfo(
                    group=spec["group"],
                    version=version["name"],
                    kind=names["kind"],
                    plural=names["plural"],
                    singular=names.get("singular") or names["kind"].lower(),
                    namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                    short_names=tuple(names.get("shortNames") or ()),
                    has_status_subresource="status" in (version.get("subresources") or {}),
                    list_kind=names.get("listKind") or f"{names['kind']}List",
                )
                key = (info.group, info.version, info.plural)
                self._infos[key] = info
                self._validators.pop(key, None)
                if version.get("storage") or storage is None:
                    storage = info
        assert storage is not None
        return storage

    def unregister(self, name: str) -> None:
        """Forget a CustomResourceDefinition by its metadata.name."""
        with self._lock:
            crd = self._crds.pop(name, None)
            if crd is None:
                return
            group, plural = crd["spec"]["group"], crd["spec"]["names"]["plural"]
            for key in [key for key in self._infos if (key[0], key[2]) == (group, plural)]:
                del self._infos[key]
                self._validators.pop(key, None)

    def load_dir(self, path: str | Path, *, kinds: CrdKinds | None = None) -> int:
        """Register the CRDs under `path`: only those of `kinds` ((group, plural) pairs), or every one (None)."""
        count = 0
        for document in crd_documents(path, kinds=kinds):
            self.register(document)
            count += 1
        return count

    def lookup(self, group: str, version: str, plural: str) -> CrdInfo | None:
        return self._infos.get((group, version, plural))

    def by_kind(self, api_version: str, kind: str) -> CrdInfo | None:
        group, _, version = api_version.rpartition("/")
        return next(
            (
                info
                for info in self._infos.values()
                if info.group == group and info.version == version and info.kind == kind
            ),
            None,
        )

    def validator(self, group: str, version: str, plural: str) -> CrdValidator:
        """Built lazily and cached; KeyError when the kind is not registered."""
        key = (group, version, plural)
        with self._lock:
            cached = self._validators.get(key)
            if cached is not None:
                return cached
        if key not in self._infos:
            raise KeyError(key)
        crd = next(
            c for c in self._crds.values() if c["spec"]["group"] == group and c["spec"]["names"]["plural"] == plural
        )
        version_spec = next(v for v in crd["spec"]["versions"] if v["name"] == version)
        schema = ((version_spec.get("schema") or {}).get("openAPIV3Schema")) or {
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": True,
        }
        built = CrdValidator(schema, self)
        with self._lock:
            self._validators[key] = built
        return built

    def crds(self) -> list[dict[str, Any]]:
        return list(self._crds.values())


def _declared_kind(path: Path) -> tuple[str, str] | None:
    """(group, plural) that a file named as controller-gen names CRD files (`<group>_<plural>.yaml`) declares."""
    group, separator, plural = path.stem.partition("_")
    if separator and "." in group and plural.isalnum() and plural.islower():
        return group, plural
    return None


@functools.lru_cache(maxsize=8)
def _documents(directory: str, kinds: CrdKinds | None) -> tuple[dict[str, Any], ...]:
    """CRDs under a directory (those of `kinds`, or all), parsed once per process (the KServe CRD alone is ~2 MB:
    the C loader matters). A file whose controller-gen name declares a kind outside `kinds` is not even parsed:
    the directory holds 13 MB of CRDs, and the portal's kinds are 5.6 MB of them."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    found: list[dict[str, Any]] = []
    for path in sorted({*Path(directory).rglob("*.yaml"), *Path(directory).rglob("*.yml")}):
        declared = _declared_kind(path)
        if kinds is not None and declared is not None and declared not in kinds:
            continue
        with path.open("rb") as handle:
            for document in yaml.load_all(handle, Loader=loader):
                if isinstance(document, dict) and document.get("kind") == "CustomResourceDefinition":
                    spec = document.get("spec") or {}
                    if kinds is None or (spec.get("group"), (spec.get("names") or {}).get("plural")) in kinds:
                        found.append(document)
    return tuple(found)


def crd_documents(directory: str | Path, *, kinds: CrdKinds | None = None) -> list[dict[str, Any]]:
    """The CustomResourceDefinitions under `directory`: those of `kinds` ((group, plural) pairs), or every one."""
    return list(_documents(str(Path(directory).resolve()), kinds))


def default_crd_dir() -> Path | None:
    """PORTAL_CRD_DIR, else ../shared/crds beside the repository, when it exists."""
    configured = os.environ.get("PORTAL_CRD_DIR")
    if configured:
        return Path(configured) if Path(configured).is_dir() else None
    beside = Path(__file__).resolve().parents[2].parent / "shared" / "crds"
    return beside if beside.is_dir() else None
