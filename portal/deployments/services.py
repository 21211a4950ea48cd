"""Writes of deployments: create (placement and GPU quota admission), update, delete, and status records."""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from celery import current_app
from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from catalog import selectors as catalog_selectors
from catalog import sizing
from portal.clusters import selectors as cluster_selectors
from portal.clusters.contracts import KUEUE
from portal.core.audit import audit_record
from portal.core.errors import Conflict, FieldProblem, ValidationFailed
from portal.core.inputs import InputSource
from portal.deployments.contracts import LLMD_MODE, SERVING_MODES, STANDARD_MODE, ObservedStatus
from portal.deployments.gpu_accounting import gpus_for, prefill_gpus_each
from portal.deployments.models import (
    DEPLOYMENT_NAME_PATTERN,
    Deployment,
    DeploymentEvent,
    Phase,
    ReplicaObservation,
    ServedName,
)
from portal.deployments.names import deployment_gateway_name
from portal.deployments.selectors import (
    deployment_ids_built_from,
    deployment_ids_in_a_mode_no_longer_allowed,
    deployment_input_fingerprints,
    gpus_allocated_by_cluster_and_type,
    team_gpus_held_by_switches,
    team_gpus_in_use,
)
from portal.tenancy import selectors as tenancy_selectors

if TYPE_CHECKING:  # types only: another app's rows are read through its selectors
    from catalog.models import ModelVersion
    from portal.clusters.models import AcceleratorPool
    from portal.tenancy.models import Team, TeamQuota, User

logger = logging.getLogger(__name__)

RECONCILE_TASK = "deployments.reconcile"
# Runtime flags a team may set on its deployment (vLLM engine flags through the KServe Hugging Face server);
# anything else (model id, model dir, trust_remote_code, ports) stays under the catalog's control.
ALLOWED_RUNTIME_FLAGS = frozenset(
    {
        "max_model_len",
        "max_num_seqs",
        "gpu_memory_utilization",
        "dtype",
        "enable_prefix_caching",
        "max_num_batched_tokens",
        "enable_chunked_prefill",
        "kv_cache_dtype",
        "swap_space",
        "seed",
    }
)


class QuotaExceeded(Conflict):
    code = "gpu_quota_exceeded"
    title = "GPU quota exceeded"


class NoCapacity(Conflict):
    code = "no_capacity"
    title = "No room on the cluster"


class DoesNotFit(Conflict):
    code = "model_does_not_fit"
    title = "The model does not fit"


@dataclass(frozen=True)
class _Sizing:
    """How a version with a known architecture is sized on deploy: one sequence of the serving context must fit."""

    version: ModelVersion
    architecture: sizing.Architecture
    context: int
    kv_cache_dtype: str
    engine: sizing.EngineSettings
    team_args: tuple[str, ...]

    def smallest(self, pool: AcceleratorPool) -> sizing.Fit | None:
        return sizing.smallest_fit(
            self.architecture,
            gpu_memory_gb=pool.gpu_memory_gb,
            max_gpus=pool.gpu_count or sizing.TENSOR_PARALLEL_SIZES[-1],
            context=self.context,
            kv_cache_dtype=self.kv_cache_dtype,
            engine=self.engine,
        )

    def at(self, pool: AcceleratorPool, gpus: int) -> sizing.Fit:
        return sizing.fit(
            self.architecture,
            gpu_memory_gb=pool.gpu_memory_gb,
            tensor_parallel_size=gpus,
            context=self.context,
            kv_cache_dtype=self.kv_cache_dtype,
            engine=self.engine,
        )

    def largest_attempt(self, pool: AcceleratorPool) -> sizing.Fit:
        """The most GPUs of the pool the model can be split over: the attempt that comes closest."""
        most = pool.gpu_count or sizing.TENSOR_PARALLEL_SIZES[-1]
        sizes = [size for size in sizing.TENSOR_PARALLEL_SIZES if size <= most] or [1]
        valid = [size for size in sizes if sizing.tensor_parallel_problem(self.architecture, size) is None] or [1]
        return self.at(pool, valid[-1])


def _sizing_for(version: ModelVersion, team_args: list[str]) -> _Sizing | None:
    architecture = catalog_selectors.version_architecture(version)
    if architecture is None:
        return None
    context, kv_cache_dtype = sizing.serving_choices(
        architecture, catalog_args=tuple(version.runtime_args), team_args=tuple(team_args)
    )
    engine = catalog_selectors.sizing_engine()
    utilization = sizing.flag_value(team_args, "gpu_memory_utilization")
    try:
        percent = round(float(utilization) * 100) if utilization is not None else None
    except ValueError:
        percent = None
    if percent is not None and 1 <= percent <= 100:
        engine = sizing.EngineSettings(
            gpu_memory_utilization_percent=percent,
            overhead_bytes=engine.overhead_bytes,
            block_tokens=engine.block_tokens,
        )
    return _Sizing(
        version=version,
        architecture=architecture,
        context=context,
        kv_cache_dtype=kv_cache_dtype,
        engine=engine,
        team_args=tuple(team_args),
    )


def _does_not_fit(
    *,
    plan: _Sizing,
    attempts: list[tuple[AcceleratorPool, sizing.Fit]],
    team: Team,
    actor: User,
    platform_admin: bool,
    replicas: int,
    advice: str = "",
) -> DoesNotFit:
    """The refusal: what the model needs, the closest attempt and its shortfall, and the cheapest placement that
    fits among the pools the team may use."""
    pool, closest = max(attempts, key=lambda item: (item[1].margin_bytes_per_gpu, -item[0].pk))
    weights = sizing.weight_bytes(plan.architecture)
    kv = sizing.kv_bytes(
        plan.architecture,
        context=plan.context,
        kv_cache_dtype=plan.kv_cache_dtype,
        block_tokens=plan.engine.block_tokens,
    )
    shortfall = -closest.margin_bytes_per_gpu
    gpus = closest.tensor_parallel_size
    detail = (
        f"{plan.version} needs {sizing.describe_bytes(weights)} of weights ({plan.architecture.weight_dtype}) and "
        f"{sizing.describe_bytes(kv)} of KV cache for {plan.context:,} tokens ({plan.kv_cache_dtype}); "
        f"{gpus} x {pool.accelerator_type} ({pool.gpu_memory_gb} GB, "
        f"{sizing.describe_bytes(closest.usable_bytes_per_gpu)} usable each) on {pool.cluster.name} cannot hold it"
    )
    problem = sizing.tensor_parallel_problem(plan.architecture, gpus)
    detail += f": {problem}." if problem else f": short by {sizing.describe_bytes(shortfall)} per GPU."
    suggestion = None
    cheapest = catalog_selectors.version_plan(
        version=plan.version,
        user=actor,
        platform_admin=platform_admin,
        team=team,
        context=plan.context,
        kv_cache_dtype=plan.kv_cache_dtype,
        replicas=max(replicas, 1),
        team_args=plan.team_args,
    ).placements
    if cheapest:
        best = cheapest[0]
        suggestion = {
            "cluster": best.cluster,
            "accelerator_type": best.accelerator_type,
            "gpus_per_replica": best.gpus_per_replica,
            "tensor_parallel_size": best.tensor_parallel_size,
            "monthly_cost": str(best.monthly_cost),
            "currency": settings.PORTAL_CURRENCY,
        }
        detail += (
            f" Cheapest placement that fits: {best.gpus_per_replica} x {best.accelerator_type} on {best.cluster} "
            f"(tensor parallel {best.tensor_parallel_size}), {best.monthly_cost} {settings.PORTAL_CURRENCY} a month"
            f"{advice}."
        )
    else:
        detail += f" No pool team '{team.slug}' may use can hold it at this context; try a shorter --max_model_len."
    return DoesNotFit(
        detail,
        extra={
            "weight_bytes": weights,
            "kv_cache_bytes": kv,
            "context_length": plan.context,
            "kv_cache_dtype": plan.kv_cache_dtype,
            "cluster": pool.cluster.name,
            "accelerator_type": pool.accelerator_type,
            "gpus_per_replica": gpus,
            "usable_bytes_per_gpu": closest.usable_bytes_per_gpu,
            "needed_bytes_per_gpu": closest.needed_bytes_per_gpu,
            "shortfall_bytes_per_gpu": shortfall,
            "suggestion": suggestion,
        },
    )


@dataclass
class DeploymentResult:
    deployment: Deployment
    warnings: list[str] = field(default_factory=list)


def _nudge(deployment_id: int) -> None:
    """After commit, wake the reconciler; if the broker is down the periodic resync picks the row up."""

    def send() -> None:
        try:
            current_app.send_task(RECONCILE_TASK, args=[deployment_id])
        except Exception as error:  # the row is the outbox: a lost message costs latency, never correctness
            # An expected condition (the broker is down): one line, no traceback; the resync picks the row up.
            logger.warning("could not enqueue %s for deployment %s: %s", RECONCILE_TASK, deployment_id, error)

    transaction.on_commit(send)


# ---------------------------------------------------------------------------------------------- inputs


@contextmanager
def deployment_inputs_watch(*, deployment_ids: Iterable[int], reason: str) -> Iterator[None]:
    """Around a change of something deployments are built from (a catalog version, the team's gateway keys, an
    accelerator pool), inside the transaction that makes it: the deployments among `deployment_ids` whose inputs
    fingerprint differs afterwards are marked dirty (deployments_inputs_changed). Desired state never changes behind
    the reconciler's back: the change shows as observed_generation < generation until a reconcile applies it."""
    ids = list(deployment_ids)
    before = deployment_input_fingerprints(deployment_ids=ids) if ids else {}
    yield
    if not before:
        return
    after = deployment_input_fingerprints(deployment_ids=list(before))
    changed = [deployment_id for deployment_id, digest in before.items() if after.get(deployment_id, digest) != digest]
    deployments_inputs_changed(deployment_ids=changed, reason=reason)


def deployment_inputs_watch_source(source: InputSource, reason: str) -> AbstractContextManager[None]:
    """The deployments' watcher of portal.core.inputs (registered in apps.py): a change of a catalog version,
    cluster or pool is watched on the deployments built from it."""
    if source == InputSource():
        return deployment_inputs_watch(deployment_ids=[], reason=reason)  # nothing named: no deployment concerned
    deployment_ids = deployment_ids_built_from(
        model_version_id=source.model_version_id, cluster_id=source.cluster_id, accelerator_type=source.accelerator_type
    )
    return _inputs_watch_keeping_modes(deployment_ids=deployment_ids, reason=reason)


@contextmanager
def _inputs_watch_keeping_modes(*, deployment_ids: list[int], reason: str) -> Iterator[None]:
    """deployment_inputs_watch, and the change is refused (its transaction with it) when it takes away the serving
    mode a live deployment uses: a cluster that stops running llm-d, a catalog version that stops offering it."""
    with deployment_inputs_watch(deployment_ids=deployment_ids, reason=reason):
        yield
        stranded = deployment_ids_in_a_mode_no_longer_allowed(deployment_ids=deployment_ids)
        if stranded:
            raise Conflict(
                f"{len(stranded)} deployment(s) serve in the {LLMD_MODE} mode this change takes away: switch them to "
                f"{STANDARD_MODE} or delete them first",
                code="serving_mode_in_use",
                extra={"deployments": len(stranded)},
            )


def deployments_inputs_changed(*, deployment_ids: Iterable[int], reason: str) -> list[int]:
    """Something these deployments are built from changed: each (unless being deleted) gets its generation bumped,
    an `InputsChanged` event saying what changed, and a reconcile nudged on commit. The one notion of dirty that both
    reconcilers share: generation ahead of observed_generation (the gateway bumps its policies the same way).
    Returns the ids bumped."""
    bumped: list[int] = []
    with transaction.atomic():
        rows = (
            Deployment.objects.select_for_update()
            .filter(pk__in=list(deployment_ids))
            .exclude(phase=Phase.DELETING)
            .order_by("pk")
        )
        for deployment in rows:
            deployment.generation = F("generation") + 1
            deployment.save(update_fields=["generation", "updated_at"])
            deployment.refresh_from_db(fields=["generation"])
            _event(deployment, "InputsChanged", reason)
            _nudge(deployment.pk)
            bumped.append(deployment.pk)
    return bumped


def _flag_name(argument: str) -> str:
    return argument.removeprefix("--").split("=", 1)[0].replace("-", "_")


def _validate_runtime_args(arguments: list[str]) -> list[FieldProblem]:
    problems = []
    for index, argument in enumerate(arguments):
        if (
            not isinstance(argument, str)
            or not argument.startswith("--")
            or _flag_name(argument) not in ALLOWED_RUNTIME_FLAGS
        ):
            allowed = ", ".join(f"--{name}" for name in sorted(ALLOWED_RUNTIME_FLAGS))
            problems.append(
                FieldProblem(f"runtime_args[{index}]", f"only these flags may be overridden: {allowed}", "not_allowed")
            )
    return problems


def _snapshot(deployment: Deployment) -> dict[str, Any]:
    return {
        "name": deployment.name,
        "model_version": str(deployment.model_version),
        "cluster": deployment.cluster.name,
        "accelerator_type": deployment.accelerator_type,
        "served_model_name": deployment.served_model_name,
        "min_replicas": deployment.min_replicas,
        "max_replicas": deployment.max_replicas,
        "scale_to_zero": deployment.scale_to_zero,
        "gpus_per_replica": deployment.gpus_per_replica,
        "runtime_args": list(deployment.runtime_args),
        "model_cache": deployment.model_cache,
        "serving_mode": deployment.serving_mode,
        "prefill_replicas": deployment.prefill_replicas,
        "prefill_gpus_per_replica": deployment.prefill_gpus_per_replica,
        "generation": deployment.generation,
        "phase": deployment.phase,
    }


def _event(deployment: Deployment, reason: str, message: str = "") -> None:
    DeploymentEvent.objects.create(
        deployment=deployment,
        phase=deployment.phase,
        reason=reason,
        message=message[:5000],
        generation=deployment.generation,
    )


def _admit_gpus(
    *,
    team: Team,
    quota: TeamQuota,
    accelerator_type: str,
    requested: int,
    excluding_id: int | None,
    gpu_quota: str,
    also_held: int = 0,
) -> None:
    """No overcommit: the team's GPUs of the type in use plus this request stay within its quota, and on a Kueue
    cluster within its quota plus what a platform admin allowed it to borrow from the cohort (Kueue then queues
    what the cohort cannot lend at the moment; the deployment's status says so)."""
    nominal = tenancy_selectors.team_gpu_limit(quota=quota, accelerator_type=accelerator_type)
    borrowing = (
        tenancy_selectors.team_gpu_borrowing_limit(quota=quota, accelerator_type=accelerator_type)
        if gpu_quota == KUEUE
        else 0
    )
    limit = nominal + borrowing
    used = team_gpus_in_use(team=team, accelerator_type=accelerator_type, excluding_id=excluding_id) + also_held
    if used + requested > limit:
        allowed = f"{nominal} {accelerator_type} GPUs" + (f" (and borrow {borrowing})" if borrowing else "")
        detail = f"Team '{team.slug}' may hold {allowed}; it uses {used} and this needs {requested}"
        # The GPUs the old mode of a switch in flight still holds are in `used` (reserved_gpus_expression): when the
        # refusal is theirs alone, the caller is told so, and that it passes once the switch completes.
        switching = team_gpus_held_by_switches(team=team, accelerator_type=accelerator_type, excluding_id=excluding_id)
        held = sum(switching.values()) + also_held
        reason = "gpu_quota"
        if held and used - held + requested <= limit:
            reason = "gpus_held_by_mode_switch"
            names = ", ".join(f"'{name}' ({gpus})" for name, gpus in switching.items()) or "this deployment"
            detail += (
                f"; {held} of them are held by a serving-mode switch in flight ({names}): both modes hold GPUs until "
                f"the old objects are removed, so this fits once the switch completes"
            )
        raise QuotaExceeded(
            detail,
            extra={
                "field": "max_replicas",
                "reason": reason,
                "accelerator_type": accelerator_type,
                "requested": requested,
                "used": used,
                "limit": limit,
                "borrowing_limit": borrowing,
                "held_by_mode_switches": held,
            },
        )


def _validate_serving(
    *,
    serving_mode: str,
    prefill_replicas: int,
    prefill_gpus_per_replica: int,
    min_replicas: int,
    scale_to_zero: bool,
    model_cache: bool = False,
) -> list[FieldProblem]:
    """The serving fields on their own (what the version and the cluster allow is checked once they are known)."""
    if serving_mode not in SERVING_MODES:
        return [FieldProblem("serving_mode", f"must be one of: {', '.join(SERVING_MODES)}", "invalid_choice")]
    problems = []
    if prefill_replicas < 0 or prefill_gpus_per_replica < 0:
        problems.append(FieldProblem("prefill_replicas", "must not be negative", "invalid"))
    if serving_mode != LLMD_MODE and (prefill_replicas or prefill_gpus_per_replica):
        field_name = "prefill_replicas" if prefill_replicas else "prefill_gpus_per_replica"
        problems.append(
            FieldProblem(field_name, "prefill/decode disaggregation needs the llm-d serving mode", "requires_llmd")
        )
    if serving_mode == LLMD_MODE and prefill_gpus_per_replica and not prefill_replicas:
        problems.append(
            FieldProblem(
                "prefill_gpus_per_replica", "set prefill_replicas too (no prefill replica has GPUs)", "invalid"
            )
        )
    if serving_mode == LLMD_MODE and model_cache:
        # The LocalModelCache is matched to InferenceServices by storage URI; the llm-d builder renders none.
        problems.append(
            FieldProblem("model_cache", "the model cache is not offered in the llm-d mode", "not_in_llmd_mode")
        )
    if serving_mode == LLMD_MODE and (scale_to_zero or min_replicas < 1):
        # LLMInferenceService: scaling.minReplicas is at least 1 (CEL), autoscaling goes through the WVA.
        problems.append(
            FieldProblem(
                "scale_to_zero" if scale_to_zero else "min_replicas",
                "the llm-d mode keeps at least one replica (it cannot scale to zero)",
                "not_in_llmd_mode",
            )
        )
    return problems


def _mode_allowed(*, serving_mode: str, version: ModelVersion, cluster_name: str, runs_llmd: bool) -> None:
    """The catalog version declares the mode, and the cluster runs what it needs."""
    modes = list(version.serving_modes or ())
    if serving_mode not in modes:
        raise ValidationFailed.for_field(
            "serving_mode",
            f"{version} is not served in the '{serving_mode}' mode; its catalog entry allows: {', '.join(modes)}",
            code="mode_not_supported_by_version",
        )
    if serving_mode == LLMD_MODE and not runs_llmd:
        raise ValidationFailed.for_field(
            "serving_mode",
            f"cluster '{cluster_name}' does not run the llm-d stack; choose the standard mode or another cluster",
            code="mode_not_supported_by_cluster",
        )


def _place(
    *,
    cluster_name: str | None,
    accelerator_type: str | None,
    region: str | None,
    replicas: int,
    gpus_for_pool: Callable[[AcceleratorPool], int | None],
    unfit: Callable[[list[AcceleratorPool]], Conflict],
    excluding: Deployment | None = None,
    serving_mode: str = STANDARD_MODE,
    prefill_replicas: int = 0,
    prefill_gpus_per_replica: int = 0,
) -> tuple[AcceleratorPool, int]:
    """Pick the pool and the GPUs per replica: among the candidate pools (the named cluster's, or those of the type
    and region) that hold the model, the one with the most free GPUs."""
    if cluster_name and not cluster_selectors.cluster_has_pools(name=cluster_name):
        raise ValidationFailed.for_field("cluster", f"no cluster '{cluster_name}'", code="unknown_cluster")
    candidates = cluster_selectors.accelerator_pools_lock(
        cluster_name=cluster_name,
        accelerator_type=accelerator_type,
        region=region,
        runs_llmd=serving_mode == LLMD_MODE and not cluster_name,  # placed by type: only where the mode can run
    )
    if not candidates:
        where = f" in region '{region}'" if region else ""
        raise NoCapacity(
            f"No {accelerator_type or 'GPU'} pool{where}{' on ' + cluster_name if cluster_name else ''}",
            extra={"requested": 0, "free": 0},
        )
    allocated = gpus_allocated_by_cluster_and_type()
    if excluding is not None:
        key = (excluding.cluster_id, excluding.accelerator_type)
        allocated[key] = allocated.get(key, 0) - _reserved(excluding).total
    fitting = [(pool, gpus) for pool in candidates if (gpus := gpus_for_pool(pool)) is not None]
    if not fitting:
        raise unfit(candidates)
    options = [(cluster_selectors.pool_capacity(pool=pool, allocated=allocated), pool, gpus) for pool, gpus in fitting]

    def demand(gpus: int) -> int:
        return gpus_for(
            serving_mode=serving_mode,
            replicas=replicas,
            gpus_per_replica=gpus,
            prefill_replicas=prefill_replicas,
            prefill_gpus_per_replica=prefill_gpus_per_replica,
        ).total

    options.sort(key=lambda item: (item[0].free < demand(item[2]), -item[0].free, item[1].pk))
    best_capacity, best, gpus = options[0]
    requested = demand(gpus)
    if best_capacity.free < requested:
        raise NoCapacity(
            f"{requested} GPUs requested; the most room is {best_capacity.free} free of {best_capacity.total} "
            f"{best.accelerator_type} on {best.cluster.name}",
            extra={
                "requested": requested,
                "free": best_capacity.free,
                "total": best_capacity.total,
                "cluster": best.cluster.name,
                "accelerator_type": best.accelerator_type,
            },
        )
    return best, gpus


def _reserved(deployment: Deployment) -> Any:
    return gpus_for(
        serving_mode=deployment.serving_mode,
        replicas=deployment.max_replicas,
        gpus_per_replica=deployment.gpus_per_replica,
        prefill_replicas=deployment.prefill_replicas,
        prefill_gpus_per_replica=deployment.prefill_gpus_per_replica,
    )


def _too_small(min_gpu_memory_gb: int) -> Callable[[list[AcceleratorPool]], Conflict]:
    def refuse(candidates: list[AcceleratorPool]) -> Conflict:
        return NoCapacity(
            f"This model needs GPUs with at least {min_gpu_memory_gb} GB; the candidate pools have "
            f"{', '.join(f'{p.cluster.name}/{p.accelerator_type}: {p.gpu_memory_gb} GB' for p in candidates)}",
            code="gpu_too_small",
            extra={"min_gpu_memory_gb": min_gpu_memory_gb},
        )

    return refuse


def _create_problems(
    *,
    name: str,
    cluster: str | None,
    accelerator_type: str | None,
    min_replicas: int,
    max_replicas: int,
    scale_to_zero: bool,
    runtime_args: list[str],
    model_cache: bool,
    serving_mode: str,
    prefill_replicas: int,
    prefill_gpus_per_replica: int,
) -> list[FieldProblem]:
    """What is wrong with a creation request on its own, before anything is read."""
    problems: list[FieldProblem] = []
    if not re.fullmatch(DEPLOYMENT_NAME_PATTERN, name):
        problems.append(
            FieldProblem(
                "name",
                "must start with a letter, use lowercase letters, digits and '-', at most 40 characters",
                "invalid_name",
            )
        )
    if not cluster and not accelerator_type:
        problems.append(
            FieldProblem(
                "accelerator_type", "name a cluster, or an accelerator type (and optionally a region)", "required"
            )
        )
    if max_replicas < 1 or min_replicas < 0 or min_replicas > max_replicas:
        problems.append(FieldProblem("max_replicas", "must be at least 1 and at least min_replicas", "invalid"))
    problems.extend(_validate_runtime_args(runtime_args))
    problems.extend(
        _validate_serving(
            serving_mode=serving_mode,
            prefill_replicas=prefill_replicas,
            prefill_gpus_per_replica=prefill_gpus_per_replica,
            min_replicas=min_replicas,
            scale_to_zero=scale_to_zero,
            model_cache=model_cache,
        )
    )
    return problems


def _pool_rules(
    *,
    version: ModelVersion,
    team_args: list[str],
    gpus_per_replica: int | None,
    team: Team,
    actor: User,
    platform_admin: bool,
    replicas: int,
) -> tuple[Callable[[AcceleratorPool], int | None], Callable[[list[AcceleratorPool]], Conflict]]:
    """How many GPUs per replica a pool gives the version (None: it cannot hold it), and the refusal when no
    candidate pool can: sized from the architecture when the catalog knows it, else the catalog's fixed figures."""
    plan = _sizing_for(version, team_args)
    if plan is None:
        fixed_gpus = gpus_per_replica or version.gpus_per_replica
        minimum = version.min_gpu_memory_gb

        def gpus_for_pool(pool: AcceleratorPool) -> int | None:
            return fixed_gpus if pool.gpu_memory_gb >= minimum else None

        unfit = _too_small(minimum)
    else:
        sized = plan

        def gpus_for_pool(pool: AcceleratorPool) -> int | None:
            if gpus_per_replica is not None:
                return gpus_per_replica if sized.at(pool, gpus_per_replica).fits else None
            smallest = sized.smallest(pool)
            return smallest.tensor_parallel_size if smallest is not None else None

        def unfit(candidates: list[AcceleratorPool]) -> Conflict:
            attempts = [
                (pool, sized.at(pool, gpus_per_replica) if gpus_per_replica else sized.largest_attempt(pool))
                for pool in candidates
            ]
            return _does_not_fit(
                plan=sized,
                attempts=attempts,
                team=team,
                actor=actor,
                platform_admin=platform_admin,
                replicas=replicas,
            )

    return gpus_for_pool, unfit


@transaction.atomic
def deployment_create(
    *,
    actor: User,
    platform_admin: bool,
    team: Team,
    name: str,
    model: str,
    version: str | None = None,
    cluster: str | None = None,
    accelerator_type: str | None = None,
    region: str | None = None,
    min_replicas: int = 1,
    max_replicas: int = 1,
    scale_to_zero: bool = False,
    runtime_args: list[str] | None = None,
    model_cache: bool = False,
    gpus_per_replica: int | None = None,
    serving_mode: str = STANDARD_MODE,
    prefill_replicas: int = 0,
    prefill_gpus_per_replica: int = 0,
) -> DeploymentResult:
    if scale_to_zero:
        min_replicas = 0
    problems = _create_problems(
        name=name,
        cluster=cluster,
        accelerator_type=accelerator_type,
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        scale_to_zero=scale_to_zero,
        runtime_args=list(runtime_args or []),
        model_cache=model_cache,
        serving_mode=serving_mode,
        prefill_replicas=prefill_replicas,
        prefill_gpus_per_replica=prefill_gpus_per_replica,
    )
    if problems:
        raise ValidationFailed(problems)
    if not tenancy_selectors.team_is_active(team):
        raise Conflict(f"Team '{team.slug}' is suspended", code="team_suspended")
    model_version, warnings = catalog_selectors.model_version_deployable(
        user=actor, platform_admin=platform_admin, model_slug=model, version=version, team_slug=team.slug
    )
    # Placed by type, only clusters that run the mode are candidates (_place); a named cluster must run it.
    named = cluster_selectors.cluster_list().filter(name=cluster).first() if cluster else None
    _mode_allowed(
        serving_mode=serving_mode,
        version=model_version,
        cluster_name=cluster or "",
        runs_llmd=named.runs_llmd if named is not None else True,
    )
    quota = tenancy_selectors.team_quota_lock(team=team)
    if Deployment.objects.filter(team=team, name=name).exists():
        raise Conflict(f"Team '{team.slug}' already has a deployment '{name}'", code="deployment_exists")
    if Deployment.objects.filter(team=team).count() >= quota.max_deployments:
        raise QuotaExceeded(
            f"Team '{team.slug}' may have {quota.max_deployments} deployments",
            code="deployment_quota_exceeded",
            extra={"limit": quota.max_deployments},
        )
    gpus_for_pool, unfit = _pool_rules(
        version=model_version,
        team_args=list(runtime_args or []),
        gpus_per_replica=gpus_per_replica,
        team=team,
        actor=actor,
        platform_admin=platform_admin,
        replicas=min_replicas,
    )
    pool, placed_gpus = _place(
        cluster_name=cluster,
        accelerator_type=accelerator_type,
        region=region,
        replicas=max_replicas,
        gpus_for_pool=gpus_for_pool,
        unfit=unfit,
        serving_mode=serving_mode,
        prefill_replicas=prefill_replicas,
        prefill_gpus_per_replica=prefill_gpus_per_replica,
    )
    requested = gpus_for(
        serving_mode=serving_mode,
        replicas=max_replicas,
        gpus_per_replica=placed_gpus,
        prefill_replicas=prefill_replicas,
        prefill_gpus_per_replica=prefill_gpus_per_replica,
    ).total
    _admit_gpus(
        team=team,
        quota=quota,
        accelerator_type=pool.accelerator_type,
        requested=requested,
        excluding_id=None,
        gpu_quota=pool.cluster.gpu_quota,
    )
    deployment = Deployment.objects.create(
        team=team,
        name=name,
        model_version=model_version,
        cluster=pool.cluster,
        accelerator_type=pool.accelerator_type,
        served_model_name=f"pending-{uuid.uuid4().hex}",  # the real name takes the row's id (names.py)
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        scale_to_zero=scale_to_zero,
        gpus_per_replica=placed_gpus,
        runtime_args=list(runtime_args or []),
        model_cache=model_cache,
        serving_mode=serving_mode,
        prefill_replicas=prefill_replicas,
        prefill_gpus_per_replica=prefill_gpus_per_replica,
        created_by=actor,
    )
    deployment.served_model_name = deployment_gateway_name(team_slug=team.slug, name=name, deployment_id=deployment.pk)
    deployment.save(update_fields=["served_model_name"])
    served_names_open(deployment=deployment, names=[deployment.served_model_name], since=deployment.created_at)
    _event(deployment, "Created", f"placed on {pool.cluster.name} ({pool.accelerator_type}); " + "; ".join(warnings))
    audit_record(
        actor=actor,
        action="deployment.create",
        target_type="deployment",
        target_id=deployment.pk,
        target_label=f"{team.slug}/{name}",
        team_slug=team.slug,
        after=_snapshot(deployment),
    )
    _nudge(deployment.pk)
    return DeploymentResult(deployment=deployment, warnings=warnings)


_UPDATABLE = (
    "min_replicas",
    "max_replicas",
    "scale_to_zero",
    "runtime_args",
    "serving_mode",
    "prefill_replicas",
    "prefill_gpus_per_replica",
)


def _desired_fields(*, current: Deployment, changes: dict[str, Any]) -> dict[str, Any]:
    """The updatable fields as they will be: the changes over the current ones, with what a change implies."""
    desired = {name: changes.get(name, getattr(current, name)) for name in _UPDATABLE}
    if desired["scale_to_zero"]:
        desired["min_replicas"] = 0
    elif "scale_to_zero" in changes and not changes["scale_to_zero"] and "min_replicas" not in changes:
        desired["min_replicas"] = max(current.min_replicas, 1)
    if desired["serving_mode"] != LLMD_MODE and "serving_mode" in changes:
        # Leaving llm-d drops its disaggregation unless the caller says otherwise (and is then told it cannot).
        for name in ("prefill_replicas", "prefill_gpus_per_replica"):
            if name not in changes:
                desired[name] = 0
    return desired


def _runtime_args_fit(
    *, current: Deployment, runtime_args: list[str], actor: User, platform_admin: bool, replicas: int
) -> None:
    """New runtime flags must still let the model fit the GPUs it holds (when the catalog knows its architecture)."""
    plan = _sizing_for(current.model_version, runtime_args)
    pool = cluster_selectors.accelerator_pool_get(
        cluster_id=current.cluster_id, accelerator_type=current.accelerator_type
    )
    if plan is None or pool is None:
        return
    attempt = plan.at(pool, current.gpus_per_replica)
    if not attempt.fits:
        raise _does_not_fit(
            plan=plan,
            attempts=[(pool, attempt)],
            team=current.team,
            actor=actor,
            platform_admin=platform_admin,
            replicas=replicas,
            advice=" (create a new deployment there)",
        )


@transaction.atomic
def deployment_update(
    *, actor: User, deployment: Deployment, changes: dict[str, Any], platform_admin: bool = False
) -> Deployment:
    unknown = sorted(set(changes) - set(_UPDATABLE))
    if unknown:
        raise ValidationFailed(
            [FieldProblem(name, "cannot be changed; create a new deployment", "read_only") for name in unknown]
        )
    quota = tenancy_selectors.team_quota_lock(team=deployment.team)
    current = (
        Deployment.objects.select_for_update().select_related("cluster", "model_version", "team").get(pk=deployment.pk)
    )
    if current.phase == Phase.DELETING:
        raise Conflict(f"Deployment '{current.name}' is being deleted", code="deployment_deleting")
    before = _snapshot(current)
    desired = _desired_fields(current=current, changes=changes)
    problems = _validate_runtime_args(desired["runtime_args"])
    if desired["max_replicas"] < 1 or desired["min_replicas"] > desired["max_replicas"]:
        problems.append(FieldProblem("max_replicas", "must be at least 1 and at least min_replicas", "invalid"))
    problems.extend(
        _validate_serving(
            serving_mode=desired["serving_mode"],
            prefill_replicas=desired["prefill_replicas"],
            prefill_gpus_per_replica=desired["prefill_gpus_per_replica"],
            min_replicas=desired["min_replicas"],
            scale_to_zero=desired["scale_to_zero"],
            model_cache=current.model_cache,
        )
    )
    if problems:
        raise ValidationFailed(problems)
    if desired["serving_mode"] != current.serving_mode:
        _mode_allowed(
            serving_mode=desired["serving_mode"],
            version=current.model_version,
            cluster_name=current.cluster.name,
            runs_llmd=current.cluster.runs_llmd,
        )
    if desired["runtime_args"] != current.runtime_args:
        _runtime_args_fit(
            current=current,
            runtime_args=desired["runtime_args"],
            actor=actor,
            platform_admin=platform_admin,
            replicas=max(desired["min_replicas"], 1),
        )
    requested = gpus_for(
        serving_mode=desired["serving_mode"],
        replicas=desired["max_replicas"],
        gpus_per_replica=current.gpus_per_replica,
        prefill_replicas=desired["prefill_replicas"],
        prefill_gpus_per_replica=desired["prefill_gpus_per_replica"],
    ).total
    switching = desired["serving_mode"] != current.serving_mode
    if requested > _reserved(current).total:
        _admit_gpus(
            team=current.team,
            quota=quota,
            accelerator_type=current.accelerator_type,
            requested=requested,
            excluding_id=current.pk,
            gpu_quota=current.cluster.gpu_quota,
            # A switch in flight still holds its old mode's GPUs; a new switch is admitted on its own spec (the old
            # objects it leaves are its own room: reconciler._with_switch_headroom), then counted for everyone else.
            also_held=0 if switching else current.switch_held_gpus,
        )
        _place(
            cluster_name=current.cluster.name,
            accelerator_type=current.accelerator_type,
            region=None,
            replicas=desired["max_replicas"],
            gpus_for_pool=lambda pool: current.gpus_per_replica,
            unfit=_too_small(0),
            excluding=current,
            serving_mode=desired["serving_mode"],
            prefill_replicas=desired["prefill_replicas"],
            prefill_gpus_per_replica=desired["prefill_gpus_per_replica"],
        )
    leaving = _reserved(current).total
    for name, value in desired.items():
        setattr(current, name, value)
    after = _snapshot(current)
    if after == before:
        return current
    if switching:
        # Until the reconciler prunes the old mode's objects, they hold GPUs beside the new mode's: admission counts
        # both (reserved_gpus_expression), so no other deployment is admitted into GPUs that are not free.
        current.switch_held_gpus = leaving
    current.generation = F("generation") + 1
    current.save()
    current.refresh_from_db()
    _event(
        current,
        "SpecChanged",
        ", ".join(f"{k}: {before[k]} -> {after[k]}" for k in _UPDATABLE if before[k] != after[k]),
    )
    audit_record(
        actor=actor,
        action="deployment.update",
        target_type="deployment",
        target_id=current.pk,
        target_label=f"{current.team.slug}/{current.name}",
        team_slug=current.team.slug,
        before=before,
        after=_snapshot(current),
    )
    _nudge(current.pk)
    return current


@transaction.atomic
def deployment_delete(*, actor: User, deployment: Deployment) -> Deployment:
    """Mark for deletion; the reconciler removes every owned object, then finalizes (deletes) the row."""
    current = (
        Deployment.objects.select_for_update().select_related("team", "cluster", "model_version").get(pk=deployment.pk)
    )
    if current.phase == Phase.DELETING:
        return current
    before = _snapshot(current)
    current.phase = Phase.DELETING
    current.deletion_requested_at = timezone.now()
    current.generation = F("generation") + 1
    current.save()
    current.refresh_from_db()
    _event(current, "DeletionRequested", f"by {actor}")
    audit_record(
        actor=actor,
        action="deployment.delete",
        target_type="deployment",
        target_id=current.pk,
        target_label=f"{current.team.slug}/{current.name}",
        team_slug=current.team.slug,
        before=before,
        after=_snapshot(current),
    )
    _nudge(current.pk)
    return current


@transaction.atomic
def deployment_finalize(*, deployment_id: int, generation: int) -> bool:
    """Called by the reconciler once every owned object is gone: the row (and its GPUs) is released."""
    current = Deployment.objects.select_for_update().select_related("team").filter(pk=deployment_id).first()
    if current is None:
        return True
    if current.phase != Phase.DELETING or current.generation != generation:
        return False
    audit_record(
        actor=None,
        action="deployment.finalize",
        target_type="deployment",
        target_id=current.pk,
        target_label=f"{current.team.slug}/{current.name}",
        team_slug=current.team.slug,
        before=_snapshot(current),
    )
    now = timezone.now()
    ServedName.objects.filter(deployment_id=current.pk, valid_until__isnull=True).update(valid_until=now)
    if current.observed_replicas or current.observed_prefill_replicas:
        _observe_replicas(current, now)
    current.delete()
    return True


def _observe_replicas(deployment: Deployment, at: datetime, *, serving: bool = False) -> None:
    """Append to the replica change log what serves from `at`: the observed decode and prefill replicas with the GPUs
    each holds (GPU-hours charge both, separately); with serving False, nothing (the deployment is gone)."""
    prefill = deployment.observed_prefill_replicas if serving else 0
    ReplicaObservation.objects.create(
        deployment_id=deployment.pk,
        deployment_name=deployment.name,
        team_id=deployment.team_id,
        cluster_id=deployment.cluster_id,
        cluster_name=deployment.cluster.name,
        accelerator_type=deployment.accelerator_type,
        gpus_per_replica=deployment.gpus_per_replica,
        replicas=deployment.observed_replicas if serving else 0,
        prefill_replicas=prefill,
        prefill_gpus_per_replica=prefill_gpus_each(
            gpus_per_replica=deployment.gpus_per_replica,
            prefill_gpus_per_replica=deployment.prefill_gpus_per_replica,
        )
        if prefill
        else 0,
        observed_at=at,
    )


def served_names_open(*, deployment: Deployment, names: list[str], since: datetime) -> None:
    """Record that `deployment` is served under `names` from `since` (usage attributes by them)."""
    version = deployment.model_version
    ServedName.objects.bulk_create(
        ServedName(
            name=name,
            deployment_id=deployment.pk,
            deployment_name=deployment.name,
            team_id=deployment.team_id,
            model_version_id=version.pk,
            model_id=version.model_id,
            model_slug=version.model.slug,
            valid_from=since,
        )
        for name in names
    )


def deployment_status_record(
    *,
    deployment_id: int,
    generation: int,
    status: ObservedStatus,
    reconciled_at: datetime,
    applied_manifests: list[dict[str, Any]] | None = None,
) -> bool:
    """Record what the reconciler observed, only if the spec it worked from is still current and something changed."""
    with transaction.atomic():
        current = Deployment.objects.select_for_update().filter(pk=deployment_id).first()
        if current is None or current.generation != generation:
            return False
        new_values = {
            "phase": status.phase if current.phase != Phase.DELETING else Phase.DELETING,
            "conditions": [dict(condition) for condition in status.conditions],
            "message": status.message,
            "endpoint": status.endpoint,
            "observed_replicas": status.observed_replicas,
            "observed_prefill_replicas": status.observed_prefill_replicas,
            "observed_generation": generation,
        }
        if applied_manifests is not None:
            new_values["applied_manifests"] = applied_manifests
        changed = {name: value for name, value in new_values.items() if getattr(current, name) != value}
        if not changed:
            return False
        phase_changed = "phase" in changed
        for name, value in changed.items():
            setattr(current, name, value)
        current.last_reconciled_at = reconciled_at
        current.save(update_fields=[*changed, "last_reconciled_at", "updated_at"])
        if "observed_replicas" in changed or "observed_prefill_replicas" in changed:
            _observe_replicas(current, reconciled_at, serving=True)
        if phase_changed:
            _event(current, current.phase, status.message)
        return True


def deployment_switch_completed(*, deployment_id: int, generation: int) -> bool:
    """The reconciler pruned the old serving mode's objects: their GPUs are free for admission again. Guarded by
    generation (a newer spec may be another switch, whose old objects are not gone). Returns whether it released."""
    with transaction.atomic():
        current = Deployment.objects.select_for_update().filter(pk=deployment_id).first()
        if current is None or current.generation != generation or not current.switch_held_gpus:
            return False
        held = current.switch_held_gpus
        current.switch_held_gpus = 0
        current.save(update_fields=["switch_held_gpus", "updated_at"])
        _event(current, "ModeSwitchCompleted", f"the {held} GPUs the old serving mode held are released")
        return True


def deployment_failure_record(*, deployment_id: int, generation: int, reason: str, message: str) -> None:
    """A terminal error from the API server: Failed with its message (guarded by generation)."""
    with transaction.atomic():
        current = Deployment.objects.select_for_update().filter(pk=deployment_id).first()
        if current is None or current.generation != generation or current.phase == Phase.DELETING:
            return
        if current.phase == Phase.FAILED and current.message == message and current.observed_generation == generation:
            return
        current.phase = Phase.FAILED
        current.message = message
        current.observed_generation = generation
        current.last_reconciled_at = timezone.now()
        current.save(update_fields=["phase", "message", "observed_generation", "last_reconciled_at", "updated_at"])
        _event(current, reason, message)


def deployment_events_trim(*, deployment_id: int, keep: int = 200) -> None:
    ids = list(
        DeploymentEvent.objects.filter(deployment_id=deployment_id)
        .order_by("-occurred_at", "-id")
        .values_list("pk", flat=True)[keep:]
    )
    if ids:
        DeploymentEvent.objects.filter(pk__in=ids).delete()
