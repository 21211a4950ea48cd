"""What the gateway app hands to other apps and to workers: frozen, Django-free values."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from portal.clusters.contracts import ClusterContract

# Envoy Gateway 1.9: rules in one BackendTrafficPolicy's global rate limit.
MAX_RATE_LIMIT_RULES = 256


@dataclass(frozen=True)
class TeamKeyRoutes:
    """Which of a team's current keys a route to one of its deployments admits, by catalog model: None when every
    key may call the model, else the key ids that may (possibly none). `by_model` holds the models some key's
    allow-list names; every other model's route admits `others`."""

    by_model: tuple[tuple[str, tuple[str, ...] | None], ...]
    others: tuple[str, ...] | None

    def admitted(self, model_slug: str) -> tuple[str, ...] | None:
        return dict(self.by_model).get(model_slug, self.others)

    def named_models(self) -> set[str]:
        return {slug for slug, _ in self.by_model}


@dataclass(frozen=True)
class CredentialRef:
    """Who a gateway client id belongs to; resolves revoked, expired and rotated-out keys too."""

    credential_id: int
    key_id: str
    team_id: int
    team_slug: str
    name: str
    client_id: str
    revoked_at: datetime | None = None
    expires_at: datetime | None = None


@dataclass(frozen=True)
class GatewayKey:
    """One key the gateway accepts: client id and the key value (decrypted only for the worker)."""

    client_id: str
    key_id: str
    key: str = field(repr=False)
    # Model names (x-ai-eg-model values) this key may call on this cluster; None: every model of its team.
    allowed_model_names: tuple[str, ...] | None = None


@dataclass(frozen=True)
class TeamGatewayAccess:
    team_slug: str
    keys: tuple[GatewayKey, ...]
    tokens_per_minute: int
    tokens_per_day: int
    # "suspended" (team status) or "budget" (budget policy says block); empty when not blocked.
    blocked_reason: str = ""
    throttled: bool = False


@dataclass(frozen=True)
class ProviderBackendSpec:
    name: str
    provider: str  # openai | anthropic | aws-bedrock | azure-openai
    hostname: str
    port: int
    region: str
    api_version: str
    credential: str = field(repr=False, default="")


@dataclass(frozen=True)
class ManagedModelRoute:
    """A catalog managed model served through a provider backend, and who may call it."""

    model_slug: str
    served_model_name: str
    provider_model_id: str
    backend_name: str
    # Allowed callers: team slug -> key ids (None: every key of the team).
    allowed: tuple[tuple[str, tuple[str, ...] | None], ...]


@dataclass(frozen=True)
class GatewayPolicySpec:
    """Everything one cluster's gateway policy is rendered from."""

    policy_id: int
    generation: int
    cluster: ClusterContract
    teams: tuple[TeamGatewayAccess, ...]
    providers: tuple[ProviderBackendSpec, ...]
    managed_routes: tuple[ManagedModelRoute, ...]

    def __repr__(self) -> str:  # keys and provider credentials stay out of logs
        return (
            f"GatewayPolicySpec(cluster={self.cluster.name!r}, generation={self.generation}, "
            f"teams={len(self.teams)}, providers={len(self.providers)}, routes={len(self.managed_routes)})"
        )


@dataclass(frozen=True)
class TeamGatewayState:
    """What the gateway enforces for a team now, as members see it."""

    team_slug: str
    budget_enforcement: str
    reason: str
    blocked_reason: str
    tokens_per_minute: int
    tokens_per_day: int
    current_keys: int
