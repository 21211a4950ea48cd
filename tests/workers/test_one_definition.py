"""One definition of each constant the builders share: API versions, token costs, headers, owned kinds.

Builders live in workers/provisioning/manifests/ and what they share of the upstream APIs in its upstream.py. These
checks read the source (no import, no database): a second module assigning a module-level constant of the same name,
or spelling one of upstream.py's values as a literal, is a second definition that can drift from the first.
The sandbox is left out on purpose: it plays the upstream APIs and must know nothing of the portal."""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
UPSTREAM = ROOT / "workers/provisioning/manifests/upstream.py"
CONSTANT = re.compile(r"[A-Z][A-Z0-9_]+")


# The Kubernetes client's table of kinds (group/version, plural, scope: how the API server is addressed) sits in
# workers.kube, below the builders in the layers, so it cannot import them; it spells each version beside its kind.
# The reconcilers' tests apply every kind the builders make through it, so the two cannot drift apart silently.
CLIENT_TABLE = ROOT / "workers/kube/resources.py"
# The values whose second spelling would be a second definition: what a change of upstream version or gateway
# contract must change in one place.
SHARED = re.compile(r".+_API_VERSION|.+_HEADER|METADATA_NAMESPACE")


def _sources(*packages: str) -> list[Path]:
    return sorted(
        path
        for package in packages
        for path in (ROOT / package).rglob("*.py")
        if "migrations" not in path.parts and "sandbox" not in path.parts and path != CLIENT_TABLE
    )


def _module_constants(path: Path) -> dict[str, ast.expr]:
    constants: dict[str, ast.expr] = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            continue
        for target in targets:
            if isinstance(target, ast.Name) and CONSTANT.fullmatch(target.id):
                constants[target.id] = value
    return constants


def test_no_constant_of_the_workers_is_defined_in_two_modules() -> None:
    where: dict[str, list[str]] = defaultdict(list)
    for path in _sources("workers"):
        for name in _module_constants(path):
            where[name].append(str(path.relative_to(ROOT)))
    assert {name: paths for name, paths in where.items() if len(paths) > 1} == {}


def test_the_shared_upstream_values_are_spelt_only_in_upstream_py() -> None:
    values = {
        value.value: name
        for name, value in _module_constants(UPSTREAM).items()
        if SHARED.fullmatch(name) and isinstance(value, ast.Constant) and isinstance(value.value, str)
    }
    # The token-cost types too: a second list of them is a second TOKEN_COSTS. (Their metadata keys are also the
    # names the access log reads, so those may be spelt where the log format is built.)
    for _key, kind in ast.literal_eval(_module_constants(UPSTREAM)["TOKEN_COSTS"]):
        values[kind] = "TOKEN_COSTS"
    assert {"gateway.envoyproxy.io/v1alpha1", "x-portal-client-id", "OutputToken"} <= set(values)
    elsewhere = sorted(
        (str(path.relative_to(ROOT)), node.lineno, values[node.value])
        for path in _sources("portal", "catalog", "workers")
        if path != UPSTREAM
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in values
    )
    assert elsewhere == []
