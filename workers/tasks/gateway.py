"""Gateway tasks: reconcile one cluster's gateway policy by id, and the periodic resync that finds policies
whose generation is ahead or whose desired content no longer matches what was applied."""

from __future__ import annotations

import logging

from celery import shared_task

from portal.gateway import selectors as gateway_selectors
from portal.gateway import services as gateway_services
from workers.kube.errors import RetryableClusterError
from workers.provisioning.gateway import GatewayPolicyBusy, desired_fingerprint, reconcile_gateway_policy

logger = logging.getLogger(__name__)


@shared_task(
    name="gateway.reconcile",
    acks_late=True,
    autoretry_for=(RetryableClusterError, GatewayPolicyBusy),
    retry_backoff=2,
    retry_backoff_max=300,
    retry_jitter=True,
    max_retries=12,
)
def reconcile(policy_id: int) -> str:
    """Converge one cluster's gateway policy; safe to run twice and in any order (level-triggered)."""
    result = reconcile_gateway_policy(policy_id)
    logger.info("reconciled gateway policy %s: %s (%s writes)", policy_id, result.outcome, result.writes)
    return result.outcome


def policies_needing_reconcile() -> list[int]:
    """Policies whose generation is ahead of what was observed, and those whose desired fingerprint differs
    from the one applied (quota edits, suspension, expired keys, catalog changes made elsewhere); the latter
    get their generation bumped here, so the pending change shows as observed_generation < generation."""
    gateway_services.gateway_policies_ensure()
    behind = set(gateway_selectors.gateway_policy_ids(behind_only=True))
    applied = gateway_selectors.gateway_policy_fingerprints()
    drifted = {
        policy_id
        for policy_id, fingerprint in applied.items()
        if policy_id not in behind and desired_fingerprint(policy_id) != fingerprint
    }
    if drifted:
        gateway_services.gateway_policies_bump_drifted(policy_ids=drifted)
    return sorted(behind | drifted)


@shared_task(name="gateway.resync", acks_late=True)
def resync() -> int:
    """Re-enqueue every policy that needs work; a lost message costs latency, never correctness."""
    ids = policies_needing_reconcile()
    for policy_id in ids:
        reconcile.delay(policy_id)
    return len(ids)
