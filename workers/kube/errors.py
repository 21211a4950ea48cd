"""Errors from a cluster, classified: retry later, or record as a terminal failure with the server's message."""

from __future__ import annotations

import json


class ClusterError(Exception):
    def __init__(self, message: str, *, status: int | None = None, reason: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.reason = reason


class RetryableClusterError(ClusterError):
    """Timeouts, connection failures, 5xx, 429 and 409: the same request may succeed later."""


class TerminalClusterError(ClusterError):
    """400, 403, 404 on create, 422: the request itself is refused; retrying changes nothing."""


RETRYABLE_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})


def status_message(body: str | bytes | None) -> tuple[str, str]:
    """The (reason, message) of a metav1.Status body, or the raw text when it is not one."""
    if body is None:
        return "", ""
    text = body.decode(errors="replace") if isinstance(body, bytes) else body
    try:
        status = json.loads(text)
    except ValueError:
        return "", text[:500]
    if not isinstance(status, dict):
        return "", text[:500]
    return str(status.get("reason") or ""), str(status.get("message") or text[:500])


def classify(status: int | None, body: str | bytes | None) -> ClusterError:
    reason, message = status_message(body)
    text = message or f"HTTP {status}"
    if status is None or status in RETRYABLE_STATUSES or status >= 500:
        return RetryableClusterError(text, status=status, reason=reason)
    return TerminalClusterError(text, status=status, reason=reason)
