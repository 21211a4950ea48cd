"""Reads of the gateway app: credentials by team and by client id, and the desired gateway policy of a cluster."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from django.db.models import F, Q, QuerySet
from django.utils import timezone

from catalog import selectors as catalog_selectors
from portal.clusters import selectors as cluster_selectors
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
    ClusterGatewayPolicy,
    Credential,
    CredentialReveal,
    ProviderBackend,
    TeamGatewayPolicy,
)
from portal.tenancy import selectors as tenancy_selectors
from portal.tenancy.contracts import BudgetEnforcement

if TYPE_CHECKING:  # types only: clusters and teams are read through their apps' selectors
    from portal.clusters.models import Cluster
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
    return catalog_selectors.model_slugs_usable_by_team(team_id=team.pk)


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


@dataclass(frozen=True)
class EffectiveLimits:
    """A team's token limits at the gateway after its budget enforcement and its status."""

    tokens_per_minute: int
    tokens_per_day: int
    throttled: bool
    # "suspended" (team status) or "budget" (budget enforcement says block); empty when not blocked.
    blocked_reason: str

    @property
    def admitted_per_minute(self) -> int:
        return 0 if self.blocked_reason else self.tokens_per_minute

    @property
    def admitted_per_day(self) -> int:
        return 0 if self.blocked_reason else self.tokens_per_day


def team_effective_limits(
    *, tokens_per_minute: int, tokens_per_day: int, enforcement: str, team_active: bool, throttle_percent: int
) -> EffectiveLimits:
    """The one rule of a team's effective limits: throttling leaves throttle_percent of its quota (at least 1
    token), a suspended team is blocked whatever its budget, and a budget that blocks blocks."""
    throttled = enforcement == BudgetEnforcement.THROTTLE
    if throttled:
        tokens_per_minute = max(1, tokens_per_minute * throttle_percent // 100)
        tokens_per_day = max(1, tokens_per_day * throttle_percent // 100)
    return EffectiveLimits(
        tokens_per_minute=tokens_per_minute,
        tokens_per_day=tokens_per_day,
        throttled=throttled,
        blocked_reason=blocked_reason(enforcement=enforcement, team_active=team_active),
    )


def blocked_reason(*, enforcement: str, team_active: bool) -> str:
    """Why the gateway admits none of a team's traffic: "suspended" (its status, whatever its budget), "budget"
    (its budget enforcement blocks), or empty when it is not blocked."""
    if not team_active:
        return "suspended"
    return "budget" if enforcement == BudgetEnforcement.BLOCK else ""


def _team_limits(team: Team, *, throttle_percent: int) -> EffectiveLimits:
    """Effective limits of a team loaded with its quota and gateway policy (select_related)."""
    quota = getattr(team, "quota", None)
    policy = getattr(team, "gateway_policy", None)
    return team_effective_limits(
        tokens_per_minute=quota.tokens_per_minute if quota is not None else 0,
        tokens_per_day=quota.tokens_per_day if quota is not None else 0,
        enforcement=policy.budget_enforcement if policy is not None else BudgetEnforcement.NONE,
        team_active=tenancy_selectors.team_is_active(team),
        throttle_percent=throttle_percent,
    )


def team_budget_enforcement(*, team_id: int) -> BudgetEnforcement:
    """The budget enforcement that applies to the team now (its one record: the team's gateway policy)."""
    value = TeamGatewayPolicy.objects.filter(team_id=team_id).values_list("budget_enforcement", flat=True).first()
    return BudgetEnforcement(value) if value is not None else BudgetEnforcement.NONE


def team_budget_enforcements(*, team_ids: Iterable[int] | None = None) -> dict[int, BudgetEnforcement]:
    """Teams whose budget enforcement is throttle or block now, with it (among team_ids, when given)."""
    policies = TeamGatewayPolicy.objects.exclude(budget_enforcement=BudgetEnforcement.NONE)
    if team_ids is not None:
        policies = policies.filter(team_id__in=list(team_ids))
    return {
        team_id: BudgetEnforcement(value) for team_id, value in policies.values_list("team_id", "budget_enforcement")
    }


def team_gateway_state(*, team: Team) -> TeamGatewayState:
    """The team's effective gateway limits: its quota, lowered when throttled, zero when blocked."""
    policy = TeamGatewayPolicy.objects.filter(team=team).first()
    quota = getattr(team, "quota", None)
    limits = team_effective_limits(
        tokens_per_minute=quota.tokens_per_minute if quota is not None else 0,
        tokens_per_day=quota.tokens_per_day if quota is not None else 0,
        enforcement=policy.budget_enforcement if policy is not None else BudgetEnforcement.NONE,
        team_active=tenancy_selectors.team_is_active(team),
        throttle_percent=conf.throttle_percent(),
    )
    return TeamGatewayState(
        team_slug=team.slug,
        budget_enforcement=policy.budget_enforcement if policy is not None else BudgetEnforcement.NONE,
        reason=policy.reason if policy is not None else "",
        blocked_reason=limits.blocked_reason,
        tokens_per_minute=limits.admitted_per_minute,
        tokens_per_day=limits.admitted_per_day,
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
    inactive = tenancy_selectors.team_ids_inactive(among=team_ids)
    enforced = team_budget_enforcements(team_ids=team_ids)
    blocked = {
        team_id
        for team_id in team_ids
        if blocked_reason(
            enforcement=enforced.get(team_id, BudgetEnforcement.NONE), team_active=team_id not in inactive
        )
    }
    restricted = current.exclude(allowed_models=[]).exclude(team_id__in=blocked).count()
    return 2 * len(team_ids - blocked) + len(blocked) + restricted + extra_restricted_keys


def _provider_credential(ciphertext: str, *, decrypt: bool) -> str:
    if not ciphertext:
        return ""
    return decrypt_secret(ciphertext) if decrypt else hashlib.sha256(ciphertext.encode()).hexdigest()


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
    managed = catalog_selectors.managed_versions_in_service(providers=set(backend_by_provider))
    managed_names_by_slug: dict[str, set[str]] = {}
    for version in managed:
        managed_names_by_slug.setdefault(version.model_slug, set()).add(version.served_model_name)
    deployment_names = deployment_served_names(cluster_id=cluster.pk, team_ids=list(teams))

    percent = conf.throttle_percent()
    access: list[TeamGatewayAccess] = []
    for team_id, team in sorted(teams.items(), key=lambda item: item[1].slug):
        limits = _team_limits(team, throttle_percent=percent)
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
                tokens_per_minute=limits.tokens_per_minute,
                tokens_per_day=limits.tokens_per_day,
                blocked_reason=limits.blocked_reason,
                throttled=limits.throttled,
            )
        )

    visibility = catalog_selectors.model_visibility(slugs={version.model_slug for version in managed})
    routes = []
    for version in managed:
        slug = version.model_slug
        shown_to = visibility.get(slug, frozenset())
        allowed: list[tuple[str, tuple[str, ...] | None]] = []
        for team_id, team in sorted(teams.items(), key=lambda item: item[1].slug):
            if shown_to is not None and team_id not in shown_to:
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
