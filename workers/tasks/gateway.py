"""Gateway tasks: reconcile one cluster's gateway policy by id, and the periodic resync that finds policies
whose generation is ahead or whose desired content no longer matches what was applied."""

from __future__ import annotations

import logging

from celery import Task, shared_task

from workers.kube.errors import RetryableClusterError
from workers.metrics import reconcile_observed
from workers.provisioning.gateway import GatewayPolicyBusy, policies_needing_reconcile, reconcile_gateway_policy
from workers.tasks import pending

logger = logging.getLogger(__name__)


@shared_task(
    bind=True,
    name="gateway.reconcile",
    acks_late=True,
    autoretry_for=(RetryableClusterError, GatewayPolicyBusy),
    retry_backoff=2,
    retry_backoff_max=pending.RETRY_BACKOFF_MAX,
    retry_jitter=True,
    max_retries=12,
)
def reconcile(self: Task[[int], str], policy_id: int) -> str:
    """Converge one cluster's gateway policy; safe to run twice and in any order (level-triggered). A busy lock or
    an unreachable cluster is retried (one INFO line each), and logged as one WARNING line after the last retry."""
    with (
        pending.settled(self, policy_id),
        reconcile_observed("gateway_policy", retried=(RetryableClusterError, GatewayPolicyBusy)) as outcome,
    ):
        try:
            result = reconcile_gateway_policy(policy_id)
        except (RetryableClusterError, GatewayPolicyBusy) as error:
            # Re-raised while retries remain (the task's autoretry); the last time, it is given up.
            outcome(pending.give_up_or_retry(self, error, subject=f"gateway policy {policy_id}"))
            return "gave_up"
        outcome(result.outcome)
    logger.info("reconciled gateway policy %s: %s (%s writes)", policy_id, result.outcome, result.writes)
    return result.outcome


@shared_task(name="gateway.resync", acks_late=True)
def resync() -> int:
    """Re-enqueue every policy that needs work; a lost message costs latency, never correctness."""
    return sum(pending.enqueue_once(reconcile, policy_id) for policy_id in policies_needing_reconcile())
