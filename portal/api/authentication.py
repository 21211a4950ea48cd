"""Who is calling: portal API tokens, Backstage on-behalf-of, and staff sessions."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache

import jwt
from django.conf import settings
from django.utils import timezone
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, SessionAuthentication, get_authorization_header
from rest_framework.permissions import SAFE_METHODS
from rest_framework.request import Request

from portal.core.errors import ValidationFailed
from portal.tenancy import services as tenancy_services
from portal.tenancy.models import User
from portal.tenancy.selectors import normalize_user_ref
from portal.tokens.models import ApiToken, Scope
from portal.tokens.services import api_token_touch
from portal.tokens.token_format import hash_token

logger = logging.getLogger(__name__)

BACKSTAGE_USER_HEADER = "HTTP_X_BACKSTAGE_USER"
BACKSTAGE_TOKEN_HEADER = "HTTP_X_BACKSTAGE_TOKEN"


@dataclass(frozen=True)
class Caller:
    """What authenticated the request: the token (None for a session) and for whom it acts."""

    token: ApiToken | None
    principal: User
    on_behalf_of: User | None = None

    @property
    def scopes(self) -> frozenset[str]:
        return frozenset(self.token.scopes) if self.token is not None else frozenset()

    @property
    def idempotency_identity(self) -> str:
        who = f"token:{self.token.pk}" if self.token is not None else f"session:{self.principal.pk}"
        return f"{who}/user:{self.on_behalf_of.pk}" if self.on_behalf_of is not None else who


class BackstageVerificationUnavailable(exceptions.APIException):
    status_code = 503
    default_detail = "The Backstage signing keys could not be fetched to verify the forwarded user token"
    default_code = "backstage_jwks_unavailable"


class PortalTokenAuthentication(BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[User, Caller] | None:
        header = get_authorization_header(request).split()
        if not header or header[0].lower() != self.keyword.lower().encode():
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed(
                "Authorization header must be 'Bearer <token>'", code="malformed_token"
            )
        try:
            plaintext = header[1].decode("ascii")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("The token is not valid", code="invalid_token") from None
        token = ApiToken.objects.select_related("principal").filter(token_hash=hash_token(plaintext)).first()
        if token is None:
            raise exceptions.AuthenticationFailed("The token is not valid", code="invalid_token")
        now = timezone.now()
        if token.revoked_at is not None:
            raise exceptions.AuthenticationFailed("The token was revoked", code="token_revoked")
        if token.expires_at is not None and token.expires_at <= now:
            raise exceptions.AuthenticationFailed("The token has expired", code="token_expired")
        if not token.principal.is_active:
            raise exceptions.AuthenticationFailed("The token's owner is deactivated", code="principal_inactive")
        api_token_touch(token=token)
        acting_user = self._on_behalf_of(request, token)
        if acting_user is not None:
            return acting_user, Caller(token=token, principal=token.principal, on_behalf_of=acting_user)
        return token.principal, Caller(token=token, principal=token.principal)

    def authenticate_header(self, request: Request) -> str:
        return f'{self.keyword} realm="genai-portal"'

    def _on_behalf_of(self, request: Request, token: ApiToken) -> User | None:
        asserted = request.META.get(BACKSTAGE_USER_HEADER)
        if asserted is None:
            return None
        if Scope.BACKSTAGE not in token.scopes:
            raise exceptions.PermissionDenied(
                "X-Backstage-User is only honoured for principals with the 'backstage' scope",
                code="on_behalf_of_not_allowed",
            )
        asserted = asserted.strip()
        if settings.BACKSTAGE_JWKS_URL:
            _verify_backstage_user_token(request.META.get(BACKSTAGE_TOKEN_HEADER), asserted)
        try:
            user = tenancy_services.user_get_or_create_from_backstage_ref(backstage_ref=asserted)
        except ValidationFailed as error:
            raise exceptions.ValidationError({"X-Backstage-User": [error.problems[0].message]}) from None
        if not user.is_active:
            raise exceptions.AuthenticationFailed("The asserted user is deactivated", code="principal_inactive")
        return user


@lru_cache(maxsize=4)
def _jwks_client(url: str) -> jwt.PyJWKClient:
    return jwt.PyJWKClient(url, cache_keys=True, lifespan=300, timeout=5)


def _verify_backstage_user_token(raw_token: str | None, asserted_user: str) -> None:
    """Backstage user tokens are ES256 JWTs, audience 'backstage', subject the user entity ref
    (shared/reference/backstage.md section 3)."""
    if not raw_token:
        raise exceptions.AuthenticationFailed(
            "X-Backstage-Token is required with X-Backstage-User", code="backstage_token_missing"
        )
    try:
        signing_key = _jwks_client(settings.BACKSTAGE_JWKS_URL).get_signing_key_from_jwt(raw_token)
    except jwt.PyJWKClientConnectionError:
        logger.warning("Backstage JWKS could not be fetched from %s", settings.BACKSTAGE_JWKS_URL)
        raise BackstageVerificationUnavailable() from None
    except jwt.PyJWTError:
        raise exceptions.AuthenticationFailed(
            "The Backstage user token is not valid", code="backstage_token_invalid"
        ) from None
    options = {"require": ["exp", "sub", "aud"]}
    try:
        claims = jwt.decode(
            raw_token,
            signing_key.key,
            algorithms=["ES256"],
            audience=settings.BACKSTAGE_TOKEN_AUDIENCE,
            issuer=settings.BACKSTAGE_TOKEN_ISSUER,
            options=options,  # type: ignore[arg-type]
        )
    except jwt.ExpiredSignatureError:
        raise exceptions.AuthenticationFailed(
            "The Backstage user token has expired", code="backstage_token_expired"
        ) from None
    except jwt.PyJWTError:
        raise exceptions.AuthenticationFailed(
            "The Backstage user token is not valid", code="backstage_token_invalid"
        ) from None
    # Backstage writes entity refs in lower case (stringifyEntityRef); compare both sides as refs.
    if normalize_user_ref(str(claims.get("sub") or "")) != normalize_user_ref(asserted_user):
        raise exceptions.AuthenticationFailed(
            "The Backstage user token belongs to a different user than X-Backstage-User",
            code="backstage_user_mismatch",
        )


class StaffSessionAuthentication(SessionAuthentication):
    """The admin UI's session, for platform admins only (CSRF enforced as usual)."""

    def authenticate(self, request: Request) -> tuple[User, Caller] | None:
        result = super().authenticate(request)
        if result is None:
            return None
        user = result[0]
        if not user.is_staff:
            return None
        return user, Caller(token=None, principal=user)


def acting_user(request: Request) -> User:
    """The user a request acts as; views behind IsAuthenticated always have one."""
    user = request.user
    if not isinstance(user, User):
        raise exceptions.NotAuthenticated()
    return user


def caller_of(request: Request) -> Caller | None:
    auth = request.auth
    return auth if isinstance(auth, Caller) else None


def reads_every_team(request: Request) -> bool:
    """Who may read teams, deployments and the catalog across every team: platform admins, and service principals
    holding 'catalog:read' (Backstage's catalog mirror) on a read while acting as themselves. Nothing else opens
    up for that scope: no writes, no credentials, no costs, no audit."""
    if is_platform_admin(request):
        return True
    caller = caller_of(request)
    return (
        request.method in SAFE_METHODS
        and caller is not None
        and caller.on_behalf_of is None
        and Scope.CATALOG_READ in caller.scopes
    )


def is_platform_admin(request: Request) -> bool:
    """Staff people, and service principals holding the 'admin' scope when acting as themselves."""
    user = request.user
    if not user or not user.is_authenticated:
        return False
    if user.is_staff:
        return True
    caller = caller_of(request)
    return caller is not None and caller.on_behalf_of is None and Scope.ADMIN in caller.scopes
