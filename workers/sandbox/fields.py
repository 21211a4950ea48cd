"""Field paths, ownership sets and patches: the bookkeeping behind server-side apply and the other write verbs.

Pure functions over JSON-like dicts. A field path is a tuple of map keys; lists are atomic (one leaf), which is
how Kubernetes treats lists without `x-kubernetes-list-type: map` (shared/reference/kubernetes-test-server.md
point 4). Lists of maps keyed by name are merged by name only in strategic merge patches of built-in kinds.
"""

from __future__ import annotations

import copy
import json
from typing import Any

Path = tuple[str, ...]
JSON = Any

# The metadata fields a manager can own; the rest (uid, resourceVersion, ...) belong to the server.
OWNABLE_METADATA = ("labels", "annotations", "ownerReferences", "finalizers")
SERVER_OWNED_TOP = ("apiVersion", "kind", "status")


def leaf_paths(value: JSON, prefix: Path = ()) -> set[Path]:
    """Every leaf below `value`: scalars, lists (atomic) and empty maps."""
    if isinstance(value, dict) and value:
        paths: set[Path] = set()
        for key, item in value.items():
            paths |= leaf_paths(item, (*prefix, str(key)))
        return paths
    return {prefix}


def owned_paths(obj: dict[str, Any]) -> set[Path]:
    """The fields of a written object that its writer owns: spec-like content plus labels and annotations."""
    paths: set[Path] = set()
    for key, value in obj.items():
        if key in SERVER_OWNED_TOP:
            continue
        if key == "metadata":
            for meta_key in OWNABLE_METADATA:
                if meta_key in (value or {}):
                    paths |= leaf_paths(value[meta_key], ("metadata", meta_key))
            continue
        paths |= leaf_paths(value, (key,))
    return paths


def get_path(obj: JSON, path: Path) -> tuple[bool, JSON]:
    current = obj
    for key in path:
        if not isinstance(current, dict) or key not in current:
            return False, None
        current = current[key]
    return True, current


def remove_path(obj: dict[str, Any], path: Path) -> None:
    """Remove a field, then any map it leaves empty on the way up (never the top level or metadata)."""
    parents: list[tuple[dict[str, Any], str]] = []
    current: Any = obj
    for key in path[:-1]:
        if not isinstance(current, dict) or key not in current:
            return
        parents.append((current, key))
        current = current[key]
    if isinstance(current, dict):
        current.pop(path[-1], None)
    for parent, key in reversed(parents):
        if isinstance(parent[key], dict) and not parent[key] and not (parent is obj and key == "metadata"):
            del parent[key]
        else:
            break


def merge_apply(live: dict[str, Any], applied: dict[str, Any]) -> dict[str, Any]:
    """The applied configuration laid over the live object: maps merged, lists and scalars replaced."""
    result = copy.deepcopy(live)
    for key, value in applied.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merge_apply(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def json_merge_patch(target: JSON, patch: JSON) -> JSON:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = json_merge_patch(result.get(key), value)
    return result


def strategic_merge_patch(target: JSON, patch: JSON) -> JSON:
    """A fair approximation for built-in kinds: JSON merge patch, with lists of maps merged by `name`."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$"):
            continue
        current = result.get(key)
        if value is None:
            result.pop(key, None)
        elif (
            isinstance(value, list)
            and isinstance(current, list)
            and value
            and all(isinstance(item, dict) and "name" in item for item in value + current)
        ):
            by_name = {item["name"]: item for item in current}
            for item in value:
                by_name[item["name"]] = strategic_merge_patch(by_name.get(item["name"], {}), item)
            result[key] = list(by_name.values())
        else:
            result[key] = strategic_merge_patch(current, value)
    return result


class PatchError(ValueError):
    pass


def _pointer(pointer: str) -> list[str]:
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise PatchError(f"invalid JSON pointer {pointer!r}")
    return [part.replace("~1", "/").replace("~0", "~") for part in pointer[1:].split("/")]


def _parent(doc: JSON, parts: list[str]) -> tuple[JSON, str]:
    current = doc
    for part in parts[:-1]:
        if isinstance(current, list):
            try:
                current = current[int(part)]
            except (ValueError, IndexError):
                raise PatchError(f"path element {part!r} not found") from None
        elif isinstance(current, dict) and part in current:
            current = current[part]
        else:
            raise PatchError(f"path element {part!r} not found")
    return current, parts[-1]


def _read(doc: JSON, parts: list[str]) -> JSON:
    if not parts:
        return doc
    parent, last = _parent(doc, parts)
    try:
        return parent[int(last)] if isinstance(parent, list) else parent[last]
    except (KeyError, ValueError, IndexError, TypeError):
        raise PatchError(f"path {'/'.join(parts)!r} not found") from None


def _add(doc: JSON, parts: list[str], value: JSON) -> JSON:
    if not parts:
        return value
    parent, last = _parent(doc, parts)
    if isinstance(parent, list):
        index = len(parent) if last == "-" else int(last) if last.isdigit() else -1
        if not 0 <= index <= len(parent):
            raise PatchError(f"index {last!r} out of range")
        parent.insert(index, value)
    elif isinstance(parent, dict):
        parent[last] = value
    else:
        raise PatchError("cannot add below a scalar")
    return doc


def _remove(doc: JSON, parts: list[str]) -> JSON:
    parent, last = _parent(doc, parts)
    try:
        if isinstance(parent, list):
            del parent[int(last)]
        else:
            del parent[last]
    except (KeyError, ValueError, IndexError, TypeError):
        raise PatchError(f"path {'/'.join(parts)!r} not found") from None
    return doc


def json_patch(target: JSON, operations: JSON) -> JSON:
    """RFC 6902."""
    if not isinstance(operations, list):
        raise PatchError("a JSON patch is a list of operations")
    doc = copy.deepcopy(target)
    for operation in operations:
        if not isinstance(operation, dict) or "op" not in operation or "path" not in operation:
            raise PatchError("each operation needs 'op' and 'path'")
        op, parts = operation["op"], _pointer(str(operation["path"]))
        if op == "add":
            doc = _add(doc, parts, copy.deepcopy(operation.get("value")))
        elif op == "remove":
            doc = _remove(doc, parts)
        elif op == "replace":
            _read(doc, parts)
            doc = (
                _add(_remove(doc, parts), parts, copy.deepcopy(operation.get("value")))
                if parts
                else operation.get("value")
            )
        elif op in ("move", "copy"):
            source = _pointer(str(operation.get("from", "")))
            value = copy.deepcopy(_read(doc, source))
            if op == "move":
                doc = _remove(doc, source)
            doc = _add(doc, parts, value)
        elif op == "test":
            if _read(doc, parts) != operation.get("value"):
                raise PatchError(f"test failed at {operation['path']}")
        else:
            raise PatchError(f"unknown operation {op!r}")
    return doc


def fields_v1(paths: set[Path]) -> dict[str, Any]:
    """The managedFields `fieldsV1` rendering of a set of leaf paths."""
    tree: dict[str, Any] = {}
    for path in sorted(paths):
        node = tree
        for key in path:
            node = node.setdefault(f"f:{key}", {})
    return tree


def paths_from_fields_v1(tree: dict[str, Any], prefix: Path = ()) -> set[Path]:
    paths: set[Path] = set()
    for key, child in tree.items():
        if not key.startswith("f:"):
            continue
        path = (*prefix, key[2:])
        paths |= paths_from_fields_v1(child, path) if child else {path}
    return paths


def canonical(value: JSON) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))
