"""Reads of API tokens."""

from __future__ import annotations

from django.db.models import QuerySet

from portal.tenancy.models import User
from portal.tokens.models import ApiToken


def api_token_list(*, principal: User | None) -> QuerySet[ApiToken]:
    tokens = ApiToken.objects.select_related("principal").order_by("-created_at", "-id")
    return tokens if principal is None else tokens.filter(principal=principal)
