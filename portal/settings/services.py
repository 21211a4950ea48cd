"""Database, Redis and broker connections: from URLs in the environment, else embedded under var/."""

from __future__ import annotations

from typing import Any

import dj_database_url

from portal import embedded
from portal.settings.env import ENV, VAR_DIR, ConfigurationError

DATABASE_URL = ENV.url("DATABASE_URL", schemes=frozenset({"postgres", "postgresql", "pgsql"}))
REDIS_URL = ENV.url("REDIS_URL", schemes=frozenset({"redis", "rediss", "unix"}))
CELERY_BROKER_URL_SETTING = ENV.url(
    "CELERY_BROKER_URL", schemes=frozenset({"redis", "rediss", "redis+socket", "amqp", "amqps", "pyamqp"})
)
EMBEDDED = ENV.boolean("PORTAL_EMBEDDED_SERVICES", default=True)


def _database() -> dict[str, Any]:
    if DATABASE_URL is not None:
        try:
            config = dict(dj_database_url.parse(DATABASE_URL, conn_max_age=60, conn_health_checks=True))
        except ValueError as error:
            raise ConfigurationError(f"DATABASE_URL is not a valid database URL: {error}") from None
        return config
    if not EMBEDDED:
        raise ConfigurationError("DATABASE_URL must be set when PORTAL_EMBEDDED_SERVICES is off")
    database = embedded.ensure_postgres(VAR_DIR)
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": database.name,
        "USER": database.user,
        "HOST": database.socket_dir,
        "PORT": str(database.port),
        "CONN_MAX_AGE": 60,
        "CONN_HEALTH_CHECKS": True,
    }


def _redis_url() -> str:
    if REDIS_URL is not None:
        return REDIS_URL
    if not EMBEDDED:
        raise ConfigurationError("REDIS_URL must be set when PORTAL_EMBEDDED_SERVICES is off")
    return embedded.redis_url_for_socket(embedded.ensure_redis(VAR_DIR))


def _broker_url(redis_url: str) -> str:
    if CELERY_BROKER_URL_SETTING is not None:
        return CELERY_BROKER_URL_SETTING
    if redis_url.startswith("unix://"):
        # kombu spells a Redis Unix socket "redis+socket://"; redis-py spells it "unix://".
        return "redis+socket://" + redis_url.removeprefix("unix://")
    return redis_url


DATABASES = {"default": _database()}
RESOLVED_REDIS_URL = _redis_url()
RESOLVED_BROKER_URL = _broker_url(RESOLVED_REDIS_URL)

CACHES = {
    "default": {
        "BACKEND": "portal.core.cache.RedisCache",  # one Redis client per pool, not per call
        "LOCATION": RESOLVED_REDIS_URL,
        "KEY_PREFIX": ENV.text("PORTAL_CACHE_PREFIX", "portal") or "portal",
    }
}
