"""Permission classes: platform admins, and team roles resolved through tenancy selectors."""

from __future__ import annotations

from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request
from rest_framework.views import APIView

from portal.api.authentication import is_platform_admin


class IsPlatformAdmin(BasePermission):
    message = "Only platform admins may do this"

    def has_permission(self, request: Request, view: APIView) -> bool:
        return is_platform_admin(request)


class ReadAnyWritePlatformAdmin(BasePermission):
    """Any signed-in caller reads; only platform admins write."""

    message = "Only platform admins may change this"

    def has_permission(self, request: Request, view: APIView) -> bool:
        if not (request.user and request.user.is_authenticated):
            return False
        return request.method in SAFE_METHODS or is_platform_admin(request)
