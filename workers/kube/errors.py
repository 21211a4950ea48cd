"""Errors from a cluster, classified: retry later, or record as a terminal failure with the server's message."""

from __future__ import annotations

import json
import re


class ClusterError(Exception):
    def __init__(self, message: str, *, status: int | None = None, reason: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.reason = reason


class RetryableClusterError(ClusterError):
    """Timeouts, connection failures, 5xx, 429 and 409: the same request may succeed later."""


class TerminalClusterError(ClusterError):
    """400, 403, 404 on create, 422, and a server-side apply the CRD's schema cannot type: the request itself is
    refused; retrying changes nothing."""


RETRYABLE_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})
# Server-side apply converts the applied object to a typed value of the kind's schema before anything else; a body
# the schema cannot type (a field it does not declare: a CRD on the cluster older or newer than the manifests) fails
# with a plain error that the API server answers as a 500 with no reason, an open upstream bug
# (https://github.com/kubernetes/kubernetes/issues/139253, also #122480). The message is structuredmerge.go's:
#   failed to create typed patch object (<namespace>/<name>; <group>/<version>, Kind=<Kind>): .spec.foo: field not
#   declared in schema
# (several errors: "errors:" then one indented line each). The same body fails the same way every time.
TYPED_PATCH_FAILURE = re.compile(
    r"failed to create typed patch object \((?P<namespace>[^/;]*)/(?P<name>[^;]*); "
    r"(?P<group_version>[^,]*), Kind=(?P<kind>[^)]*)\): (?P<errors>.*)",
    re.DOTALL,
)
UNDECLARED_FIELD = re.compile(r"(\S+): field not declared in schema")


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


def schema_mismatch(message: str) -> TerminalClusterError | None:
    """The terminal error for a server-side apply the cluster's schema cannot type, naming the undeclared fields;
    None for any other message."""
    failure = TYPED_PATCH_FAILURE.match(message)
    if failure is None:
        return None
    fields = UNDECLARED_FIELD.findall(failure["errors"])
    if not fields:
        return TerminalClusterError(message, status=500, reason="SchemaMismatch")
    kind = failure["kind"]
    group, _, version = failure["group_version"].rpartition("/")
    schema = f"{kind} CustomResourceDefinition ({group}/{version})" if group else f"built-in {kind} schema ({version})"
    return TerminalClusterError(
        f"the cluster's {schema} does not declare {', '.join(fields)}: it is older or newer than the portal expects",
        status=500,
        reason="SchemaMismatch",
    )


def classify(status: int | None, body: str | bytes | None) -> ClusterError:
    reason, message = status_message(body)
    text = message or f"HTTP {status}"
    if status == 500 and (mismatch := schema_mismatch(message)) is not None:
        return mismatch
    if status is None or status in RETRYABLE_STATUSES or status >= 500:
        return RetryableClusterError(text, status=status, reason=reason)
    return TerminalClusterError(text, status=status, reason=reason)
