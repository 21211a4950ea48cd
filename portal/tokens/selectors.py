"""Reads of API tokens."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.db.models import QuerySet

from portal.tokens.models import ApiToken, Scope

if TYPE_CHECKING:  # types only: users are read through tenancy's selectors
    from portal.tenancy.models import User


def api_token_list(*, principal: User | None) -> QuerySet[ApiToken]:
    tokens = ApiToken.objects.select_related("principal").order_by("-created_at", "-id")
    return tokens if principal is None else tokens.filter(principal=principal)


def api_token_get(*, token_id: int) -> ApiToken | None:
    return ApiToken.objects.filter(pk=token_id).first()


def api_token_may_write_usage(token: ApiToken) -> bool:
    return Scope.USAGE_WRITE in token.scopes
