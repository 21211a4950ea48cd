"""Deployment tasks: reconcile one deployment by id, and the periodic resync that is the outbox's reader."""

from __future__ import annotations

import logging

from celery import Task, shared_task

from portal.clusters import selectors as cluster_selectors
from portal.deployments import selectors as deployment_selectors
from portal.deployments import services as deployment_services
from workers.kube.errors import ClusterError, RetryableClusterError
from workers.metrics import reconcile_observed
from workers.provisioning.reconciler import (
    DeploymentBusy,
    reconcile_cluster_quota,
    reconcile_deployment,
    resync_cluster,
    resync_cluster_quota,
)
from workers.tasks import pending

logger = logging.getLogger(__name__)


@shared_task(
    bind=True,
    name="deployments.reconcile",
    acks_late=True,
    autoretry_for=(RetryableClusterError, DeploymentBusy),
    retry_backoff=2,
    retry_backoff_max=pending.RETRY_BACKOFF_MAX,
    retry_jitter=True,
    max_retries=12,
)
def reconcile(self: Task[[int], str], deployment_id: int) -> str:
    """Converge one deployment; safe to run twice and in any order (level-triggered). An unreachable cluster or a
    busy lock is retried (Celery logs one INFO line per retry); after the last retry one WARNING line, no
    traceback, and the periodic resync sends it again."""
    with (
        pending.settled(self, deployment_id),
        reconcile_observed("deployment", retried=(RetryableClusterError, DeploymentBusy)) as outcome,
    ):
        try:
            result = reconcile_deployment(deployment_id)
        except (RetryableClusterError, DeploymentBusy) as error:
            # Re-raised while retries remain (the task's autoretry); the last time, it is given up.
            outcome(pending.give_up_or_retry(self, error, subject=f"deployment {deployment_id}"))
            return "gave_up"
        outcome(result.outcome)
    logger.info(
        "reconciled deployment %s: %s (%s writes, %s)", deployment_id, result.outcome, result.writes, result.phase
    )
    return result.outcome


@shared_task(name="deployments.team_gpu_quota_changed", acks_late=True)
def team_gpu_quota_changed(team_id: int) -> int:
    """A team's GPU quota changed (tenancy names this task): its deployments are marked dirty, so each reconcile
    re-applies the namespace's ResourceQuota promptly instead of at the next drift sweep. Returns how many."""
    bumped = deployment_services.deployments_inputs_changed(
        deployment_ids=deployment_selectors.deployment_ids_built_from(team_id=team_id), reason="team GPU quota changed"
    )
    # Kueue clusters hold a ClusterQueue per team whether or not it deploys there (its idle GPUs are lent).
    for cluster_id in cluster_selectors.kueue_cluster_ids():
        try:
            reconcile_cluster_quota(cluster_id)
        except ClusterError as error:  # the cluster's next resync converges its queues
            logger.warning("GPU queues of cluster %s not converged: %s", cluster_id, error)
    return len(bumped)


@shared_task(name="deployments.team_key_routes_changed", acks_late=True)
def team_key_routes_changed(
    team_id: int, model_slugs: list[str], other_models_except: list[str] | None, reason: str
) -> int:
    """A change of the team's keys altered what its deployment routes admit (the gateway names this task): the
    team's deployments of `model_slugs` (and, when `other_models_except` is a list, of every model but those) are
    marked dirty, so each reconcile puts the new key list on its route. Returns how many."""
    deployment_ids = deployment_selectors.deployment_ids_of_team_models(team_id=team_id, model_slugs=model_slugs)
    if other_models_except is not None:
        deployment_ids += deployment_selectors.deployment_ids_of_team_models(
            team_id=team_id, excluding_model_slugs=other_models_except
        )
    bumped = deployment_services.deployments_inputs_changed(deployment_ids=sorted(set(deployment_ids)), reason=reason)
    return len(bumped)


@shared_task(name="deployments.resync", acks_late=True)
def resync(include_ready: bool = False) -> int:
    """The outbox's reader. Deployments whose spec is ahead of what was observed, or being deleted, are enqueued;
    the rest that are not Ready (with include_ready: all of them, to repair drift) are compared with one snapshot
    of their cluster: in sync, their status is recorded; drifted, they are enqueued. Every other cluster gets one
    list of the portal's Kueue Cohort, so queues left on a cluster that left Kueue (with or without deployments)
    are pruned (resync_cluster_quota). A lost message costs
    latency, never correctness, and unchanged deployments cost a few list requests per cluster, no writes.
    Returns how many were enqueued: one pending message per deployment at most (workers/tasks/pending.py)."""
    direct, by_cluster = deployment_selectors.deployment_resync_plan(include_ready=include_ready)
    enqueue = list(direct)
    for cluster_id, ids in by_cluster.items():
        try:
            enqueue.extend(resync_cluster(cluster_id, ids).stale)
        except ClusterError as error:  # unreachable or refusing: each deployment's own reconcile retries and reports
            logger.warning("resync of cluster %s fell back to per-deployment reconciles: %s", cluster_id, error)
            enqueue.extend(ids)
    for cluster_id in cluster_selectors.cluster_ids():
        if cluster_id in by_cluster:
            continue  # its snapshot above looked for Kueue leftovers already
        try:
            resync_cluster_quota(cluster_id)
        except ClusterError as error:  # the next resync looks again
            logger.warning("resync of cluster %s could not look for Kueue leftovers: %s", cluster_id, error)
    return sum(pending.enqueue_once(reconcile, deployment_id) for deployment_id in enqueue)
