"""REST framework, OpenAPI, authentication and rate limits of the API."""

from __future__ import annotations

from portal.settings.env import ENV

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "portal.api.authentication.PortalTokenAuthentication",
        "portal.api.authentication.StaffSessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["portal.api.parsers.PortalJSONParser"],
    "DEFAULT_PAGINATION_CLASS": "portal.api.pagination.PortalPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "EXCEPTION_HANDLER": "portal.api.errors.problem_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "portal.api.schema.PortalAutoSchema",
    "DEFAULT_THROTTLE_CLASSES": ["portal.api.throttling.PrincipalRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {
        "principal": ENV.text("PORTAL_API_RATE_LIMIT", "1200/minute"),
    },
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    "NUM_PROXIES": ENV.integer("PORTAL_NUM_PROXIES", 0, minimum=0),
}

SPECTACULAR_SETTINGS = {
    "TITLE": "GenAI platform portal API",
    "DESCRIPTION": (
        "Teams, quotas and the model catalog of the company's GenAI platform. Errors are RFC 9457 "
        "problem details; every POST accepts an Idempotency-Key header."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    # The catalog's and the gateway's provider choices hold the same values under different labels: one name each.
    "ENUM_NAME_OVERRIDES": {
        "ProviderEnum": "catalog.models.Provider",
        "ServingModeEnum": "catalog.contracts.VERSION_SERVING_MODES",
        "ProviderKindEnum": "portal.gateway.models.ProviderKind.values",
        "ConditionStatusEnum": ["True", "False", "Unknown"],
        "QuotaRequestStatusEnum": "portal.tenancy.models.QuotaRequestStatus",
        "TeamStatusEnum": "portal.tenancy.models.TeamStatus",
    },
    "APPEND_COMPONENTS": {
        "securitySchemes": {
            "portalToken": {"type": "http", "scheme": "bearer", "description": "A portal API token"},
        }
    },
    "SECURITY": [{"portalToken": []}],
}

# Backstage on-behalf-of: when a JWKS URL is set, a forwarded Backstage user token is required and verified.
BACKSTAGE_JWKS_URL = ENV.url("PORTAL_BACKSTAGE_JWKS_URL", schemes=frozenset({"http", "https"}))
BACKSTAGE_TOKEN_ISSUER = ENV.text("PORTAL_BACKSTAGE_ISSUER")
BACKSTAGE_TOKEN_AUDIENCE = ENV.text("PORTAL_BACKSTAGE_AUDIENCE", "backstage")

API_TOKEN_DEFAULT_LIFETIME_DAYS = ENV.integer("PORTAL_API_TOKEN_LIFETIME_DAYS", 90, minimum=1, maximum=3650)
IDEMPOTENCY_RETENTION_HOURS = ENV.integer("PORTAL_IDEMPOTENCY_RETENTION_HOURS", 24, minimum=1)
TEAM_CREATION = ENV.choice("PORTAL_TEAM_CREATION", "members", choices=frozenset({"members", "admins"}))

# Where people open the portal (e.g. https://genai-portal.example.com): every link shown to a person (console pages,
# one-time reveal pages, Backstage entity links) is built on it by portal/core/links.py. Unset: the address the
# request came in on. `make demo` sets it to the demo's own address.
PUBLIC_URL = (ENV.url("PORTAL_PUBLIC_URL", schemes=frozenset({"http", "https"})) or "").rstrip("/") or None
