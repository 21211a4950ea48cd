"""Writes of clusters (platform admins, and the inventory and health tasks); each one audited."""

from __future__ import annotations

import json
import re
from contextlib import nullcontext
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from django.db import transaction
from django.utils import timezone

from portal.clusters.contracts import GPU_QUOTA_KINDS
from portal.clusters.models import (
    CLUSTER_NAME_PATTERN,
    DNS_LABEL_PATTERN,
    NAMESPACE_PREFIX_PATTERN,
    AcceleratorPool,
    Cluster,
)
from portal.core.audit import audit_record
from portal.core.encryption import encrypt_secret, reencrypt_secret
from portal.core.errors import Conflict, FieldProblem, ValidationFailed
from portal.core.inputs import InputSource, inputs_change

if TYPE_CHECKING:  # types only: another app's rows are read through its selectors
    from portal.tenancy.models import User

CLUSTER_FIELDS = (
    "display_name",
    "api_server",
    "region",
    "gateway_namespace",
    "gateway_name",
    "deployment_mode",
    "autoscaler_class",
    "namespace_prefix",
    "apply_gateway_bootstrap",
    "gateway_url",
    "runs_llmd",
    "gpu_quota",
)
POOL_FIELDS = ("gpu_product", "node_selector", "tolerations", "gpu_count", "gpu_memory_gb", "hourly_price_per_gpu")


def _snapshot(cluster: Cluster) -> dict[str, Any]:
    snapshot: dict[str, Any] = {name: getattr(cluster, name) for name in CLUSTER_FIELDS}
    snapshot["name"] = cluster.name
    snapshot["auth_kind"] = cluster.auth_kind
    return snapshot


def _pool_snapshot(pool: AcceleratorPool) -> dict[str, Any]:
    snapshot: dict[str, Any] = {name: getattr(pool, name) for name in POOL_FIELDS}
    snapshot["hourly_price_per_gpu"] = str(pool.hourly_price_per_gpu)
    snapshot["accelerator_type"] = pool.accelerator_type
    return snapshot


def _validate(values: dict[str, Any]) -> list[FieldProblem]:
    problems: list[FieldProblem] = []
    if "name" in values and not re.fullmatch(CLUSTER_NAME_PATTERN, values["name"] or ""):
        problems.append(FieldProblem("name", "must be a DNS-1123 label of at most 40 characters", "invalid_name"))
    if "api_server" in values:
        parsed = urlparse(values["api_server"] or "")
        if parsed.scheme not in ("https", "http") or not parsed.hostname:
            problems.append(
                FieldProblem("api_server", "must be an http(s) URL of the Kubernetes API server", "invalid")
            )
    for name in ("gateway_namespace", "gateway_name"):
        if name in values and not re.fullmatch(DNS_LABEL_PATTERN, values[name] or ""):
            problems.append(FieldProblem(name, "must be a DNS-1123 label", "invalid"))
    if "namespace_prefix" in values and not re.fullmatch(NAMESPACE_PREFIX_PATTERN, values["namespace_prefix"] or ""):
        problems.append(FieldProblem("namespace_prefix", "must be empty or start a DNS label (<= 22 chars)", "invalid"))
    mode = values.get("deployment_mode")
    autoscaler = values.get("autoscaler_class")
    if mode is not None and mode not in Cluster.DeploymentMode.values:
        problems.append(FieldProblem("deployment_mode", "must be Standard or Knative", "invalid_choice"))
    if autoscaler is not None and autoscaler not in Cluster.AutoscalerClass.values:
        problems.append(FieldProblem("autoscaler_class", "must be hpa, keda, external, none or kpa", "invalid_choice"))
    if mode == "Knative" and autoscaler not in (None, "kpa"):
        problems.append(FieldProblem("autoscaler_class", "Knative mode scales with Knative's KPA: use kpa", "invalid"))
    if mode == "Standard" and autoscaler == "kpa":
        problems.append(FieldProblem("autoscaler_class", "kpa is only for Knative mode", "invalid"))
    if "gpu_quota" in values and values["gpu_quota"] not in GPU_QUOTA_KINDS:
        problems.append(FieldProblem("gpu_quota", f"must be one of {', '.join(GPU_QUOTA_KINDS)}", "invalid_choice"))
    if "runs_llmd" in values and not isinstance(values["runs_llmd"], bool):
        problems.append(FieldProblem("runs_llmd", "must be true or false", "invalid"))
    if "region" in values and not str(values["region"]).strip():
        problems.append(FieldProblem("region", "must not be blank", "blank"))
    return problems


def _credentials_plaintext(auth_kind: str, kubeconfig: str | None, token: str | None, ca_bundle: str | None) -> str:
    if auth_kind == Cluster.AuthKind.KUBECONFIG:
        if not kubeconfig:
            raise ValidationFailed.for_field("kubeconfig", "is required with auth_kind kubeconfig", code="required")
        return kubeconfig
    if auth_kind == Cluster.AuthKind.TOKEN:
        if not token:
            raise ValidationFailed.for_field("token", "is required with auth_kind token", code="required")
        return json.dumps({"token": token, "ca_bundle": ca_bundle or None})
    raise ValidationFailed.for_field("auth_kind", "must be kubeconfig or token", code="invalid_choice")


@transaction.atomic
def cluster_register(
    *,
    actor: User | None,
    name: str,
    api_server: str,
    auth_kind: str,
    region: str,
    gateway_namespace: str,
    gateway_name: str,
    kubeconfig: str | None = None,
    token: str | None = None,
    ca_bundle: str | None = None,
    **options: Any,
) -> Cluster:
    unknown = sorted(set(options) - set(CLUSTER_FIELDS))
    if unknown:
        raise ValidationFailed([FieldProblem(field, "is not a cluster field", "unknown_field") for field in unknown])
    values = {
        "name": name,
        "api_server": api_server,
        "region": region,
        "gateway_namespace": gateway_namespace,
        "gateway_name": gateway_name,
        **options,
    }
    if values.get("deployment_mode") == "Knative":
        values.setdefault("autoscaler_class", "kpa")
    problems = _validate(values)
    if problems:
        raise ValidationFailed(problems)
    ciphertext = encrypt_secret(_credentials_plaintext(auth_kind, kubeconfig, token, ca_bundle))
    if Cluster.objects.filter(name=name).exists():
        raise Conflict(f"Cluster '{name}' already exists", code="cluster_exists")
    cluster = Cluster.objects.create(auth_kind=auth_kind, credentials_ciphertext=ciphertext, **values)
    audit_record(
        actor=actor,
        action="cluster.register",
        target_type="cluster",
        target_id=cluster.pk,
        target_label=cluster.name,
        after=_snapshot(cluster),
    )
    return cluster


@transaction.atomic
def cluster_update(
    *,
    actor: User | None,
    cluster: Cluster,
    changes: dict[str, Any],
    credentials: dict[str, str | None] | None = None,
) -> Cluster:
    """Change settings; `credentials` ({auth_kind, kubeconfig | token, ca_bundle}) replaces the stored ones."""
    unknown = sorted(set(changes) - set(CLUSTER_FIELDS))
    if unknown:
        raise ValidationFailed([FieldProblem(field, "cannot be changed", "read_only") for field in unknown])
    cluster = Cluster.objects.select_for_update().get(pk=cluster.pk)
    merged = {"deployment_mode": cluster.deployment_mode, "autoscaler_class": cluster.autoscaler_class, **changes}
    problems = _validate(merged if ("deployment_mode" in changes or "autoscaler_class" in changes) else changes)
    if problems:
        raise ValidationFailed(problems)
    # Turning runs_llmd off while llm-d deployments run there is refused by the deployments app's inputs watcher
    # (portal.core.inputs): it fails this write with 409 serving_mode_in_use.
    before = _snapshot(cluster)
    for field, value in changes.items():
        setattr(cluster, field, value)
    if credentials is not None:
        auth_kind = credentials.get("auth_kind") or cluster.auth_kind
        cluster.credentials_ciphertext = encrypt_secret(
            _credentials_plaintext(
                auth_kind, credentials.get("kubeconfig"), credentials.get("token"), credentials.get("ca_bundle")
            )
        )
        cluster.auth_kind = auth_kind
    after = _snapshot(cluster)
    changed = ", ".join(name for name in CLUSTER_FIELDS if before[name] != after[name])
    with (
        inputs_change(source=InputSource(cluster_id=cluster.pk), reason=f"cluster {cluster.name} changed: {changed}")
        if changed
        else nullcontext()
    ):
        cluster.save()
    if credentials is not None:
        after["credentials"] = "replaced"
    audit_record(
        actor=actor,
        action="cluster.update",
        target_type="cluster",
        target_id=cluster.pk,
        target_label=cluster.name,
        before=before,
        after=after,
    )
    return cluster


def cluster_credentials_reencrypt_all() -> int:
    """After adding a new first key to PORTAL_SECRET_KEYS: re-encrypt every cluster's credentials with it."""
    count = 0
    for cluster_id in Cluster.objects.values_list("pk", flat=True):
        with transaction.atomic():
            cluster = Cluster.objects.select_for_update().get(pk=cluster_id)
            cluster.credentials_ciphertext = reencrypt_secret(cluster.credentials_ciphertext)
            cluster.save(update_fields=["credentials_ciphertext", "updated_at"])
            count += 1
    return count


def _validate_pool(values: dict[str, Any]) -> list[FieldProblem]:
    problems: list[FieldProblem] = []
    if "accelerator_type" in values and not re.fullmatch(DNS_LABEL_PATTERN, values["accelerator_type"] or ""):
        problems.append(FieldProblem("accelerator_type", "must be a DNS-1123 label like nvidia-h100-80gb", "invalid"))
    selector = values.get("node_selector", {})
    if not isinstance(selector, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in selector.items()
    ):
        problems.append(FieldProblem("node_selector", "must map label names to string values", "invalid"))
    tolerations = values.get("tolerations", [])
    if not isinstance(tolerations, list) or not all(isinstance(item, dict) for item in tolerations):
        problems.append(FieldProblem("tolerations", "must be a list of Kubernetes tolerations", "invalid"))
    price = values.get("hourly_price_per_gpu", Decimal("0"))
    if not isinstance(price, Decimal) or not price.is_finite() or price < 0:
        problems.append(FieldProblem("hourly_price_per_gpu", "must be a non-negative amount", "invalid"))
    return problems


@transaction.atomic
def accelerator_pool_upsert(
    *, actor: User | None, cluster: Cluster, accelerator_type: str, values: dict[str, Any]
) -> AcceleratorPool:
    unknown = sorted(set(values) - set(POOL_FIELDS))
    if unknown:
        raise ValidationFailed([FieldProblem(field, "is not a pool field", "unknown_field") for field in unknown])
    problems = _validate_pool({"accelerator_type": accelerator_type, **values})
    if problems:
        raise ValidationFailed(problems)
    pool = (
        AcceleratorPool.objects.select_for_update().filter(cluster=cluster, accelerator_type=accelerator_type).first()
    )
    before = _pool_snapshot(pool) if pool is not None else None
    if pool is None:
        if "gpu_product" not in values or "gpu_memory_gb" not in values:
            raise ValidationFailed.for_field(
                "gpu_product", "a new pool needs gpu_product and gpu_memory_gb", code="required"
            )
        pool = AcceleratorPool(cluster=cluster, accelerator_type=accelerator_type)
    for field, value in values.items():
        setattr(pool, field, value)
    if not pool.node_selector:
        pool.node_selector = {"nvidia.com/gpu.product": pool.gpu_product}
    after = _pool_snapshot(pool)
    changed = ", ".join(name for name in after if before is not None and before[name] != after[name])
    with (
        inputs_change(
            source=InputSource(cluster_id=cluster.pk, accelerator_type=accelerator_type),
            reason=f"accelerator pool {accelerator_type} on {cluster.name} changed: {changed}",
        )
        if changed
        else nullcontext()
    ):
        pool.save()
    if after != before:
        audit_record(
            actor=actor,
            action="accelerator_pool.upsert",
            target_type="accelerator_pool",
            target_id=pool.pk,
            target_label=str(pool),
            before=before,
            after=after,
        )
    return pool


@transaction.atomic
def cluster_health_record(*, cluster_id: int, healthy: bool, message: str, version: str, checked_at: datetime) -> None:
    """Written by the connectivity check; only a change of health is audited."""
    cluster = Cluster.objects.select_for_update().filter(pk=cluster_id).first()
    if cluster is None:
        return
    health = Cluster.Health.HEALTHY if healthy else Cluster.Health.UNREACHABLE
    changed = cluster.health != health
    cluster.health = health
    cluster.health_message = message[:500]
    if version:
        cluster.kubernetes_version = version
    cluster.last_checked_at = checked_at
    cluster.save(update_fields=["health", "health_message", "kubernetes_version", "last_checked_at", "updated_at"])
    if changed:
        audit_record(
            actor=None,
            action="cluster.health",
            target_type="cluster",
            target_id=cluster.pk,
            target_label=cluster.name,
            after={"health": health, "message": message[:500]},
        )


@transaction.atomic
def cluster_inventory_record(*, cluster_id: int, gpus_by_product: dict[str, int]) -> None:
    """Written by the inventory task: allocatable GPUs per node product, matched to pools by product."""
    now = timezone.now()
    for pool in AcceleratorPool.objects.select_for_update().filter(cluster_id=cluster_id):
        count = gpus_by_product.get(pool.gpu_product, 0)
        if pool.gpu_count != count:
            audit_record(
                actor=None,
                action="accelerator_pool.inventory",
                target_type="accelerator_pool",
                target_id=pool.pk,
                target_label=str(pool),
                before={"gpu_count": pool.gpu_count},
                after={"gpu_count": count},
            )
        pool.gpu_count = count
        pool.inventory_synced_at = now
        pool.save(update_fields=["gpu_count", "inventory_synced_at", "updated_at"])
