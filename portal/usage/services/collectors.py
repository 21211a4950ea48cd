"""Collector source bindings: which event sources a usage collector token may send."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.db import transaction

from portal.core.audit import audit_record
from portal.core.errors import NotFound, ValidationFailed
from portal.tokens import selectors as token_selectors
from portal.usage.models import CollectorSource

if TYPE_CHECKING:  # types only: another app's rows are read through its selectors
    from portal.tenancy.models import User


def collector_source_bind(*, actor: User | None, token_id: int, source_prefix: str) -> CollectorSource:
    """Allow a usage collector token to send events of sources starting with `source_prefix` ('*': any)."""
    prefix = (source_prefix or "").strip()
    if not prefix or len(prefix) > 255 or "\x00" in prefix:
        raise ValidationFailed.for_field("source_prefix", "give a source prefix of 1 to 255 characters", code="invalid")
    token = token_selectors.api_token_get(token_id=token_id)
    if token is None:
        raise NotFound(f"Token {token_id} not found", code="token_not_found")
    if not token_selectors.api_token_may_write_usage(token):
        raise ValidationFailed.for_field("token", "the token lacks the 'usage:write' scope", code="scope_missing")
    with transaction.atomic():
        binding, created = CollectorSource.objects.get_or_create(token=token, source_prefix=prefix)
        if created:
            audit_record(
                actor=actor,
                action="usage.collector_source_bind",
                target_type="api_token",
                target_id=token.pk,
                target_label=token.prefix,
                after={"source_prefix": prefix},
            )
    return binding
