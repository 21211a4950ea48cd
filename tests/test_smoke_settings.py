"""The test run itself uses PostgreSQL and Redis, never SQLite; settings that change how links are built."""

import json
import os
import subprocess
import sys

from django.conf import settings
from django.core.cache import cache
from django.db import connection


def test_database_is_postgresql(db: None) -> None:
    assert connection.vendor == "postgresql"
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version_num")
        assert int(cursor.fetchone()[0]) >= 140000


def test_cache_is_redis_with_one_client_per_pool() -> None:
    assert settings.CACHES["default"]["BACKEND"] == "portal.core.cache.RedisCache"
    cache.set("smoke", "value", 5)
    assert cache.get("smoke") == "value"
    # Django's own client builds a redis.Redis for every call (about 0.15 ms of CPU each): this one keeps it.
    client = cache._cache.get_client(write=True)  # type: ignore[attr-defined]
    assert cache._cache.get_client(write=True) is client  # type: ignore[attr-defined]


def test_behind_a_proxy_absolute_links_use_the_forwarded_scheme_and_host() -> None:
    """PORTAL_BEHIND_PROXY=true: a pagination link names the address the client used, https included."""
    script = (
        "import django, json; django.setup();"
        "from django.test import RequestFactory;"
        "request = RequestFactory().get('/api/v1/teams', HTTP_X_FORWARDED_PROTO='https',"
        " HTTP_X_FORWARDED_HOST='portal.example.com', HTTP_HOST='10.0.0.7:8000');"
        "print(json.dumps(request.build_absolute_uri('/api/v1/teams?page=2')))"
    )
    environment = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        "PORTAL_BEHIND_PROXY": "true",
        "PORTAL_ALLOWED_HOSTS": "portal.example.com",
    }
    output = subprocess.run(
        [sys.executable, "-c", script], env=environment, capture_output=True, text=True, check=True
    ).stdout
    assert json.loads(output.strip().splitlines()[-1]) == "https://portal.example.com/api/v1/teams?page=2"
