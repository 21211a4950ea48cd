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


def test_cache_is_redis() -> None:
    assert settings.CACHES["default"]["BACKEND"] == "django.core.cache.backends.redis.RedisCache"
    cache.set("smoke", "value", 5)
    assert cache.get("smoke") == "value"


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
