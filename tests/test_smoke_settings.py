"""The test run itself uses PostgreSQL and Redis, never SQLite."""

from django.conf import settings
from django.core.cache import cache
from django.db import connection


def test_database_is_postgresql(db: None) -> None:
    assert connection.vendor == "postgresql"
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version_num")
        assert int(cursor.fetchone()[0]) >= 140000


def test_cache_is_redis() -> None:
    assert settings.CACHES["default"]["BACKEND"] == "django.core.cache.backends.redis.RedisCache"
    cache.set("smoke", "value", 5)
    assert cache.get("smoke") == "value"
