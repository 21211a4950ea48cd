"""Writing and reading the audit log; every mutating service calls `audit_record`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db.models import QuerySet

from portal.core.models import AuditEvent

# Field names whose values never reach the audit log, whatever object they belong to.
SECRET_FIELD_NAMES = frozenset(
    {"password", "token", "token_hash", "key", "key_hash", "secret", "credential", "kubeconfig", "ciphertext"}
)


def redact(snapshot: dict[str, Any] | None) -> dict[str, Any] | None:
    if snapshot is None:
        return None
    return {name: ("[redacted]" if _is_secret(name) else value) for name, value in snapshot.items()}


def _is_secret(name: str) -> bool:
    lowered = name.lower()
    return lowered in SECRET_FIELD_NAMES or lowered.endswith(("_secret", "_ciphertext", "_hash", "_password"))


def audit_record(
    *,
    actor: Any | None,
    action: str,
    target_type: str,
    target_id: object,
    target_label: str,
    team_slug: str = "",
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> AuditEvent:
    """Record one change; call it inside the service's transaction so it commits with the change."""
    actor_user = actor if actor is not None and getattr(actor, "pk", None) is not None else None
    return AuditEvent.objects.create(
        actor=actor_user,
        actor_label=str(actor_user) if actor_user is not None else "system",
        action=action,
        target_type=target_type,
        target_id=str(target_id),
        target_label=target_label[:255],
        team_slug=team_slug,
        before=redact(before),
        after=redact(after),
    )


def audit_event_list(
    *,
    action: str | None = None,
    target_type: str | None = None,
    team_slug: str | None = None,
    actor_label: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> QuerySet[AuditEvent]:
    events = AuditEvent.objects.select_related("actor")
    if action:
        events = events.filter(action=action)
    if target_type:
        events = events.filter(target_type=target_type)
    if team_slug:
        events = events.filter(team_slug=team_slug)
    if actor_label:
        events = events.filter(actor_label=actor_label)
    if since is not None:
        events = events.filter(occurred_at__gte=since)
    if until is not None:
        events = events.filter(occurred_at__lt=until)
    return events
