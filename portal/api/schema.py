"""OpenAPI descriptions of the portal's authentication schemes (drf-spectacular extensions)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class PortalTokenScheme(OpenApiAuthenticationExtension):
    target_class = "portal.api.authentication.PortalTokenAuthentication"
    name = "portalToken"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": (
                "A portal API token (gpt_...). A token with the 'backstage' scope may add X-Backstage-User: "
                "user:<namespace>/<name> to act for that user, and X-Backstage-Token with the user's Backstage "
                "token when the portal verifies it."
            ),
        }


class StaffSessionScheme(OpenApiAuthenticationExtension):
    target_class = "portal.api.authentication.StaffSessionAuthentication"
    name = "staffSession"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {"type": "apiKey", "in": "cookie", "name": "sessionid", "description": "Admin UI session (staff)"}
