"""Prometheus metrics of the web process."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

HTTP_REQUESTS = Counter(
    "portal_http_requests_total",
    "HTTP requests answered, by method, route and status class",
    ["method", "route", "status"],
)
HTTP_LATENCY = Histogram(
    "portal_http_request_duration_seconds",
    "Time to answer an HTTP request, by method and route",
    ["method", "route"],
)
