"""Deployment tasks: reconcile one deployment by id, and the periodic resync that is the outbox's reader."""

from __future__ import annotations

import logging

from celery import shared_task

from portal.deployments import selectors as deployment_selectors
from workers.kube.errors import RetryableClusterError
from workers.provisioning.reconciler import DeploymentBusy, reconcile_deployment

logger = logging.getLogger(__name__)


@shared_task(
    name="deployments.reconcile",
    acks_late=True,
    autoretry_for=(RetryableClusterError, DeploymentBusy),
    retry_backoff=2,
    retry_backoff_max=300,
    retry_jitter=True,
    max_retries=12,
)
def reconcile(deployment_id: int) -> str:
    """Converge one deployment; safe to run twice and in any order (level-triggered)."""
    result = reconcile_deployment(deployment_id)
    logger.info(
        "reconciled deployment %s: %s (%s writes, %s)", deployment_id, result.outcome, result.writes, result.phase
    )
    return result.outcome


@shared_task(name="deployments.resync", acks_late=True)
def resync(include_ready: bool = False) -> int:
    """Re-enqueue every deployment whose spec is ahead of what was observed or that is not Ready;
    with include_ready, everything (drift repair). A lost message costs latency, never correctness."""
    ids = deployment_selectors.deployment_ids_needing_reconcile(include_ready=include_ready)
    for deployment_id in ids:
        reconcile.delay(deployment_id)
    return len(ids)
