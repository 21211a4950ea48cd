"""Request metrics: counts and latency per resolved route (not per raw path, to bound cardinality)."""

from __future__ import annotations

import time
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from portal.core.metrics import HTTP_LATENCY, HTTP_REQUESTS
from portal.core.problems import json_problem


class RequestMetricsMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        response = self.get_response(request)
        match = getattr(request, "resolver_match", None)
        route = match.route if match is not None and match.route else "unmatched"
        HTTP_LATENCY.labels(request.method or "", route).observe(time.perf_counter() - started)
        HTTP_REQUESTS.labels(request.method or "", route, f"{response.status_code // 100}xx").inc()
        return response


class RejectNullBytesMiddleware:
    """PostgreSQL text cannot hold NUL; a NUL in the path or query is refused before it reaches a query."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        raw_query = request.META.get("QUERY_STRING", "")
        if (
            "\x00" in request.path
            or "%00" in raw_query
            or "\x00" in raw_query
            or any("\x00" in value for values in request.GET.lists() for value in values[1])
        ):
            return json_problem(400, "nul_character", "Bad request", "The URL contains a NUL character")
        return self.get_response(request)
