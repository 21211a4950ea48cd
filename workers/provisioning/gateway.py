"""The gateway-policy reconciler: one cluster's aggregate gateway policy, level-triggered, keyed by policy id.

One pass: take the policy's lock, load the frozen spec (every team's keys, limits and blocks, provider backends,
managed models), render the whole policy (pure), apply only objects whose content hash changed (server-side
apply, field manager genai-portal), prune owned objects no longer desired (by labels), and record generation,
fingerprint and what was applied (secrets redacted). An unchanged policy costs reads, never writes.

Quota changes and team suspension happen in tenancy, which knows nothing of the gateway: the periodic resync
renders every policy and compares its fingerprint with the one last applied, so those changes (and key expiry,
and catalog changes) converge within one resync without any app having to call the gateway.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import redis
from django.conf import settings
from django.utils import timezone

from portal.clusters import selectors as cluster_selectors
from portal.gateway import conf as gateway_conf
from portal.gateway import selectors as gateway_selectors
from portal.gateway import services as gateway_services
from portal.gateway.contracts import GatewayPolicySpec
from workers.kube.client import Cluster, connect
from workers.kube.errors import TerminalClusterError
from workers.provisioning.manifests.gateway import (
    AIGW_API_VERSION,
    EG_API_VERSION,
    GatewayPolicyTooLarge,
    build_gateway_policy_objects,
    policy_selector,
)
from workers.provisioning.reconciler import converge, prune, redacted, with_hash

logger = logging.getLogger(__name__)

LOCK_SECONDS = 300
# Kinds the gateway policy can own, all in the cluster's gateway namespace.
OWNED_KINDS = (
    ("v1", "Secret"),
    (EG_API_VERSION, "SecurityPolicy"),
    (EG_API_VERSION, "BackendTrafficPolicy"),
    (EG_API_VERSION, "Backend"),
    (AIGW_API_VERSION, "AIServiceBackend"),
    (AIGW_API_VERSION, "BackendSecurityPolicy"),
    (AIGW_API_VERSION, "AIGatewayRoute"),
)


class GatewayPolicyBusy(Exception):
    """Another worker holds this policy's lock; the task retries shortly."""


@dataclass(frozen=True)
class GatewayReconcileResult:
    policy_id: int
    outcome: str  # "applied", "unchanged", "failed", "gone"
    writes: int
    message: str = ""


@contextmanager
def policy_lock(policy_id: int) -> Iterator[None]:
    lock = redis.Redis.from_url(settings.RESOLVED_REDIS_URL).lock(
        f"portal:lock:gateway-policy:{policy_id}", timeout=LOCK_SECONDS, blocking=False
    )
    if not lock.acquire(blocking=False):
        raise GatewayPolicyBusy(f"gateway policy {policy_id} is being reconciled elsewhere")
    try:
        yield
    finally:
        try:
            lock.release()
        except redis.exceptions.LockError:
            logger.warning("lock of gateway policy %s expired before release", policy_id)


def render(spec: GatewayPolicySpec) -> list[dict[str, Any]]:
    return build_gateway_policy_objects(spec, collector=gateway_conf.otel_collector())


def fingerprint(manifests: list[dict[str, Any]]) -> str:
    """A digest of the whole desired policy (keys included, so a changed key changes it; not reversible)."""
    return hashlib.sha256(json.dumps(manifests, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def desired_fingerprint(policy_id: int) -> str | None:
    """The fingerprint of what the policy should be now; None when it cannot be rendered or is gone."""
    spec = gateway_selectors.gateway_policy_spec(policy_id=policy_id)
    if spec is None:
        return None
    try:
        return fingerprint(render(spec))
    except GatewayPolicyTooLarge:
        return None


def _owned(cluster: Cluster, spec: GatewayPolicySpec) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for api_version, kind in OWNED_KINDS:
        found.extend(
            cluster.list(api_version, kind, label_selector=policy_selector(), namespace=spec.cluster.gateway_namespace)
        )
    return found


def _record(
    spec: GatewayPolicySpec, digest: str, phase: str, message: str, applied: list[dict[str, Any]] | None
) -> None:
    gateway_services.gateway_policy_status_record(
        policy_id=spec.policy_id,
        generation=spec.generation,
        fingerprint=digest,
        phase=phase,
        message=message,
        reconciled_at=timezone.now(),
        applied_manifests=applied,
    )


def reconcile_gateway_policy(policy_id: int) -> GatewayReconcileResult:
    with policy_lock(policy_id):
        spec = gateway_selectors.gateway_policy_spec(policy_id=policy_id)
        if spec is None:
            return GatewayReconcileResult(policy_id, "gone", 0)
        try:
            desired = render(spec)
        except GatewayPolicyTooLarge as error:
            # Nothing is applied: a truncated policy would silently drop teams, keys or limits.
            _record(spec, "", "Failed", f"the gateway policy breaks an upstream limit: {error}", None)
            return GatewayReconcileResult(policy_id, "failed", 0, str(error))
        digest = fingerprint(desired)
        cluster = connect(cluster_selectors.cluster_connection(cluster_id=spec.cluster.cluster_id))
        try:
            writes, _ = converge(cluster, desired)
            writes += prune(cluster, _owned(cluster, spec), desired)
        except TerminalClusterError as error:
            _record(spec, "", "Failed", f"the cluster refused the gateway policy: {error.message}", None)
            return GatewayReconcileResult(policy_id, "failed", 0, error.message)
        _record(spec, digest, "Ready", "", redacted([with_hash(item) for item in desired]))
        return GatewayReconcileResult(policy_id, "applied" if writes else "unchanged", writes)
