"""Portal API tokens: personal and service bearer tokens, stored as a hash, with the scopes of a service principal."""

from __future__ import annotations

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.db.models import Q

from portal.core.models import TimestampedModel


class Scope(models.TextChoices):
    BACKSTAGE = "backstage", "Backstage (may act on behalf of users)"
    USAGE_WRITE = "usage:write", "Usage collector (may post usage events)"
    ADMIN = "admin", "Platform admin"
    CATALOG_READ = "catalog:read", "Catalog mirror (reads every team, its deployments and the model catalog)"


class ApiToken(TimestampedModel):
    """A bearer token: only its SHA-256 hash is stored; the prefix identifies it in lists and logs."""

    principal = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, unique=True)
    token_hash = models.CharField(max_length=64, unique=True)
    scopes = ArrayField(models.CharField(max_length=20, choices=Scope.choices), default=list, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        # The table the model had when it lived in portal.api: moving the model between apps moved no rows
        # (tokens/migrations/0001_initial.py).
        db_table = "api_apitoken"
        verbose_name = "API token"
        verbose_name_plural = "API tokens"
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=Q(scopes__contained_by=[scope.value for scope in Scope]), name="api_token_scopes_known"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"
