"""Reads of the gateway app: credentials by team and by client id, and the desired gateway policy of a cluster."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Protocol

from django.db.models import F, Q, QuerySet
from django.utils import timezone

from catalog.models import CatalogModel, Hosting, Lifecycle, ModelVersion, Visibility
from portal.clusters import selectors as cluster_selectors
from portal.clusters.models import Cluster
from portal.core.encryption import decrypt_secret
from portal.core.errors import NotFound
from portal.gateway import conf
from portal.gateway.contracts import (
    CredentialRef,
    GatewayKey,
    GatewayPolicySpec,
    ManagedModelRoute,
    ProviderBackendSpec,
    TeamGatewayAccess,
    TeamGatewayState,
    TeamKeyRoutes,
)
from portal.gateway.models import (
    BudgetEnforcement,
    ClusterGatewayPolicy,
    Credential,
    CredentialReveal,
    ProviderBackend,
    TeamGatewayPolicy,
)
from portal.tenancy.models import Team

CLIENT_ID_SEPARATOR = "."


def client_id_of(*, team_slug: str, key_id: str) -> str:
    """The client id the gateway forwards in x-portal-client-id: '<team-slug>.<key_id>' (slugs have no dots)."""
    return f"{team_slug}{CLIENT_ID_SEPARATOR}{key_id}"


def credential_state(credential: Credential, *, now: datetime | None = None) -> str:
    """active, expired, revoked or rotating (the old key of a rotation, still valid until its expiry)."""
    moment = now or timezone.now()
    if credential.revoked_at is not None:
        return "revoked"
    if credential.expires_at is not None and credential.expires_at <= moment:
        return "expired"
    if credential.rotated_at is not None:
        return "rotating"
    return "active"


def _valid_at(moment: datetime) -> Q:
    return Q(revoked_at__isnull=True) & (Q(expires_at__isnull=True) | Q(expires_at__gt=moment))


def credential_list(*, team: Team, include_inactive: bool = True) -> QuerySet[Credential]:
    credentials = Credential.objects.filter(team=team).select_related("team", "created_by", "replaced_by")
    if not include_inactive:
        credentials = credentials.filter(_valid_at(timezone.now()))
    return credentials.order_by("name", "-created_at", "-pk")


def credential_get(*, team: Team, credential_id: int) -> Credential:
    credential = credential_list(team=team).filter(pk=credential_id).first()
    if credential is None:
        raise NotFound(f"Credential {credential_id} not found in team '{team.slug}'", code="credential_not_found")
    return credential


def credential_by_client_id(client_id: str) -> CredentialRef | None:
    """Resolve a gateway client id, whatever the key's state now (usage events can arrive late)."""
    return credentials_by_client_ids([client_id]).get(client_id)


def credentials_by_client_ids(client_ids: Iterable[str]) -> dict[str, CredentialRef]:
    """Resolve many client ids in one query (an ingestion batch); unknown or malformed ids are left out."""
    wanted: dict[str, set[str]] = {}  # key id -> team slugs the client ids name with it
    for client_id in client_ids:
        team_slug, separator, key_id = client_id.rpartition(CLIENT_ID_SEPARATOR)
        if separator and team_slug and key_id:
            wanted.setdefault(key_id, set()).add(team_slug)
    found: dict[str, CredentialRef] = {}
    for credential in Credential.objects.select_related("team").filter(key_id__in=wanted):
        if credential.team.slug not in wanted[credential.key_id]:
            continue  # the right key id under another team's name resolves to nothing
        client_id = client_id_of(team_slug=credential.team.slug, key_id=credential.key_id)
        found[client_id] = CredentialRef(
            credential_id=credential.pk,
            key_id=credential.key_id,
            team_id=credential.team_id,
            team_slug=credential.team.slug,
            name=credential.name,
            client_id=client_id,
            revoked_at=credential.revoked_at,
            expires_at=credential.expires_at,
        )
    return found


def credential_reveal_get(*, token_hash: str) -> CredentialReveal | None:
    return (
        CredentialReveal.objects.select_related("credential", "credential__team").filter(token_hash=token_hash).first()
    )


def team_usable_model_slugs(*, team: Team) -> set[str]:
    """Catalog models the team may call through the gateway: visible to it and not retired."""
    return set(
        CatalogModel.objects.filter(Q(visibility=Visibility.ALL) | Q(visible_to_teams=team))
        .exclude(lifecycle=Lifecycle.RETIRED)
        .values_list("slug", flat=True)
        .distinct()
    )


def provider_backend_list(*, cluster: Cluster) -> QuerySet[ProviderBackend]:
    return ProviderBackend.objects.filter(cluster=cluster).order_by("name")


def provider_backend_get(*, cluster: Cluster, name: str) -> ProviderBackend:
    backend = provider_backend_list(cluster=cluster).filter(name=name).first()
    if backend is None:
        raise NotFound(
            f"Provider backend '{name}' not found on cluster '{cluster.name}'", code="provider_backend_not_found"
        )
    return backend


def gateway_policy_get(*, cluster: Cluster) -> ClusterGatewayPolicy | None:
    return ClusterGatewayPolicy.objects.filter(cluster=cluster).first()


def gateway_policy_ids(*, behind_only: bool) -> list[int]:
    """Every cluster policy id (the resync compares fingerprints), or only those whose generation is ahead."""
    policies = ClusterGatewayPolicy.objects.all()
    if behind_only:
        policies = policies.filter(observed_generation__lt=F("generation"))
    return list(policies.order_by("pk").values_list("pk", flat=True))


def gateway_policy_fingerprints() -> dict[int, str]:
    """Policy id -> fingerprint of the policy last applied (empty when never applied or failed)."""
    return dict(ClusterGatewayPolicy.objects.order_by("pk").values_list("pk", "applied_fingerprint"))


def deployment_allowed_key_ids(*, team_slug: str, model_slug: str) -> tuple[str, ...] | None:
    """Per-key allow-lists for one of the team's self-hosted deployments: None when every current key of the
    team may call the model, else the key ids that may (possibly none)."""
    return _admitted(_current_keys(team__slug=team_slug), model_slug)


def team_key_routes(*, team_id: int) -> TeamKeyRoutes:
    """What each route to the team's deployments admits of its current keys, for every model at once (the key
    services compare it around a change, to tell the deployments whose routes the change alters)."""
    keys = _current_keys(team_id=team_id)
    named = sorted({slug for _, allowed in keys for slug in allowed or ()})
    return TeamKeyRoutes(by_model=tuple((slug, _admitted(keys, slug)) for slug in named), others=_admitted(keys, None))


def _current_keys(**team: object) -> list[tuple[str, list[str]]]:
    return list(
        Credential.objects.filter(_valid_at(timezone.now()), **team)
        .order_by("key_id")
        .values_list("key_id", "allowed_models")
    )


def _admitted(keys: list[tuple[str, list[str]]], model_slug: str | None) -> tuple[str, ...] | None:
    """None when every key may call the model, else the ids of those that may; a model no allow-list names is
    model_slug None (only keys without an allow-list may call it)."""
    if all(not allowed or model_slug in allowed for _, allowed in keys):
        return None
    return tuple(key_id for key_id, allowed in keys if not allowed or model_slug in allowed)


def team_gateway_state(*, team: Team) -> TeamGatewayState:
    """The team's effective gateway limits: its quota, lowered when throttled, zero when blocked."""
    quota = getattr(team, "quota", None)
    policy = TeamGatewayPolicy.objects.filter(team=team).first()
    enforcement = policy.budget_enforcement if policy is not None else BudgetEnforcement.NONE
    per_minute = quota.tokens_per_minute if quota is not None else 0
    per_day = quota.tokens_per_day if quota is not None else 0
    if enforcement == BudgetEnforcement.THROTTLE:
        per_minute = max(1, per_minute * conf.throttle_percent() // 100)
        per_day = max(1, per_day * conf.throttle_percent() // 100)
    blocked = "suspended" if team.status != Team.Status.ACTIVE else "budget" if enforcement == "block" else ""
    if blocked:
        per_minute = per_day = 0
    return TeamGatewayState(
        team_slug=team.slug,
        budget_enforcement=enforcement,
        reason=policy.reason if policy is not None else "",
        blocked_reason=blocked,
        tokens_per_minute=per_minute,
        tokens_per_day=per_day,
        current_keys=Credential.objects.filter(_valid_at(timezone.now()), team=team).count(),
    )


def team_has_restricted_keys(*, team: Team) -> bool:
    return Credential.objects.filter(_valid_at(timezone.now()), team=team).exclude(allowed_models=[]).exists()


def rate_limit_rules_needed(*, extra_team: Team | None = None, extra_restricted_keys: int = 0) -> int:
    """Rules the token-limit policy needs (the same on every cluster): 2 per team with current keys (1 when
    blocked), plus 1 per current key with a model allow-list of a team that is not blocked."""
    current = Credential.objects.filter(_valid_at(timezone.now()))
    team_ids = set(current.values_list("team_id", flat=True).distinct())
    if extra_team is not None:
        team_ids.add(extra_team.pk)
    blocked = set(
        Team.objects.filter(pk__in=team_ids)
        .filter(~Q(status=Team.Status.ACTIVE) | Q(gateway_policy__budget_enforcement=BudgetEnforcement.BLOCK))
        .values_list("pk", flat=True)
    )
    restricted = current.exclude(allowed_models=[]).exclude(team_id__in=blocked).count()
    return 2 * len(team_ids - blocked) + len(blocked) + restricted + extra_restricted_keys


def _provider_credential(ciphertext: str, *, decrypt: bool) -> str:
    if not ciphertext:
        return ""
    return decrypt_secret(ciphertext) if decrypt else hashlib.sha256(ciphertext.encode()).hexdigest()


def _managed_versions(providers: set[str]) -> list[ModelVersion]:
    """The newest non-retired version per served model name, for managed models of the given providers."""
    versions = (
        ModelVersion.objects.select_related("model")
        .filter(model__hosting=Hosting.MANAGED, provider__in=providers)
        .exclude(lifecycle=Lifecycle.RETIRED)
        .exclude(model__lifecycle=Lifecycle.RETIRED)
        .exclude(provider_model_id="")
        .order_by("served_model_name", "-created_at", "-pk")
    )
    chosen: dict[str, ModelVersion] = {}
    for version in versions:
        chosen.setdefault(version.served_model_name, version)
    return [chosen[name] for name in sorted(chosen)]


class DeploymentServedNames(Protocol):
    """(team id, catalog model slug) -> the names the teams' deployments on a cluster serve under. A model allow-list
    on a key covers them; what deployments serve is the deployments app's to say, and gateway and deployments are
    independent siblings: the caller above both (the gateway reconciler) hands the reader in."""

    def __call__(self, *, cluster_id: int, team_ids: list[int]) -> Mapping[tuple[int, str], set[str]]: ...


def gateway_policy_spec(
    *, policy_id: int, deployment_served_names: DeploymentServedNames, decrypt: bool = True
) -> GatewayPolicySpec | None:
    """The frozen desired gateway policy of one cluster, or None when the policy row is gone. With decrypt=False
    every secret is replaced by a digest (a key by its stored SHA-256, a provider credential by its ciphertext's):
    what the resync fingerprints to tell whether anything changed, without decrypting a single key."""
    policy = ClusterGatewayPolicy.objects.select_related("cluster").filter(pk=policy_id).first()
    if policy is None:
        return None
    cluster = policy.cluster
    now = timezone.now()
    credentials = list(
        Credential.objects.filter(_valid_at(now))
        .select_related("team", "team__quota", "team__gateway_policy")
        .order_by("team__slug", "key_id")
    )
    teams: dict[int, Team] = {}
    keys_by_team: dict[int, list[Credential]] = {}
    for credential in credentials:
        teams[credential.team_id] = credential.team
        keys_by_team.setdefault(credential.team_id, []).append(credential)

    backends = list(provider_backend_list(cluster=cluster))
    backend_by_provider = {backend.provider: backend for backend in backends}
    managed = _managed_versions(set(backend_by_provider))
    managed_names_by_slug: dict[str, set[str]] = {}
    for version in managed:
        managed_names_by_slug.setdefault(version.model.slug, set()).add(version.served_model_name)
    deployment_names = deployment_served_names(cluster_id=cluster.pk, team_ids=list(teams))

    percent = conf.throttle_percent()
    access: list[TeamGatewayAccess] = []
    for team_id, team in sorted(teams.items(), key=lambda item: item[1].slug):
        quota = getattr(team, "quota", None)
        per_minute = quota.tokens_per_minute if quota is not None else 0
        per_day = quota.tokens_per_day if quota is not None else 0
        team_policy = getattr(team, "gateway_policy", None)
        enforcement = team_policy.budget_enforcement if team_policy is not None else BudgetEnforcement.NONE
        throttled = enforcement == BudgetEnforcement.THROTTLE
        if throttled:
            per_minute = max(1, per_minute * percent // 100)
            per_day = max(1, per_day * percent // 100)
        blocked = ""
        if team.status != Team.Status.ACTIVE:
            blocked = "suspended"
        elif enforcement == BudgetEnforcement.BLOCK:
            blocked = "budget"
        keys = []
        for credential in keys_by_team[team_id]:
            names: tuple[str, ...] | None = None
            if credential.allowed_models:
                allowed_names: set[str] = set()
                for slug in credential.allowed_models:
                    allowed_names |= managed_names_by_slug.get(slug, set())
                    allowed_names |= deployment_names.get((team_id, slug), set())
                names = tuple(sorted(allowed_names))
            keys.append(
                GatewayKey(
                    client_id=client_id_of(team_slug=team.slug, key_id=credential.key_id),
                    key_id=credential.key_id,
                    key=decrypt_secret(credential.key_ciphertext) if decrypt else credential.key_hash,
                    allowed_model_names=names,
                )
            )
        access.append(
            TeamGatewayAccess(
                team_slug=team.slug,
                keys=tuple(keys),
                tokens_per_minute=per_minute,
                tokens_per_day=per_day,
                blocked_reason=blocked,
                throttled=throttled,
            )
        )

    visible_to: dict[str, set[int]] = {}
    all_visible: set[str] = set()
    for model in CatalogModel.objects.filter(slug__in={version.model.slug for version in managed}).prefetch_related(
        "visible_to_teams"
    ):
        if model.visibility == Visibility.ALL:
            all_visible.add(model.slug)
        else:
            visible_to[model.slug] = {team.pk for team in model.visible_to_teams.all()}
    routes = []
    for version in managed:
        slug = version.model.slug
        allowed: list[tuple[str, tuple[str, ...] | None]] = []
        for team_id, team in sorted(teams.items(), key=lambda item: item[1].slug):
            if slug not in all_visible and team_id not in visible_to.get(slug, set()):
                continue
            team_keys = keys_by_team[team_id]
            if all(not key.allowed_models or slug in key.allowed_models for key in team_keys):
                allowed.append((team.slug, None))
                continue
            key_ids = tuple(key.key_id for key in team_keys if not key.allowed_models or slug in key.allowed_models)
            if key_ids:
                allowed.append((team.slug, key_ids))
        routes.append(
            ManagedModelRoute(
                model_slug=slug,
                served_model_name=version.served_model_name,
                provider_model_id=version.provider_model_id,
                backend_name=backend_by_provider[version.provider].name,
                allowed=tuple(allowed),
            )
        )
    providers = tuple(
        ProviderBackendSpec(
            name=backend.name,
            provider=backend.provider,
            hostname=backend.hostname,
            port=backend.port,
            region=backend.region,
            api_version=backend.api_version,
            credential=_provider_credential(backend.credential_ciphertext, decrypt=decrypt),
        )
        for backend in backends
    )
    return GatewayPolicySpec(
        policy_id=policy.pk,
        generation=policy.generation,
        cluster=cluster_selectors.cluster_contract(cluster_id=cluster.pk),
        teams=tuple(access),
        providers=providers,
        managed_routes=tuple(routes),
    )


def gateway_policies_by_cluster_id() -> dict[int, ClusterGatewayPolicy]:
    """Every cluster's gateway policy (its phase and message), by cluster id: one query for the fleet page."""
    return {policy.cluster_id: policy for policy in ClusterGatewayPolicy.objects.all()}
