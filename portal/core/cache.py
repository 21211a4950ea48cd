"""Django's Redis cache, keeping one client per connection pool.

Django's RedisCacheClient builds a new redis.Redis for every cache call (django/core/cache/backends/redis.py,
get_client: `return self._client(connection_pool=pool)`), and redis-py's Redis() sets up its few hundred response
callbacks each time: about 0.15 ms of CPU a call, and every throttled API request makes two (the rate limiter's get
and set). A redis.Redis may be shared between threads: it takes a connection from its pool for each command (redis-py
docs, "Connection Pools"), and the pool itself starts afresh in a forked process."""

from __future__ import annotations

from typing import Any

from django.core.cache.backends import redis as django_redis


class RedisCacheClient(django_redis.RedisCacheClient):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._clients: dict[int, Any] = {}

    def get_client(self, key: Any = None, *, write: bool = False) -> Any:
        django_client: Any = self  # Django's private helpers, which its type stubs leave out
        index = django_client._get_connection_pool_index(write)
        client = self._clients.get(index)
        if client is None:
            pool = django_client._get_connection_pool(write)
            client = self._clients[index] = django_client._client(connection_pool=pool)
        return client


class RedisCache(django_redis.RedisCache):
    def __init__(self, server: Any, params: dict[str, Any]) -> None:
        super().__init__(server, params)
        self._class = RedisCacheClient
