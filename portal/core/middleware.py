"""Request metrics: counts and latency per resolved route (not per raw path, to bound cardinality)."""

from __future__ import annotations

import time
from collections.abc import Callable

from django.conf import settings
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


class RequestBodyLimitMiddleware:
    """A body larger than the portal accepts (DATA_UPLOAD_MAX_MEMORY_SIZE, PORTAL_MAX_REQUEST_BYTES) is a 413 problem
    naming the limit, answered before anything reads it; Django's own check would answer a generic 400, and only
    where the body happens to be read whole."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return json_problem(400, "bad_request", "Bad request", "Content-Length is not a number")
        if limit is not None and length > limit:
            return payload_too_large(length, limit)
        return self.get_response(request)


def payload_too_large(length: int | None, limit: int) -> HttpResponse:
    size = f"{length} bytes" if length is not None else "larger than that"
    return json_problem(
        413,
        "payload_too_large",
        "Payload too large",
        f"The request body is {size}; the portal accepts at most {limit} bytes",
        extra={"limit_bytes": limit},
    )
