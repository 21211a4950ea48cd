"""Writes of API tokens: issue, revocation, and the record of their use."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from portal.core.audit import audit_record
from portal.core.errors import NotFound, ValidationFailed
from portal.tenancy import selectors as tenancy_selectors
from portal.tokens.models import ApiToken, Scope
from portal.tokens.token_format import generate_token

if TYPE_CHECKING:  # types only: users are read through tenancy's selectors
    from portal.tenancy.models import User


@dataclass(frozen=True)
class IssuedToken:
    token: ApiToken
    plaintext: str


def _token_snapshot(token: ApiToken) -> dict[str, object]:
    return {
        "name": token.name,
        "prefix": token.prefix,
        "principal": str(token.principal),
        "scopes": list(token.scopes),
        "expires_at": token.expires_at.isoformat() if token.expires_at else None,
        "revoked_at": token.revoked_at.isoformat() if token.revoked_at else None,
    }


@transaction.atomic
def api_token_issue(
    *,
    actor: User | None,
    principal: User,
    name: str,
    scopes: list[str],
    expires_at: datetime | None = None,
    never_expires: bool = False,
) -> IssuedToken:
    """Issue a token for a person or a service principal; the plaintext is returned once, never stored."""
    unknown = sorted(set(scopes) - {scope.value for scope in Scope})
    if unknown:
        raise ValidationFailed.for_field("scopes", f"unknown scopes: {', '.join(unknown)}", code="unknown_scope")
    if scopes and not tenancy_selectors.user_is_service_principal(principal):
        raise ValidationFailed.for_field(
            "scopes",
            "scopes are for service principals; a personal token acts with its owner's rights",
            code="scopes_for_services_only",
        )
    now = timezone.now()
    if expires_at is None and not never_expires:
        expires_at = now + timedelta(days=settings.API_TOKEN_DEFAULT_LIFETIME_DAYS)
    if expires_at is not None and expires_at <= now:
        raise ValidationFailed.for_field("expires_at", "must be in the future", code="in_the_past")
    new = generate_token()
    token = ApiToken.objects.create(
        principal=principal,
        name=name,
        prefix=new.prefix,
        token_hash=new.token_hash,
        scopes=sorted(set(scopes)),
        expires_at=expires_at,
        created_by=actor,
    )
    audit_record(
        actor=actor,
        action="api_token.issue",
        target_type="api_token",
        target_id=token.pk,
        target_label=token.prefix,
        after=_token_snapshot(token),
    )
    return IssuedToken(token=token, plaintext=new.plaintext)


@transaction.atomic
def api_token_revoke(*, actor: User, token_id: int, principal: User | None) -> ApiToken:
    """Revoke a token; `principal` limits it to that owner's tokens (None: any, for platform admins)."""
    tokens = ApiToken.objects.select_for_update()
    if principal is not None:
        tokens = tokens.filter(principal=principal)
    token = tokens.filter(pk=token_id).first()
    if token is None:
        raise NotFound(f"API token {token_id} not found")
    if token.revoked_at is not None:
        return token
    before = _token_snapshot(token)
    token.revoked_at = timezone.now()
    token.save(update_fields=["revoked_at", "updated_at"])
    audit_record(
        actor=actor,
        action="api_token.revoke",
        target_type="api_token",
        target_id=token.pk,
        target_label=token.prefix,
        before=before,
        after=_token_snapshot(token),
    )
    return token


def api_token_touch(*, token: ApiToken) -> None:
    """Record use at most once a minute, so authentication does not write on every request."""
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at > timedelta(minutes=1):
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now
