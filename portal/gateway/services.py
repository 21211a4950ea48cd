"""Writes of the gateway app: issue, rotate and revoke team API keys, one-time reveal links, budget enforcement
on the team's gateway policy, provider backends, and the gateway reconciler's status records.

Every change that alters what a gateway should enforce bumps the generation of the affected cluster gateway
policies and, on commit, nudges their reconcile by task name (ids only)."""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from celery import current_app
from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone

from portal.clusters import selectors as cluster_selectors
from portal.core.audit import audit_record
from portal.core.encryption import decrypt_secret, encrypt_secret, reencrypt_secret
from portal.core.errors import Conflict, FieldProblem, Gone, NotFound, ValidationFailed
from portal.gateway import conf, selectors
from portal.gateway.models import (
    PROVIDER_BACKEND_NAME_PATTERN,
    ClusterGatewayPolicy,
    Credential,
    CredentialReveal,
    ProviderBackend,
    ProviderKind,
    TeamGatewayPolicy,
)
from portal.tenancy import selectors as tenancy_selectors
from portal.tenancy.contracts import BudgetEnforcement

if TYPE_CHECKING:  # types only: other apps are read through their selectors
    from portal.clusters.models import Cluster
    from portal.tenancy.models import Team, User

logger = logging.getLogger(__name__)

RECONCILE_TASK = "gateway.reconcile"
KEY_PREFIX = "gpk"  # "gateway portal key": recognisable by secret scanners and in logs that must not hold it
_KEY_SECRET_BYTES = 32
CREDENTIAL_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,99}$")
# pg_advisory_xact_lock key serialising the rule-room check with the insert it guards (any constant of our own).
RATE_LIMIT_ROOM_LOCK = 0x6770_726F_6F6D  # "gproom"
HOSTNAME_PATTERN = re.compile(
    r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*$"
)


class RevealGone(Gone):
    """The reveal link was used already, has expired, or its key no longer works (HTTP 410)."""

    code = "reveal_gone"
    title = "Gone"


@dataclass(frozen=True)
class IssuedCredential:
    """A new key: the row and its ids, and the plaintext key, which exists only in this value."""

    credential: Credential
    credential_id: int
    key_id: str
    client_id: str
    key: str

    def __repr__(self) -> str:
        return f"IssuedCredential(credential_id={self.credential_id}, client_id={self.client_id!r})"


@dataclass(frozen=True)
class RevealLink:
    token: str
    expires_at: datetime

    def __repr__(self) -> str:
        return f"RevealLink(expires_at={self.expires_at.isoformat()})"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _new_key() -> tuple[str, str]:
    """(key_id, key): the key looks like gpk_<12 hex key id>_<43 chars secret>."""
    key_id = secrets.token_hex(6)
    return key_id, f"{KEY_PREFIX}_{key_id}_{secrets.token_urlsafe(_KEY_SECRET_BYTES)}"


def _credential_snapshot(credential: Credential) -> dict[str, Any]:
    return {
        "name": credential.name,
        "key_prefix": credential.key_prefix,
        "client_id": selectors.client_id_of(team_slug=credential.team.slug, key_id=credential.key_id),
        "allowed_models": list(credential.allowed_models),
        "expires_at": credential.expires_at.isoformat() if credential.expires_at else None,
        "revoked_at": credential.revoked_at.isoformat() if credential.revoked_at else None,
        "rotated_at": credential.rotated_at.isoformat() if credential.rotated_at else None,
    }


# ---------------------------------------------------------------------------------------------- nudges


def _send_after_commit(task: str, object_id: int) -> None:
    def send() -> None:
        try:
            current_app.send_task(task, args=[object_id])
        except Exception as error:  # the row is the outbox: the periodic resync picks it up (one line, no traceback)
            logger.warning("could not enqueue %s for %s: %s", task, object_id, error)

    transaction.on_commit(send)


def gateway_policies_bump(*, cluster_ids: Iterable[int] | None = None) -> list[int]:
    """Bump the generation of the gateway policy of the given clusters (all when None), creating missing
    rows, and nudge their reconcile on commit. Returns the policy ids."""
    ids = cluster_selectors.cluster_ids(among=cluster_ids)
    existing = set(ClusterGatewayPolicy.objects.filter(cluster_id__in=ids).values_list("cluster_id", flat=True))
    ClusterGatewayPolicy.objects.bulk_create(
        [ClusterGatewayPolicy(cluster_id=cluster_id) for cluster_id in ids if cluster_id not in existing],
        ignore_conflicts=True,
    )
    policies = ClusterGatewayPolicy.objects.filter(cluster_id__in=ids)
    policies.filter(cluster_id__in=existing).update(generation=F("generation") + 1)
    policy_ids = list(policies.order_by("pk").values_list("pk", flat=True))
    for policy_id in policy_ids:
        _send_after_commit(RECONCILE_TASK, policy_id)
    return policy_ids


# Per-key allow-lists are part of the team's deployment routes (the client ids each route matches). Deployments are
# the deployments app's, an independent sibling: a key change names the task that marks them dirty, as apps nudge
# workers (ids and slugs only; a lost message costs latency, never correctness: the deployments resync finds routes
# that are no longer what was applied, and marks those dirty the same way).
KEY_ROUTES_CHANGED_TASK = "deployments.team_key_routes_changed"


@contextmanager
def _team_key_routes_watch(team: Team, reason: str) -> Iterator[None]:
    """Around a change of the team's keys: when it changes what some route admits, the deployments of the models
    whose routes changed are named to the deployments app on commit (KEY_ROUTES_CHANGED_TASK)."""
    before = selectors.team_key_routes(team_id=team.pk)
    yield
    after = selectors.team_key_routes(team_id=team.pk)
    named = sorted(before.named_models() | after.named_models())
    changed = [slug for slug in named if before.admitted(slug) != after.admitted(slug)]
    # The routes of models no allow-list names (before or after) all admit `others`: they change together.
    other_models_except = named if before.others != after.others else None
    if not changed and other_models_except is None:
        return
    args = [team.pk, changed, other_models_except, reason]

    def send() -> None:
        try:
            current_app.send_task(KEY_ROUTES_CHANGED_TASK, args=args)
        except Exception as error:  # an expected condition (the broker is down): one line, no traceback
            logger.warning("could not enqueue %s for team %s: %s", KEY_ROUTES_CHANGED_TASK, team.pk, error)

    transaction.on_commit(send)


def _check_rate_limit_room(*, team: Team, adding_restricted_key: bool) -> None:
    """Refuse a key that would push a cluster's token-limit policy over the upstream rule limit: a clear error
    now, rather than a policy the reconciler has to withhold later. Must run inside the transaction that inserts
    the key: the transaction-scoped advisory lock makes concurrent check-then-insert pairs take turns, so two
    keys cannot both see the last free rule. (Un-suspending a team or lifting a budget block can still push the
    policy over; the reconciler then withholds only the token-limit policy and says so.)"""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [RATE_LIMIT_ROOM_LOCK])
    limit = conf.max_rate_limit_rules()
    needed = selectors.rate_limit_rules_needed(extra_team=team, extra_restricted_keys=int(adding_restricted_key))
    if needed > limit:
        raise Conflict(
            f"The gateway's token-limit policy would need {needed} rules; a BackendTrafficPolicy holds at most "
            f"{limit} (rules: 2 per team, 1 per blocked team, 1 per key with a model allow-list)",
            code="gateway_rule_limit",
        )


# ---------------------------------------------------------------------------------------------- credentials


def _validate_credential_input(
    *, team: Team, name: str, allowed_models: Iterable[str], expires_at: datetime | None
) -> tuple[str, list[str]]:
    problems: list[FieldProblem] = []
    clean_name = (name or "").strip()
    if not CREDENTIAL_NAME_PATTERN.match(clean_name):
        problems.append(
            FieldProblem(
                "name",
                "1 to 100 characters: letters, digits, spaces, '.', '_' or '-', starting with a letter or digit",
                "invalid_name",
            )
        )
    models = sorted(set(allowed_models))
    unknown = sorted(set(models) - selectors.team_usable_model_slugs(team=team))
    if unknown:
        problems.append(
            FieldProblem(
                "allowed_models",
                f"not models this team may use: {', '.join(unknown)}",
                "model_not_allowed",
            )
        )
    if expires_at is not None and (expires_at.tzinfo is None or expires_at <= timezone.now()):
        problems.append(FieldProblem("expires_at", "must be a future date-time with a time zone", "in_the_past"))
    if problems:
        raise ValidationFailed(problems)
    return clean_name, models


def _create_credential(
    *, actor: User | None, team: Team, name: str, allowed_models: list[str], expires_at: datetime | None
) -> IssuedCredential:
    for _ in range(5):
        key_id, key = _new_key()
        if not Credential.objects.filter(key_id=key_id).exists():
            break
    else:  # pragma: no cover - 48 random bits colliding five times in a row
        raise Conflict("Could not allocate a unique key id; try again", code="key_id_exhausted")
    try:
        with transaction.atomic():
            credential = Credential.objects.create(
                team=team,
                name=name,
                key_id=key_id,
                key_prefix=f"{KEY_PREFIX}_{key_id}",
                key_hash=hash_key(key),
                key_ciphertext=encrypt_secret(key),
                allowed_models=allowed_models,
                expires_at=expires_at,
                created_by=actor if actor is not None and actor.pk is not None else None,
            )
    except IntegrityError:
        raise Conflict(
            f"Team '{team.slug}' already has a current credential named '{name}'", code="credential_name_taken"
        ) from None
    return IssuedCredential(
        credential=credential,
        credential_id=credential.pk,
        key_id=key_id,
        client_id=selectors.client_id_of(team_slug=team.slug, key_id=key_id),
        key=key,
    )


def _retire_expired_namesakes(*, team: Team, name: str) -> list[Credential]:
    """An expired key no longer holds its name: mark it as replaced (rotated_at, as the old key of a rotation;
    its state stays 'expired'), so the name is free for the key about to be created in the same transaction."""
    now = timezone.now()
    expired = list(
        Credential.objects.select_for_update()
        .select_related("team")
        .filter(team=team, name=name, revoked_at__isnull=True, rotated_at__isnull=True, expires_at__lte=now)
    )
    for credential in expired:
        credential.rotated_at = now
        credential.save(update_fields=["rotated_at", "updated_at"])
    return expired


@transaction.atomic
def credential_issue(
    *,
    actor: User | None,
    team: Team,
    name: str,
    allowed_models: Iterable[str] = (),
    expires_at: datetime | None = None,
) -> IssuedCredential:
    """Issue a key for a team; the plaintext is in the result only. It works at the gateway after the next
    reconcile of each cluster's gateway policy."""
    clean_name, models = _validate_credential_input(
        team=team, name=name, allowed_models=allowed_models, expires_at=expires_at
    )
    if not tenancy_selectors.team_is_active(team):
        raise Conflict(f"Team '{team.slug}' is suspended: no new keys", code="team_suspended")
    _check_rate_limit_room(team=team, adding_restricted_key=bool(models))
    with _team_key_routes_watch(team, f"key '{clean_name}' of team {team.slug} issued"):
        expired = _retire_expired_namesakes(team=team, name=clean_name)
        issued = _create_credential(
            actor=actor, team=team, name=clean_name, allowed_models=models, expires_at=expires_at
        )
    for old in expired:
        old.replaced_by = issued.credential
        old.save(update_fields=["replaced_by", "updated_at"])
        audit_record(
            actor=actor,
            action="credential.retire",
            target_type="credential",
            target_id=old.pk,
            target_label=f"{team.slug}/{clean_name}",
            team_slug=team.slug,
            before={"state": "expired"},
            after=_credential_snapshot(old) | {"replaced_by": issued.credential_id},
        )
    audit_record(
        actor=actor,
        action="credential.issue",
        target_type="credential",
        target_id=issued.credential_id,
        target_label=f"{team.slug}/{clean_name}",
        team_slug=team.slug,
        after=_credential_snapshot(issued.credential),
    )
    gateway_policies_bump()
    return issued


@transaction.atomic
def credential_rotate(
    *,
    actor: User | None,
    credential: Credential,
    overlap: timedelta | None = None,
    expires_at: datetime | None = None,
) -> IssuedCredential:
    """A new key (new key id, same name and allow-list); the old one keeps working for `overlap`, then stops."""
    locked = Credential.objects.select_for_update().select_related("team").get(pk=credential.pk)
    now = timezone.now()
    state = selectors.credential_state(locked, now=now)
    if state != "active":
        raise Conflict(f"Only an active credential can be rotated; this one is {state}", code="credential_not_active")
    if not tenancy_selectors.team_is_active(locked.team):
        raise Conflict(f"Team '{locked.team.slug}' is suspended: no new keys", code="team_suspended")
    window = conf.default_rotation_overlap() if overlap is None else overlap
    if window < timedelta(0) or window > conf.max_rotation_overlap():
        raise ValidationFailed.for_field(
            "overlap_seconds",
            f"must be between 0 and {int(conf.max_rotation_overlap().total_seconds())} seconds",
            "out_of_range",
        )
    new_expiry = expires_at if expires_at is not None else locked.expires_at
    if expires_at is not None and (expires_at.tzinfo is None or expires_at <= now):
        raise ValidationFailed.for_field("expires_at", "must be a future date-time with a time zone", "in_the_past")
    # The old key stays current through the overlap: a restricted key's rule is needed twice until it expires.
    _check_rate_limit_room(team=locked.team, adding_restricted_key=bool(locked.allowed_models))
    before = _credential_snapshot(locked)
    with _team_key_routes_watch(locked.team, f"key '{locked.name}' of team {locked.team.slug} rotated"):
        old_expiry = now + window
        locked.rotated_at = now
        if locked.expires_at is None or locked.expires_at > old_expiry:
            locked.expires_at = old_expiry
        locked.save(update_fields=["rotated_at", "expires_at", "updated_at"])
        issued = _create_credential(
            actor=actor,
            team=locked.team,
            name=locked.name,
            allowed_models=list(locked.allowed_models),
            expires_at=new_expiry if new_expiry is None or new_expiry > now else None,
        )
        locked.replaced_by = issued.credential
        locked.save(update_fields=["replaced_by", "updated_at"])
    audit_record(
        actor=actor,
        action="credential.rotate",
        target_type="credential",
        target_id=locked.pk,
        target_label=f"{locked.team.slug}/{locked.name}",
        team_slug=locked.team.slug,
        before=before,
        after=_credential_snapshot(locked) | {"replaced_by": issued.credential_id},
    )
    audit_record(
        actor=actor,
        action="credential.issue",
        target_type="credential",
        target_id=issued.credential_id,
        target_label=f"{locked.team.slug}/{locked.name}",
        team_slug=locked.team.slug,
        after=_credential_snapshot(issued.credential) | {"replaces": locked.pk},
    )
    gateway_policies_bump()
    return issued


@transaction.atomic
def credential_revoke(*, actor: User | None, credential: Credential) -> Credential:
    """Stop a key at the next reconcile; revoking a revoked key changes nothing."""
    locked = Credential.objects.select_for_update().select_related("team").get(pk=credential.pk)
    if locked.revoked_at is not None:
        return locked
    before = _credential_snapshot(locked)
    with _team_key_routes_watch(locked.team, f"key '{locked.name}' of team {locked.team.slug} revoked"):
        locked.revoked_at = timezone.now()
        locked.save(update_fields=["revoked_at", "updated_at"])
    CredentialReveal.objects.filter(credential=locked, revealed_at__isnull=True).delete()
    audit_record(
        actor=actor,
        action="credential.revoke",
        target_type="credential",
        target_id=locked.pk,
        target_label=f"{locked.team.slug}/{locked.name}",
        team_slug=locked.team.slug,
        before=before,
        after=_credential_snapshot(locked),
    )
    gateway_policies_bump()
    return locked


def credential_mark_used(*, last_used: Mapping[int, datetime]) -> None:
    """Advance each credential's last use (from usage events); never moves it backwards. Not audited. One statement
    for all of them (the compactor calls this on every fold, with every credential it folded: one UPDATE each cost
    the compactor about 0.3 ms apiece)."""
    if not last_used:
        return
    ids = sorted(last_used)
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {Credential._meta.db_table} AS c SET last_used_at = u.used_at "  # noqa: S608 (the model's table)
            "FROM unnest(%s::bigint[], %s::timestamptz[]) AS u(id, used_at) "
            "WHERE c.id = u.id AND (c.last_used_at IS NULL OR c.last_used_at < u.used_at)",
            [ids, [last_used[credential_id] for credential_id in ids]],
        )


# ---------------------------------------------------------------------------------------------- reveal links


def _hash_reveal_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@transaction.atomic
def credential_reveal_link_create(*, actor: User, credential: Credential) -> RevealLink:
    """A one-time, short-lived link for the credential's creator to read the key (Backstage shows the link)."""
    token = secrets.token_urlsafe(32)
    expires_at = timezone.now() + conf.reveal_link_lifetime()
    CredentialReveal.objects.create(
        credential=credential, token_hash=_hash_reveal_token(token), created_by=actor, expires_at=expires_at
    )
    audit_record(
        actor=actor,
        action="credential.reveal_link",
        target_type="credential",
        target_id=credential.pk,
        target_label=f"{credential.team.slug}/{credential.name}",
        team_slug=credential.team.slug,
        after={"expires_at": expires_at.isoformat()},
    )
    return RevealLink(token=token, expires_at=expires_at)


def _creator_may_still_manage(reveal: CredentialReveal) -> bool:
    """A link dies with its creator's right to the team's keys (left the team, demoted to viewer)."""
    creator = reveal.created_by
    if creator.is_staff:
        return True
    return tenancy_selectors.member_may_develop(team=reveal.credential.team, user=creator)


def _reveal_consume(found: CredentialReveal, *, actor: User | None, channel: str) -> tuple[Credential, str]:
    reveal = CredentialReveal.objects.select_for_update().select_related("credential__team").get(pk=found.pk)
    now = timezone.now()
    if reveal.revealed_at is not None:
        raise RevealGone("This key was already revealed; rotate the credential for a new one")
    if reveal.expires_at <= now:
        raise RevealGone("This reveal link has expired; rotate the credential for a new key")
    credential = reveal.credential
    if selectors.credential_state(credential, now=now) in ("revoked", "expired"):
        raise RevealGone("The credential no longer works")
    reveal.revealed_at = now
    reveal.save(update_fields=["revealed_at"])
    audit_record(
        actor=actor,
        action="credential.reveal",
        target_type="credential",
        target_id=credential.pk,
        target_label=f"{credential.team.slug}/{credential.name}",
        team_slug=credential.team.slug,
        after={"channel": channel},
    )
    return credential, decrypt_secret(credential.key_ciphertext)


@transaction.atomic
def credential_reveal(*, actor: User, token: str, platform_admin: bool = False) -> tuple[Credential, str]:
    """The key behind a reveal link, once, through the API, for the user who created it while they may still
    manage the team's keys (a developer or admin of the credential's team, or a platform admin): others get
    NotFound, and a used, expired or revoked one RevealGone."""
    found = selectors.credential_reveal_get(token_hash=_hash_reveal_token(token))
    if found is None or found.created_by_id != actor.pk:
        raise NotFound("No such reveal link", code="reveal_not_found")
    if not platform_admin and not tenancy_selectors.member_may_develop(team=found.credential.team, user=actor):
        # Left the team or demoted since the link was made: the link is no longer theirs to use.
        raise NotFound("No such reveal link", code="reveal_not_found")
    return _reveal_consume(found, actor=actor, channel="api")


def credential_reveal_preview(*, token: str) -> CredentialReveal:
    """What a reveal link is for (team, credential name, expiry), without using it: the page a browser opens
    from Backstage's task output shows this, and reveals on an explicit confirmation."""
    found = selectors.credential_reveal_get(token_hash=_hash_reveal_token(token))
    if found is None or not _creator_may_still_manage(found):
        raise NotFound("No such reveal link", code="reveal_not_found")
    return found


@transaction.atomic
def credential_reveal_by_link(*, token: str) -> tuple[Credential, str]:
    """The key behind a reveal link, once, for whoever holds the link (a browser has no portal identity): the
    link is the credential, as a password-reset link is. It is random (256 bits), short-lived, single-use and
    dies with its creator's right to the team's keys; a second use answers RevealGone, so a link opened by
    someone else shows its owner that the key must be revoked."""
    found = credential_reveal_preview(token=token)
    return _reveal_consume(found, actor=None, channel="link")


# ---------------------------------------------------------------------------------------------- team policy


@transaction.atomic
def team_budget_enforcement_set(*, actor: User | None, team: Team, enforcement: str, reason: str) -> bool:
    """Record what budget enforcement says for a team (none, throttle, block) on its gateway policy, the one record
    of it; when it changes, every cluster's gateway policy is re-rendered. Returns whether anything changed."""
    known = [value.value for value in BudgetEnforcement]
    if enforcement not in known:
        raise ValidationFailed.for_field("enforcement", f"must be one of {', '.join(known)}", "invalid_choice")
    TeamGatewayPolicy.objects.get_or_create(team=team)
    policy = TeamGatewayPolicy.objects.select_for_update().get(team=team)
    if policy.budget_enforcement == enforcement:
        return False
    before = {"budget_enforcement": policy.budget_enforcement, "reason": policy.reason}
    policy.budget_enforcement = enforcement
    policy.reason = (reason or "")[:500]
    policy.generation = F("generation") + 1
    policy.save(update_fields=["budget_enforcement", "reason", "generation", "updated_at"])
    audit_record(
        actor=actor,
        action="team.gateway_enforcement",
        target_type="team",
        target_id=team.pk,
        target_label=team.slug,
        team_slug=team.slug,
        before=before,
        after={"budget_enforcement": enforcement, "reason": policy.reason},
    )
    gateway_policies_bump()
    return True


# ---------------------------------------------------------------------------------------------- providers


def _provider_snapshot(backend: ProviderBackend) -> dict[str, Any]:
    return {
        "cluster": backend.cluster.name,
        "name": backend.name,
        "provider": backend.provider,
        "hostname": backend.hostname,
        "port": backend.port,
        "region": backend.region,
        "api_version": backend.api_version,
        "credential_set": bool(backend.credential_ciphertext),
    }


def _validate_provider_values(values: Mapping[str, Any]) -> None:
    problems: list[FieldProblem] = []
    provider = values.get("provider")
    if "name" in values and not re.match(PROVIDER_BACKEND_NAME_PATTERN, str(values["name"] or "")):
        problems.append(FieldProblem("name", "must be a DNS label of at most 40 characters", "invalid_name"))
    if "provider" in values and provider not in ProviderKind.values:
        problems.append(FieldProblem("provider", f"must be one of {', '.join(ProviderKind.values)}", "invalid_choice"))
    if "hostname" in values and not HOSTNAME_PATTERN.match(str(values["hostname"] or "")):
        problems.append(FieldProblem("hostname", "must be a DNS name, e.g. api.openai.com", "invalid_hostname"))
    if "port" in values and not (isinstance(values["port"], int) and 1 <= values["port"] <= 65535):
        problems.append(FieldProblem("port", "must be between 1 and 65535", "out_of_range"))
    if problems:
        raise ValidationFailed(problems)


def _check_provider_requirements(backend: ProviderBackend) -> None:
    problems: list[FieldProblem] = []
    if backend.provider == ProviderKind.AWS_BEDROCK and not backend.region:
        problems.append(FieldProblem("region", "AWS Bedrock needs the region", "required"))
    if backend.provider == ProviderKind.AZURE_OPENAI and not backend.api_version:
        problems.append(FieldProblem("api_version", "Azure OpenAI needs the API version", "required"))
    if backend.provider != ProviderKind.AWS_BEDROCK and not backend.credential_ciphertext:
        problems.append(FieldProblem("credential", "this provider needs an API key", "required"))
    if problems:
        raise ValidationFailed(problems)


@transaction.atomic
def provider_backend_create(*, actor: User | None, cluster: Cluster, values: Mapping[str, Any]) -> ProviderBackend:
    _validate_provider_values(values)
    credential = values.get("credential") or ""
    backend = ProviderBackend(
        cluster=cluster,
        name=values["name"],
        provider=values["provider"],
        hostname=values["hostname"],
        port=values.get("port") or 443,
        region=values.get("region") or "",
        api_version=values.get("api_version") or "",
        credential_ciphertext=encrypt_secret(credential) if credential else "",
    )
    _check_provider_requirements(backend)
    try:
        with transaction.atomic():
            backend.save()
    except IntegrityError:
        raise Conflict(
            f"Cluster '{cluster.name}' already has a provider backend named '{backend.name}' or for '{backend.provider}'",
            code="provider_backend_exists",
        ) from None
    audit_record(
        actor=actor,
        action="provider_backend.create",
        target_type="provider_backend",
        target_id=backend.pk,
        target_label=f"{cluster.name}/{backend.name}",
        after=_provider_snapshot(backend),
    )
    gateway_policies_bump(cluster_ids=[cluster.pk])
    return backend


@transaction.atomic
def provider_backend_update(
    *, actor: User | None, backend: ProviderBackend, changes: Mapping[str, Any]
) -> ProviderBackend:
    _validate_provider_values(changes)
    locked = ProviderBackend.objects.select_for_update().select_related("cluster").get(pk=backend.pk)
    before = _provider_snapshot(locked)
    for field_name in ("hostname", "port", "region", "api_version"):
        if field_name in changes:
            setattr(locked, field_name, changes[field_name] if changes[field_name] is not None else "")
    if changes.get("credential"):
        locked.credential_ciphertext = encrypt_secret(changes["credential"])
    _check_provider_requirements(locked)
    locked.save()
    after = _provider_snapshot(locked)
    if after != before or changes.get("credential"):
        audit_record(
            actor=actor,
            action="provider_backend.update",
            target_type="provider_backend",
            target_id=locked.pk,
            target_label=f"{locked.cluster.name}/{locked.name}",
            before=before,
            after=after | {"credential_changed": bool(changes.get("credential"))},
        )
        gateway_policies_bump(cluster_ids=[locked.cluster_id])
    return locked


@transaction.atomic
def provider_backend_delete(*, actor: User | None, backend: ProviderBackend) -> None:
    before = _provider_snapshot(backend)
    cluster_id = backend.cluster_id
    backend.delete()
    audit_record(
        actor=actor,
        action="provider_backend.delete",
        target_type="provider_backend",
        target_id=before["name"],
        target_label=f"{before['cluster']}/{before['name']}",
        before=before,
    )
    gateway_policies_bump(cluster_ids=[cluster_id])


# ---------------------------------------------------------------------------------------------- reconciler status


def gateway_policy_status_record(
    *,
    policy_id: int,
    generation: int,
    fingerprint: str,
    phase: str,
    message: str,
    reconciled_at: datetime,
    applied_manifests: list[dict[str, Any]] | None,
    observed: bool = True,
) -> bool:
    """Record what the reconciler applied, only if the generation it rendered is still current (or newer than
    what was observed). With `observed=False` (the pass failed) the generation is not recorded as observed, so
    the resync keeps retrying it. The fingerprint is kept for Ready and Degraded passes (Degraded: everything
    applied but what breaks an upstream limit, which retrying the same content cannot fix). Writes nothing when
    nothing changed. Returns whether a row was written."""
    policy = ClusterGatewayPolicy.objects.filter(pk=policy_id).first()
    if policy is None or generation > policy.generation:
        return False
    changes: dict[str, Any] = {}
    if observed and generation > policy.observed_generation:
        changes["observed_generation"] = generation
    if phase in ("Ready", "Degraded") and fingerprint != policy.applied_fingerprint:
        changes["applied_fingerprint"] = fingerprint
    if phase != policy.phase:
        changes["phase"] = phase
    if message != policy.message:
        changes["message"] = message
    if applied_manifests is not None and applied_manifests != policy.applied_manifests:
        changes["applied_manifests"] = applied_manifests
    if not changes:
        return False
    changes["last_reconciled_at"] = reconciled_at
    return bool(
        ClusterGatewayPolicy.objects.filter(pk=policy_id, observed_generation__lte=generation).update(
            **changes, updated_at=timezone.now()
        )
    )


def gateway_policies_bump_drifted(*, policy_ids: Iterable[int]) -> list[int]:
    """The resync found these policies' desired content differs from what was applied (a change made elsewhere:
    quota, team suspension, key expiry, catalog): bump their generation, so `observed_generation < generation`
    shows the change is pending until a reconcile applies it. Policies already behind are left as they are.
    Returns the ids bumped."""
    in_sync = ClusterGatewayPolicy.objects.filter(pk__in=list(policy_ids), observed_generation=F("generation"))
    bumped = list(in_sync.order_by("pk").values_list("pk", flat=True))
    ClusterGatewayPolicy.objects.filter(pk__in=bumped).update(generation=F("generation") + 1, updated_at=timezone.now())
    return bumped


def gateway_policies_ensure() -> int:
    """A gateway policy row for every cluster (new clusters get one at the next resync). Returns rows created."""
    with_policy = set(ClusterGatewayPolicy.objects.values_list("cluster_id", flat=True))
    missing = [cluster_id for cluster_id in cluster_selectors.cluster_ids() if cluster_id not in with_policy]
    created = ClusterGatewayPolicy.objects.bulk_create(
        [ClusterGatewayPolicy(cluster_id=cluster_id) for cluster_id in missing], ignore_conflicts=True
    )
    return len(created)


def gateway_policy_ensure(*, cluster: Cluster) -> ClusterGatewayPolicy:
    policy, _ = ClusterGatewayPolicy.objects.get_or_create(cluster=cluster)
    return policy


def gateway_secrets_reencrypt_all() -> int:
    """After adding a new first key to PORTAL_SECRET_KEYS: re-encrypt every API key copy and provider credential
    with it. Returns how many secrets were re-encrypted."""
    count = 0
    for credential_id in Credential.objects.values_list("pk", flat=True):
        with transaction.atomic():
            credential = Credential.objects.select_for_update().get(pk=credential_id)
            credential.key_ciphertext = reencrypt_secret(credential.key_ciphertext)
            credential.save(update_fields=["key_ciphertext", "updated_at"])
            count += 1
    for backend_id in ProviderBackend.objects.exclude(credential_ciphertext="").values_list("pk", flat=True):
        with transaction.atomic():
            backend = ProviderBackend.objects.select_for_update().get(pk=backend_id)
            backend.credential_ciphertext = reencrypt_secret(backend.credential_ciphertext)
            backend.save(update_fields=["credential_ciphertext", "updated_at"])
            count += 1
    return count
