"""Writes of the catalog (platform admins): models, versions, prices, and loading a catalog file."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import transaction

from catalog.contracts import VERSION_SERVING_MODES
from catalog.models import (
    ARTIFACT_URI_PATTERN,
    KUBERNETES_QUANTITY_PATTERN,
    MODEL_SLUG_PATTERN,
    SERVED_MODEL_NAME_PATTERN,
    Capability,
    CatalogModel,
    Hosting,
    Lifecycle,
    ModelPrice,
    ModelVersion,
    Provider,
    UsageType,
    Visibility,
)
from catalog.sizing import ArchitectureError, architecture_from_dict, architecture_from_hf_config
from portal.core.audit import audit_record
from portal.core.errors import Conflict, FieldProblem, ValidationFailed
from portal.core.inputs import InputSource, inputs_change
from portal.tenancy import selectors as tenancy_selectors

if TYPE_CHECKING:  # types only: teams are read through tenancy's selectors
    from portal.tenancy.models import Team, User

MODEL_FIELDS = (
    "display_name",
    "publisher",
    "description",
    "license",
    "capabilities",
    "context_window",
    "lifecycle",
    "hosting",
    "visibility",
)
SELF_HOSTED_VERSION_FIELDS = (
    "artifact_uri",
    "revision",
    "format",
    "runtime",
    "gpus_per_replica",
    "min_gpu_memory_gb",
    "cpu",
    "memory",
    "runtime_args",
    "architecture",
)
MANAGED_VERSION_FIELDS = ("provider", "provider_model_id")
# How a self-hosted version may be served (a managed one keeps the default, which deploys nothing).
VERSION_FIELDS = (
    "lifecycle",
    "served_model_name",
    *SELF_HOSTED_VERSION_FIELDS,
    *MANAGED_VERSION_FIELDS,
    "serving_modes",
)
MAX_PRICE_PER_MILLION = Decimal("1000000")


def _model_snapshot(model: CatalogModel) -> dict[str, Any]:
    snapshot = {name: getattr(model, name) for name in MODEL_FIELDS}
    snapshot["slug"] = model.slug
    snapshot["capabilities"] = list(model.capabilities)
    if model.pk is not None:
        snapshot["visible_to_teams"] = sorted(model.visible_to_teams.values_list("slug", flat=True))
    return snapshot


def _version_snapshot(version: ModelVersion) -> dict[str, Any]:
    snapshot = {name: getattr(version, name) for name in VERSION_FIELDS}
    snapshot["version"] = version.version
    return snapshot


def _validate_model(values: dict[str, Any]) -> list[FieldProblem]:
    problems: list[FieldProblem] = []
    if "slug" in values and not re.fullmatch(MODEL_SLUG_PATTERN, values["slug"] or ""):
        problems.append(FieldProblem("slug", "must be a DNS-1123 label of at most 63 characters", "invalid_slug"))
    for name, choices in (("lifecycle", Lifecycle), ("hosting", Hosting), ("visibility", Visibility)):
        if name in values and values[name] not in choices.values:
            problems.append(FieldProblem(name, f"must be one of {', '.join(choices.values)}", "invalid_choice"))
    if "capabilities" in values:
        unknown = sorted(set(values["capabilities"]) - set(Capability.values))
        if unknown:
            problems.append(
                FieldProblem("capabilities", f"unknown capabilities: {', '.join(unknown)}", "invalid_choice")
            )
        elif not values["capabilities"]:
            problems.append(FieldProblem("capabilities", "must name at least one capability", "required"))
    if "context_window" in values and (not isinstance(values["context_window"], int) or values["context_window"] < 1):
        problems.append(FieldProblem("context_window", "must be a positive number of tokens", "invalid"))
    for name in ("display_name", "publisher", "license"):
        if name in values and not str(values[name]).strip():
            problems.append(FieldProblem(name, "must not be blank", "blank"))
    return problems


def _resolve_teams(slugs: list[str]) -> list[Team]:
    teams = tenancy_selectors.teams_by_slugs(slugs=slugs)
    missing = sorted(set(slugs) - {team.slug for team in teams})
    if missing:
        raise ValidationFailed.for_field(
            "visible_to_teams", f"unknown teams: {', '.join(missing)}", code="unknown_team"
        )
    return teams


@transaction.atomic
def catalog_model_create(
    *, actor: User | None, slug: str, visible_to_teams: list[str] | None = None, **fields: Any
) -> CatalogModel:
    unknown = sorted(set(fields) - set(MODEL_FIELDS))
    if unknown:
        raise ValidationFailed([FieldProblem(name, "is not a model field", "unknown_field") for name in unknown])
    values = {"slug": slug, **fields}
    problems = _validate_model(values)
    for required in ("display_name", "publisher", "license", "capabilities", "context_window", "hosting"):
        if required not in fields:
            problems.append(FieldProblem(required, "is required", "required"))
    if problems:
        raise ValidationFailed(problems)
    if CatalogModel.objects.filter(slug=slug).exists():
        raise Conflict(f"Model '{slug}' already exists", code="model_exists")
    teams = _resolve_teams(visible_to_teams or [])
    model = CatalogModel.objects.create(slug=slug, **fields)
    model.visible_to_teams.set(teams)
    audit_record(
        actor=actor,
        action="catalog_model.create",
        target_type="catalog_model",
        target_id=model.pk,
        target_label=slug,
        after=_model_snapshot(model),
    )
    return model


@transaction.atomic
def catalog_model_update(
    *, actor: User | None, model: CatalogModel, changes: dict[str, Any], visible_to_teams: list[str] | None = None
) -> CatalogModel:
    unknown = sorted(set(changes) - set(MODEL_FIELDS))
    if unknown:
        raise ValidationFailed([FieldProblem(name, "cannot be changed", "read_only") for name in unknown])
    problems = _validate_model(changes)
    model = CatalogModel.objects.select_for_update().get(pk=model.pk)
    if "hosting" in changes and changes["hosting"] != model.hosting and model.versions.exists():
        problems.append(FieldProblem("hosting", "cannot change while the model has versions", "immutable"))
    if problems:
        raise ValidationFailed(problems)
    before = _model_snapshot(model)
    for name, value in changes.items():
        setattr(model, name, value)
    model.save()
    if visible_to_teams is not None:
        model.visible_to_teams.set(_resolve_teams(visible_to_teams))
    after = _model_snapshot(model)
    if after != before:
        audit_record(
            actor=actor,
            action="catalog_model.update",
            target_type="catalog_model",
            target_id=model.pk,
            target_label=model.slug,
            before=before,
            after=after,
        )
    return model


def _validate_version(model: CatalogModel, values: dict[str, Any]) -> list[FieldProblem]:
    problems: list[FieldProblem] = []
    if values.get("lifecycle", Lifecycle.PREVIEW) not in Lifecycle.values:
        problems.append(FieldProblem("lifecycle", f"must be one of {', '.join(Lifecycle.values)}", "invalid_choice"))
    if not re.fullmatch(SERVED_MODEL_NAME_PATTERN, values.get("served_model_name") or ""):
        problems.append(
            FieldProblem("served_model_name", "must be 2-128 characters: letters, digits and . _ : / -", "invalid")
        )
    elif "--" in (values.get("served_model_name") or ""):
        # Team deployments are served as '<team>--<name>' (portal/deployments/names.py): a catalog name with '--'
        # could be a deployment's, and the gateway would route one name two ways.
        problems.append(
            FieldProblem("served_model_name", "must not contain '--' (reserved for team deployments)", "reserved")
        )
    if model.hosting == Hosting.SELF_HOSTED:
        present = sorted(name for name in MANAGED_VERSION_FIELDS if values.get(name))
        problems.extend(FieldProblem(name, "is only for managed models", "not_allowed") for name in present)
        if not re.fullmatch(ARTIFACT_URI_PATTERN, values.get("artifact_uri") or ""):
            problems.append(
                FieldProblem(
                    "artifact_uri", "must be a URI like hf://org/repo, s3://bucket/path or pvc://claim/path", "invalid"
                )
            )
        gpus = values.get("gpus_per_replica", 0)
        if not isinstance(gpus, int) or not 0 <= gpus <= 64:
            problems.append(FieldProblem("gpus_per_replica", "must be between 0 and 64", "invalid"))
        memory_gb = values.get("min_gpu_memory_gb", 0)
        if not isinstance(memory_gb, int) or not 0 <= memory_gb <= 1024:
            problems.append(FieldProblem("min_gpu_memory_gb", "must be between 0 and 1024", "invalid"))
        for name in ("cpu", "memory"):
            if values.get(name) and not re.fullmatch(KUBERNETES_QUANTITY_PATTERN, values[name]):
                problems.append(FieldProblem(name, "must be a Kubernetes quantity like 4, 500m or 16Gi", "invalid"))
        args = values.get("runtime_args", [])
        if not isinstance(args, list) or not all(isinstance(arg, str) and arg for arg in args):
            problems.append(FieldProblem("runtime_args", "must be a list of non-empty strings", "invalid"))
        modes = values.get("serving_modes", ["standard"])
        if (
            not isinstance(modes, list)
            or not modes
            or len(set(modes)) != len(modes)
            or any(mode not in VERSION_SERVING_MODES for mode in modes)
        ):
            problems.append(
                FieldProblem(
                    "serving_modes",
                    f"must list one or more of {', '.join(VERSION_SERVING_MODES)}, each once",
                    "invalid_choice",
                )
            )
        if values.get("architecture"):
            try:
                architecture_from_dict(values["architecture"])
            except ArchitectureError as error:
                problems.extend(
                    FieldProblem(f"architecture.{name}", why, "invalid_architecture")
                    for name, why in error.problems.items()
                )
    else:
        present = sorted(name for name in SELF_HOSTED_VERSION_FIELDS if values.get(name))
        problems.extend(FieldProblem(name, "is only for self-hosted models", "not_allowed") for name in present)
        if values.get("serving_modes", ["standard"]) != ["standard"]:
            problems.append(FieldProblem("serving_modes", "is only for self-hosted models", "not_allowed"))
        if values.get("provider") not in Provider.values:
            problems.append(FieldProblem("provider", f"must be one of {', '.join(Provider.values)}", "invalid_choice"))
        if not (values.get("provider_model_id") or "").strip():
            problems.append(FieldProblem("provider_model_id", "is required for a managed model", "required"))
    return problems


def architecture_read_hf_config(*, config: object, parameters: int | None = None) -> dict[str, Any]:
    """An architecture from a Hugging Face config.json (pasted or uploaded); a problem per missing field."""
    if isinstance(config, str | bytes):
        try:
            config = json.loads(config)
        except ValueError:
            raise ValidationFailed.for_field("hf_config", "is not valid JSON", code="invalid_json") from None
    if not isinstance(config, dict):
        raise ValidationFailed.for_field("hf_config", "must be a JSON object (a config.json)", code="invalid")
    try:
        return architecture_from_hf_config(config, parameters=parameters).to_dict()
    except ArchitectureError as error:
        raise ValidationFailed(
            [FieldProblem(f"hf_config.{name}", why, "unknown_architecture") for name, why in error.problems.items()],
            detail="The config.json lacks what sizing needs: " + ", ".join(error.problems),
        ) from None


def _with_hf_config(fields: dict[str, Any]) -> dict[str, Any]:
    config = fields.pop("hf_config", None)
    parameters = fields.pop("parameters", None)
    if config is None:
        if parameters is not None:
            raise ValidationFailed.for_field("parameters", "is only read together with hf_config", code="not_allowed")
        return fields
    if fields.get("architecture"):
        raise ValidationFailed.for_field("hf_config", "give architecture or hf_config, not both", code="conflict")
    return fields | {"architecture": architecture_read_hf_config(config=config, parameters=parameters)}


@transaction.atomic
def model_version_create(*, actor: User | None, model: CatalogModel, version: str, **fields: Any) -> ModelVersion:
    fields = _with_hf_config(fields)
    unknown = sorted(set(fields) - set(VERSION_FIELDS))
    if unknown:
        raise ValidationFailed([FieldProblem(name, "is not a version field", "unknown_field") for name in unknown])
    problems = _validate_version(model, fields)
    if not re.fullmatch(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", version):
        problems.append(FieldProblem("version", "must be 1-64 characters: letters, digits and . _ -", "invalid"))
    if problems:
        raise ValidationFailed(problems)
    if fields.get("architecture"):
        fields["architecture"] = architecture_from_dict(fields["architecture"]).to_dict()
    CatalogModel.objects.select_for_update().filter(pk=model.pk).first()
    if ModelVersion.objects.filter(model=model, version=version).exists():
        raise Conflict(f"Model '{model.slug}' already has version '{version}'", code="version_exists")
    created = ModelVersion.objects.create(model=model, version=version, **fields)
    audit_record(
        actor=actor,
        action="model_version.create",
        target_type="model_version",
        target_id=created.pk,
        target_label=str(created),
        after=_version_snapshot(created),
    )
    return created


@transaction.atomic
def model_version_update(*, actor: User | None, version: ModelVersion, changes: dict[str, Any]) -> ModelVersion:
    changes = _with_hf_config(dict(changes))
    unknown = sorted(set(changes) - set(VERSION_FIELDS))
    if unknown:
        raise ValidationFailed([FieldProblem(name, "cannot be changed", "read_only") for name in unknown])
    version = ModelVersion.objects.select_for_update().select_related("model").get(pk=version.pk)
    before = _version_snapshot(version)
    merged = before | changes
    problems = _validate_version(version.model, merged)
    if problems:
        raise ValidationFailed(problems)
    if changes.get("architecture"):
        changes["architecture"] = architecture_from_dict(changes["architecture"]).to_dict()
    for name, value in changes.items():
        setattr(version, name, value)
    after = _version_snapshot(version)
    if after == before:
        return version
    changed = ", ".join(name for name in VERSION_FIELDS if before.get(name) != after.get(name))
    with inputs_change(
        source=InputSource(model_version_id=version.pk), reason=f"catalog version {version} changed: {changed}"
    ):
        version.save()
    audit_record(
        actor=actor,
        action="model_version.update",
        target_type="model_version",
        target_id=version.pk,
        target_label=str(version),
        before=before,
        after=after,
    )
    return version


def _parse_price(raw: object) -> Decimal | None:
    try:
        price = Decimal(str(raw))
    except InvalidOperation:
        return None
    if not price.is_finite() or price < 0 or price > MAX_PRICE_PER_MILLION or price.as_tuple().exponent < -6:  # type: ignore[operator]
        return None
    return price


@transaction.atomic
def model_price_add(
    *,
    actor: User | None,
    model: CatalogModel,
    usage_type: str,
    price_per_million: Decimal | str,
    effective_from: datetime,
    currency: str | None = None,
    note: str = "",
) -> ModelPrice:
    """Add a price from `effective_from`; it replaces the previous one from then on (no overlaps)."""
    problems: list[FieldProblem] = []
    if usage_type not in UsageType.values:
        problems.append(FieldProblem("usage_type", f"must be one of {', '.join(UsageType.values)}", "invalid_choice"))
    price = _parse_price(price_per_million)
    if price is None:
        problems.append(
            FieldProblem("price_per_million", "must be a non-negative amount with at most 6 decimal places", "invalid")
        )
    currency = currency or settings.PORTAL_CURRENCY
    if currency != settings.PORTAL_CURRENCY:
        problems.append(FieldProblem("currency", f"prices are kept in {settings.PORTAL_CURRENCY}", "invalid_currency"))
    if effective_from.tzinfo is None:
        problems.append(FieldProblem("effective_from", "must carry a time zone", "naive_datetime"))
    if problems:
        raise ValidationFailed(problems)
    assert price is not None
    CatalogModel.objects.select_for_update().filter(pk=model.pk).first()
    if ModelPrice.objects.filter(model=model, usage_type=usage_type, effective_from=effective_from).exists():
        raise Conflict(
            f"A {usage_type} price of '{model.slug}' already starts at {effective_from.isoformat()}",
            code="price_exists",
        )
    created = ModelPrice.objects.create(
        model=model,
        usage_type=usage_type,
        price_per_million=price,
        currency=currency,
        effective_from=effective_from,
        note=note,
    )
    audit_record(
        actor=actor,
        action="model_price.add",
        target_type="model_price",
        target_id=created.pk,
        target_label=f"{model.slug} {usage_type}",
        after={
            "usage_type": usage_type,
            "price_per_million": str(price),
            "currency": currency,
            "effective_from": effective_from.isoformat(),
            "note": note,
        },
    )
    return created


@dataclass
class LoadReport:
    models_created: int = 0
    models_updated: int = 0
    versions_created: int = 0
    versions_updated: int = 0
    prices_created: int = 0
    unchanged: int = 0


def _prefixed(error: ValidationFailed, prefix: str) -> ValidationFailed:
    return ValidationFailed([FieldProblem(f"{prefix}.{p.field}", p.message, p.code) for p in error.problems])


def _parse_datetime(raw: object, where: str) -> datetime:
    from django.utils.dateparse import parse_datetime

    value = raw if isinstance(raw, datetime) else parse_datetime(str(raw))
    if value is None or value.tzinfo is None:
        raise ValidationFailed.for_field(
            where, "must be an ISO 8601 date-time with a time zone", code="invalid_datetime"
        )
    return value


@transaction.atomic
def catalog_load_document(*, actor: User | None, document: object) -> LoadReport:
    """Create or update every model, version and price in a catalog document; running it twice changes nothing.

    Prices are history: a price already present for the same start must match, or the load stops.
    """
    if not isinstance(document, dict) or not isinstance(document.get("models"), list):
        raise ValidationFailed.for_field(
            "models", "the document must have a list under 'models'", code="invalid_document"
        )
    report = LoadReport()
    for index, entry in enumerate(document["models"]):
        where = f"models[{index}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("slug"), str):
            raise ValidationFailed.for_field(where, "must be a mapping with a slug", code="invalid_document")
        entry = dict(entry)
        versions = entry.pop("versions", []) or []
        prices = entry.pop("prices", []) or []
        slug = entry.pop("slug")
        teams = entry.pop("visible_to_teams", None)
        try:
            model = CatalogModel.objects.filter(slug=slug).first()
            if model is None:
                model = catalog_model_create(actor=actor, slug=slug, visible_to_teams=teams, **entry)
                report.models_created += 1
            else:
                before = _model_snapshot(model)
                model = catalog_model_update(actor=actor, model=model, changes=entry, visible_to_teams=teams)
                if _model_snapshot(model) != before:
                    report.models_updated += 1
                else:
                    report.unchanged += 1
        except ValidationFailed as error:
            raise _prefixed(error, where) from None
        for version_index, version_entry in enumerate(versions):
            version_where = f"{where}.versions[{version_index}]"
            if not isinstance(version_entry, dict) or "version" not in version_entry:
                raise ValidationFailed.for_field(
                    version_where, "must be a mapping with a version", code="invalid_document"
                )
            fields = dict(version_entry)
            label = str(fields.pop("version"))
            hardware = fields.pop("hardware", None) or {}
            if not isinstance(hardware, dict):
                raise ValidationFailed.for_field(
                    f"{version_where}.hardware", "must be a mapping", code="invalid_document"
                )
            fields.update(hardware)
            try:
                existing = ModelVersion.objects.filter(model=model, version=label).first()
                if existing is None:
                    model_version_create(actor=actor, model=model, version=label, **fields)
                    report.versions_created += 1
                else:
                    before = _version_snapshot(existing)
                    updated = model_version_update(actor=actor, version=existing, changes=fields)
                    if _version_snapshot(updated) != before:
                        report.versions_updated += 1
                    else:
                        report.unchanged += 1
            except ValidationFailed as error:
                raise _prefixed(error, version_where) from None
        for price_index, price_entry in enumerate(prices):
            price_where = f"{where}.prices[{price_index}]"
            if not isinstance(price_entry, dict):
                raise ValidationFailed.for_field(price_where, "must be a mapping", code="invalid_document")
            starts = _parse_datetime(price_entry.get("effective_from"), f"{price_where}.effective_from")
            usage_type = str(price_entry.get("usage_type"))
            existing_price = ModelPrice.objects.filter(
                model=model, usage_type=usage_type, effective_from=starts
            ).first()
            if existing_price is not None:
                wanted = _parse_price(price_entry.get("price_per_million"))
                if wanted != existing_price.price_per_million:
                    raise ValidationFailed.for_field(
                        f"{price_where}.price_per_million",
                        f"differs from the stored {existing_price.price_per_million} for the same start; "
                        "add a new price with a later effective_from instead",
                        code="price_history_immutable",
                    )
                report.unchanged += 1
                continue
            try:
                model_price_add(
                    actor=actor,
                    model=model,
                    usage_type=usage_type,
                    price_per_million=str(price_entry.get("price_per_million")),
                    effective_from=starts,
                    currency=price_entry.get("currency"),
                    note=str(price_entry.get("note", "")),
                )
            except ValidationFailed as error:
                raise _prefixed(error, price_where) from None
            report.prices_created += 1
    return report
