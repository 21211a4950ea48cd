"""Reads of the catalog, scoped to the models the caller's teams may see."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.contrib.postgres.search import SearchQuery, SearchVector
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from catalog.contracts import (
    HardwareProfile,
    ManagedVersionRef,
    ModelPriceRow,
    ModelVersionContract,
    PriceContract,
)
from catalog.models import CatalogModel, Hosting, Lifecycle, ModelPrice, ModelVersion, UsageType, Visibility
from catalog.sizing import (
    Architecture,
    EngineSettings,
    ManagedPrice,
    Plan,
    architecture_from_dict,
    plan,
    serving_choices,
)
from portal.clusters.selectors import pool_offers
from portal.core.errors import Conflict, NotFound, ValidationFailed
from portal.tenancy import selectors as tenancy_selectors

if TYPE_CHECKING:  # types only: teams and users are read through tenancy's selectors
    from portal.tenancy.models import Team, User


def catalog_model_list(
    *,
    user: User,
    platform_admin: bool,
    capability: str | None = None,
    hosting: str | None = None,
    lifecycle: str | None = None,
    provider: str | None = None,
    text: str | None = None,
) -> QuerySet[CatalogModel]:
    models = CatalogModel.objects.all()
    if not platform_admin:
        team_ids = tenancy_selectors.user_memberships(user=user).values("team_id")
        models = models.filter(Q(visibility=Visibility.ALL) | Q(visible_to_teams__in=team_ids))
    if capability:
        models = models.filter(capabilities__contains=[capability])
    if hosting:
        models = models.filter(hosting=hosting)
    if lifecycle:
        models = models.filter(lifecycle=lifecycle)
    if provider:
        models = models.filter(versions__provider=provider)
    if text:
        vector = SearchVector("slug", "display_name", "publisher", "description", config="simple")
        models = models.annotate(search=vector).filter(
            Q(search=SearchQuery(text, config="simple", search_type="websearch"))
            | Q(slug__icontains=text)
            | Q(display_name__icontains=text)
        )
    return models.distinct().order_by("slug")


def model_ids_by_names(*, names: Iterable[str]) -> dict[str, tuple[int, str]]:
    """The catalog models these names (as a gateway reports them) stand for, as (model id, slug): a model's slug,
    its versions' served model names and provider model ids. The slug wins over a version name that happens to be
    another model's slug; of two versions with one name, the older."""
    asked = set(names)
    wanted = sorted(asked)
    found: dict[str, tuple[int, str]] = {}
    if not wanted:
        return found
    versions = ModelVersion.objects.filter(Q(served_model_name__in=wanted) | Q(provider_model_id__in=wanted))
    for version in versions.order_by("pk").values("model_id", "model__slug", "served_model_name", "provider_model_id"):
        for name in (version["provider_model_id"], version["served_model_name"]):
            if name in asked:
                found.setdefault(name, (version["model_id"], version["model__slug"]))
    for model_id, slug in CatalogModel.objects.filter(slug__in=wanted).values_list("pk", "slug"):
        found[slug] = (model_id, slug)
    return found


def model_id_by_slug(*, slug: str) -> int | None:
    return CatalogModel.objects.filter(slug=slug).values_list("pk", flat=True).first()


def model_price_rows(*, model_ids: Iterable[int]) -> list[ModelPriceRow]:
    """Every price of these models, each with its start."""
    rows = ModelPrice.objects.filter(model_id__in=set(model_ids)).values_list(
        "model_id", "pk", "usage_type", "price_per_million", "effective_from"
    )
    return [ModelPriceRow(*row) for row in rows]


def prices_backdated(*, grace: timedelta, excluding: Iterable[int] | QuerySet[Any]) -> list[tuple[int, str, datetime]]:
    """Prices that took effect before they were entered (by more than `grace`), but those excluded (price ids, or a
    query of them): (price id, model slug, effective from), oldest entry first."""
    rows = (
        ModelPrice.objects.exclude(pk__in=excluding)
        .filter(effective_from__lt=F("created_at") - grace)
        .order_by("pk")
        .values_list("pk", "model__slug", "effective_from")
    )
    return list(rows)


def model_slugs_usable_by_team(*, team_id: int) -> set[str]:
    """Catalog models a team may call: visible to it and not retired."""
    return set(
        CatalogModel.objects.filter(Q(visibility=Visibility.ALL) | Q(visible_to_teams=team_id))
        .exclude(lifecycle=Lifecycle.RETIRED)
        .values_list("slug", flat=True)
        .distinct()
    )


def managed_versions_in_service(*, providers: set[str]) -> list[ManagedVersionRef]:
    """The newest non-retired version per served model name, for managed models of the given providers, in the
    order of their served names."""
    versions = (
        ModelVersion.objects.select_related("model")
        .filter(model__hosting=Hosting.MANAGED, provider__in=providers)
        .exclude(lifecycle=Lifecycle.RETIRED)
        .exclude(model__lifecycle=Lifecycle.RETIRED)
        .exclude(provider_model_id="")
        .order_by("served_model_name", "-created_at", "-pk")
    )
    chosen: dict[str, ManagedVersionRef] = {}
    for version in versions:
        chosen.setdefault(
            version.served_model_name,
            ManagedVersionRef(
                model_slug=version.model.slug,
                served_model_name=version.served_model_name,
                provider=version.provider,
                provider_model_id=version.provider_model_id,
            ),
        )
    return [chosen[name] for name in sorted(chosen)]


def model_visibility(*, slugs: Iterable[str]) -> dict[str, frozenset[int] | None]:
    """Who may see each model: None for every team, else the ids of the teams it is shown to."""
    return {
        model.slug: None
        if model.visibility == Visibility.ALL
        else frozenset(team.pk for team in model.visible_to_teams.all())
        for model in CatalogModel.objects.filter(slug__in=list(slugs)).prefetch_related("visible_to_teams")
    }


def catalog_model_get_visible(*, slug: str, user: User, platform_admin: bool) -> CatalogModel:
    model = (
        catalog_model_list(user=user, platform_admin=platform_admin)
        .filter(slug=slug)
        .prefetch_related("versions", "visible_to_teams")
        .first()
    )
    if model is None:
        raise NotFound(f"Model '{slug}' not found in the catalog", code="model_not_found")
    return model


def prices_in_force(*, model: CatalogModel, at: datetime | None = None) -> list[ModelPrice]:
    """For each usage type, the price with the latest start at or before `at` (now by default)."""
    moment = at or timezone.now()
    return list(
        ModelPrice.objects.filter(model=model, effective_from__lte=moment)
        .order_by("usage_type", "-effective_from")
        .distinct("usage_type")
    )


def price_list(*, model: CatalogModel) -> QuerySet[ModelPrice]:
    return ModelPrice.objects.filter(model=model).order_by("usage_type", "-effective_from")


def model_version_get(*, model: CatalogModel, version: str) -> ModelVersion:
    found = ModelVersion.objects.filter(model=model, version=version).select_related("model").first()
    if found is None:
        raise NotFound(f"Model '{model.slug}' has no version '{version}'", code="model_version_not_found")
    return found


def model_version_deployable(
    *, user: User, platform_admin: bool, model_slug: str, version: str | None, team_slug: str
) -> tuple[ModelVersion, list[str]]:
    """The self-hosted version a team may deploy (the newest approved, else preview, else deprecated one when no
    version is named) and its warnings; ValidationFailed names the field when the model or version cannot be."""
    visible = catalog_model_list(user=user, platform_admin=platform_admin).filter(slug=model_slug).first()
    if visible is None:
        raise ValidationFailed.for_field(
            "model", f"no model '{model_slug}' in the catalog for team '{team_slug}'", code="unknown_model"
        )
    if visible.hosting != Hosting.SELF_HOSTED:
        raise ValidationFailed.for_field(
            "model", f"'{model_slug}' is a managed model: call it through the gateway", code="managed_model"
        )
    versions = ModelVersion.objects.filter(model=visible).select_related("model")
    if version is not None:
        found = versions.filter(version=version).first()
        if found is None:
            raise ValidationFailed.for_field(
                "version", f"'{model_slug}' has no version '{version}'", code="unknown_version"
            )
    else:
        found = (
            versions.filter(lifecycle=Lifecycle.APPROVED).order_by("-created_at").first()
            or versions.filter(lifecycle=Lifecycle.PREVIEW).order_by("-created_at").first()
            or versions.filter(lifecycle=Lifecycle.DEPRECATED).order_by("-created_at").first()
        )
        if found is None:
            raise ValidationFailed.for_field(
                "version", f"'{model_slug}' has no deployable version (all are retired)", code="no_deployable_version"
            )
    if found.lifecycle == Lifecycle.RETIRED or visible.lifecycle == Lifecycle.RETIRED:
        raise ValidationFailed.for_field(
            "version", f"{found} is retired and cannot be deployed", code="version_retired"
        )
    warnings = []
    if found.lifecycle == Lifecycle.DEPRECATED or visible.lifecycle == Lifecycle.DEPRECATED:
        warnings.append(f"{found} is deprecated; plan a move to a newer version")
    return found, warnings


def version_architecture(version: ModelVersion) -> Architecture | None:
    """The version's architecture for sizing, or None when the catalog does not know it."""
    return architecture_from_dict(version.architecture) if version.architecture else None


def model_version_contract(*, model_slug: str, version: str) -> ModelVersionContract:
    found = ModelVersion.objects.filter(model__slug=model_slug, version=version).select_related("model").first()
    if found is None:
        raise NotFound(f"Model '{model_slug}' has no version '{version}'", code="model_version_not_found")
    return ModelVersionContract(
        model_slug=found.model.slug,
        version=found.version,
        lifecycle=found.lifecycle,
        hosting=found.model.hosting,
        served_model_name=found.served_model_name,
        artifact_uri=found.artifact_uri,
        revision=found.revision,
        format=found.format,
        runtime=found.runtime,
        hardware=HardwareProfile(
            gpus_per_replica=found.gpus_per_replica,
            min_gpu_memory_gb=found.min_gpu_memory_gb,
            cpu=found.cpu,
            memory=found.memory,
        ),
        runtime_args=tuple(found.runtime_args),
        provider=found.provider,
        provider_model_id=found.provider_model_id,
        architecture=version_architecture(found),
        serving_modes=tuple(found.serving_modes or ()),
    )


def price_contracts_in_force(*, model_slug: str, at: datetime) -> list[PriceContract]:
    model = CatalogModel.objects.filter(slug=model_slug).first()
    if model is None:
        raise NotFound(f"Model '{model_slug}' not found in the catalog", code="model_not_found")
    return [
        PriceContract(
            price_id=price.pk,
            model_slug=model_slug,
            usage_type=price.usage_type,
            price_per_million=price.price_per_million,
            currency=price.currency,
            effective_from=price.effective_from,
        )
        for price in prices_in_force(model=model, at=at)
    ]


def sizing_engine() -> EngineSettings:
    """The serving engine's reserve on each GPU, from the portal's settings."""
    return EngineSettings(
        gpu_memory_utilization_percent=settings.SIZING_GPU_MEMORY_UTILIZATION_PERCENT,
        overhead_bytes=settings.SIZING_OVERHEAD_MIB * 2**20,
    )


def managed_prices_in_force(*, user: User, platform_admin: bool) -> list[ManagedPrice]:
    """List prices (input and output per 1M tokens, in force now) of the managed models the caller may use."""
    visible = catalog_model_list(user=user, platform_admin=platform_admin, hosting=Hosting.MANAGED)
    moment = timezone.now()
    prices: dict[str, dict[str, Decimal]] = {}
    rows = (
        ModelPrice.objects.filter(
            model__in=visible, effective_from__lte=moment, usage_type__in=[UsageType.INPUT, UsageType.OUTPUT]
        )
        .order_by("model__slug", "usage_type", "-effective_from")
        .distinct("model__slug", "usage_type")
        .values_list("model__slug", "usage_type", "price_per_million")
    )
    for slug, usage_type, price in rows:
        prices.setdefault(slug, {})[usage_type] = price
    return [
        ManagedPrice(model=slug, input_per_million=found[UsageType.INPUT], output_per_million=found[UsageType.OUTPUT])
        for slug, found in sorted(prices.items())
        if UsageType.INPUT in found and UsageType.OUTPUT in found
    ]


def version_plan(
    *,
    version: ModelVersion,
    user: User,
    platform_admin: bool,
    team: Team | None = None,
    cluster: str | None = None,
    accelerator_type: str | None = None,
    region: str | None = None,
    gpus_per_replica: int | None = None,
    context: int | None = None,
    concurrency: int = 1,
    kv_cache_dtype: str | None = None,
    replicas: int = 1,
    team_args: tuple[str, ...] = (),
    gpu_memory_utilization_percent: int | None = None,
) -> Plan:
    """Size a version on the pools asked for (or every pool the team may use), with the cheapest placements.

    Without a context or KV dtype, the version's defaults (and the team's flags) choose them, as on deploy.
    """
    if version.is_managed:
        raise ValidationFailed.for_field(
            "version", f"{version} is a managed model: the provider sizes it", code="managed_model"
        )
    architecture = version_architecture(version)
    if architecture is None:
        raise Conflict(
            f"{version} has no architecture in the catalog, so it cannot be sized; a platform admin can add it "
            "(architecture, or the model's config.json as hf_config)",
            code="architecture_unknown",
        )
    default_context, default_kv = serving_choices(
        architecture, catalog_args=tuple(version.runtime_args), team_args=team_args
    )
    engine = sizing_engine()
    if gpu_memory_utilization_percent is not None:
        engine = EngineSettings(
            gpu_memory_utilization_percent=gpu_memory_utilization_percent,
            overhead_bytes=engine.overhead_bytes,
            block_tokens=engine.block_tokens,
        )
    types = tenancy_selectors.team_accelerator_types(team=team) if team is not None else None
    pools = pool_offers(cluster=cluster, accelerator_type=accelerator_type, region=region, accelerator_types=types)
    return plan(
        architecture,
        pools,
        gpus_per_replica=gpus_per_replica,
        context=context or default_context,
        concurrency=concurrency,
        kv_cache_dtype=kv_cache_dtype or default_kv,
        replicas=replicas,
        engine=engine,
        managed_prices=managed_prices_in_force(user=user, platform_admin=platform_admin),
        input_share_percent=settings.SIZING_INPUT_SHARE_PERCENT,
    )
