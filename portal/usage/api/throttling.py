"""The ingestion endpoints' rate limit: per collector token, sized for batches, apart from the API's own."""

from __future__ import annotations

from django.conf import settings

from portal.api.throttling import PrincipalRateThrottle


class CollectorRateThrottle(PrincipalRateThrottle):
    scope = "usage_ingest"

    def get_rate(self) -> str | None:
        # Read at request time, like the API's limit, so a changed setting applies without a restart.
        return str(settings.USAGE_INGEST_RATE_LIMIT)
