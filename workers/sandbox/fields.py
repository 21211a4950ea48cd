"""Field paths, ownership sets and patches: the bookkeeping behind server-side apply and the other write verbs.

Pure functions over JSON-like dicts. A field path is a tuple of map keys. Lists are atomic (one leaf), as
Kubernetes treats them, unless the schema marks them `x-kubernetes-list-type: map`
(shared/reference/kubernetes-test-server.md point 4): then each item is addressed by its key fields, written
`k:{"name":"a"}` as in managedFields, so two managers can own different items and an applier that drops an
item removes just that item. Lists of maps keyed by name are merged by name in strategic merge patches of
built-in kinds.
"""

from __future__ import annotations

import copy
import json
from typing import Any

Path = tuple[str, ...]
JSON = Any
Schema = dict[str, Any]
ITEM_PREFIX = "k:"  # a path element naming an item of a map list by its keys


def _child_schema(schema: Schema | None, key: str) -> Schema | None:
    if not schema:
        return None
    found = (schema.get("properties") or {}).get(key)
    if found is None and isinstance(schema.get("additionalProperties"), dict):
        found = schema["additionalProperties"]
    return found if isinstance(found, dict) else None


def _map_list_keys(schema: Schema | None, value: JSON) -> list[str] | None:
    """The key fields of a map list whose items all carry them, else None (the list is atomic)."""
    if not schema or schema.get("x-kubernetes-list-type") != "map" or not isinstance(value, list):
        return None
    keys = [str(key) for key in schema.get("x-kubernetes-list-map-keys") or []]
    if not keys or not all(isinstance(item, dict) and all(key in item for key in keys) for item in value):
        return None
    return keys


def item_element(item: dict[str, Any], keys: list[str]) -> str:
    return ITEM_PREFIX + json.dumps({key: item[key] for key in keys}, sort_keys=True, separators=(",", ":"))


def _find_item(items: list[Any], element: str) -> int | None:
    identity = json.loads(element[len(ITEM_PREFIX) :])
    for index, item in enumerate(items):
        if isinstance(item, dict) and all(item.get(key) == value for key, value in identity.items()):
            return index
    return None


def describe(path: Path) -> str:
    """A path as the API server prints it in conflicts: .spec.rules[name="a"].timeouts"""
    text = ""
    for element in path:
        if element.startswith(ITEM_PREFIX):
            identity = json.loads(element[len(ITEM_PREFIX) :])
            text += "[" + ",".join(f"{key}={json.dumps(value)}" for key, value in identity.items()) + "]"
        else:
            text += "." + element
    return text


# The metadata fields a manager can own; the rest (uid, resourceVersion, ...) belong to the server.
OWNABLE_METADATA = ("labels", "annotations", "ownerReferences", "finalizers")
SERVER_OWNED_TOP = ("apiVersion", "kind", "status")


def leaf_paths(value: JSON, prefix: Path = (), schema: Schema | None = None) -> set[Path]:
    """Every leaf below `value`: scalars, atomic lists and empty maps; the fields of each item of a map list."""
    if isinstance(value, dict) and value:
        paths: set[Path] = set()
        for key, item in value.items():
            paths |= leaf_paths(item, (*prefix, str(key)), _child_schema(schema, str(key)))
        return paths
    keys = _map_list_keys(schema, value)
    if keys is not None and value:
        items_schema = (schema or {}).get("items")
        paths = set()
        for item in value:
            paths |= leaf_paths(item, (*prefix, item_element(item, keys)), items_schema)
        return paths
    return {prefix}


def owned_paths(obj: dict[str, Any], schema: Schema | None = None) -> set[Path]:
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
        paths |= leaf_paths(value, (key,), _child_schema(schema, key))
    return paths


def get_path(obj: JSON, path: Path) -> tuple[bool, JSON]:
    current = obj
    for key in path:
        if key.startswith(ITEM_PREFIX) and isinstance(current, list):
            index = _find_item(current, key)
            if index is None:
                return False, None
            current = current[index]
        elif not isinstance(current, dict) or key not in current:
            return False, None
        else:
            current = current[key]
    return True, current


def remove_path(obj: dict[str, Any], path: Path, schema: Schema | None = None) -> None:
    """Remove a field, then any map it leaves empty on the way up (never the top level or metadata). A key field
    of a map-list item stands for the item: removing it removes the item."""
    parents: list[tuple[Any, Any]] = []  # (container, key or index)
    current: Any = obj
    node_schema = schema
    for key in path[:-1]:
        if key.startswith(ITEM_PREFIX) and isinstance(current, list):
            index = _find_item(current, key)
            if index is None:
                return
            parents.append((current, index))
            current = current[index]
            node_schema = (node_schema or {}).get("items")
            continue
        if not isinstance(current, dict) or key not in current:
            return
        parents.append((current, key))
        current = current[key]
        node_schema = _child_schema(node_schema, key)
    last = path[-1]
    if parents and isinstance(parents[-1][0], list) and isinstance(current, dict):
        list_schema = _list_schema_of(schema, path[:-1])
        if last in (list_schema or {}).get("x-kubernetes-list-map-keys", []):
            container, index = parents.pop()
            del container[index]
            current = container
    if isinstance(current, dict):
        current.pop(last, None)
    for parent, key in reversed(parents):
        child = parent[key]
        if isinstance(child, dict | list) and not child and not (parent is obj and key == "metadata"):
            del parent[key]
        else:
            break


def _list_schema_of(schema: Schema | None, item_path: Path) -> Schema | None:
    """The schema of the map list that holds the item at `item_path` (whose last element is the item)."""
    node = schema
    for key in item_path[:-1]:
        node = (node or {}).get("items") if key.startswith(ITEM_PREFIX) else _child_schema(node, key)
    return node


def merge_apply(live: dict[str, Any], applied: dict[str, Any], schema: Schema | None = None) -> dict[str, Any]:
    """The applied configuration laid over the live object: maps merged, map lists merged item by item (new
    items appended), atomic lists and scalars replaced."""
    result = copy.deepcopy(live)
    for key, value in applied.items():
        child_schema = _child_schema(schema, key)
        current = result.get(key)
        keys = _map_list_keys(child_schema, value)
        if isinstance(value, dict) and isinstance(current, dict):
            result[key] = merge_apply(current, value, child_schema)
        elif keys is not None and isinstance(current, list) and _map_list_keys(child_schema, current) is not None:
            items_schema = (child_schema or {}).get("items")
            merged = list(current)
            for item in value:
                index = _find_item(merged, item_element(item, keys))
                if index is None:
                    merged.append(copy.deepcopy(item))
                else:
                    merged[index] = merge_apply(merged[index], item, items_schema)
            result[key] = merged
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
    """The managedFields `fieldsV1` rendering of a set of leaf paths (map-list items as `k:{...}` with `.: {}`)."""
    tree: dict[str, Any] = {}
    for path in sorted(paths):
        node = tree
        for key in path:
            if key.startswith(ITEM_PREFIX):
                node = node.setdefault(key, {})
                node.setdefault(".", {})
            else:
                node = node.setdefault(f"f:{key}", {})
    return tree


def paths_from_fields_v1(tree: dict[str, Any], prefix: Path = ()) -> set[Path]:
    paths: set[Path] = set()
    for key, child in tree.items():
        if key.startswith("f:"):
            path = (*prefix, key[2:])
        elif key.startswith(ITEM_PREFIX):
            path = (*prefix, key)
        else:
            continue
        below = {name: value for name, value in (child or {}).items() if name != "."}
        paths |= paths_from_fields_v1(below, path) if below else {path}
    return paths


def canonical(value: JSON) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))
