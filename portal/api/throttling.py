"""Rate limits per principal (token, or session user), counted in Redis through Django's cache."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from redis.exceptions import RedisError
from rest_framework.request import Request
from rest_framework.throttling import SimpleRateThrottle

if TYPE_CHECKING:
    from rest_framework.views import APIView

from portal.api.authentication import caller_of

logger = logging.getLogger(__name__)


class PrincipalRateThrottle(SimpleRateThrottle):
    scope = "principal"

    def get_cache_key(self, request: Request, view: APIView) -> str:
        caller = caller_of(request)
        if caller is not None:
            identity = caller.idempotency_identity
        else:
            identity = f"anonymous:{self.get_ident(request)}"
        return self.cache_format % {"scope": self.scope, "ident": identity}

    def get_rate(self) -> str | None:
        # Read at request time (not import time) so a changed setting takes effect without a restart.
        from rest_framework.settings import api_settings

        rate = api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)
        return str(rate) if rate is not None else None

    def allow_request(self, request: Request, view: APIView) -> bool:
        try:
            return super().allow_request(request, view)
        except (RedisError, OSError) as error:
            # Rate limiting protects the API; losing Redis must not take the API down with it. An expected
            # condition: one line, no traceback.
            logger.warning("rate limiter unavailable; request allowed: %s", error)
            return True
