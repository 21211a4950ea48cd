"""One error shape for the whole API: RFC 9457 problem details with a stable code and field entries."""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.db import IntegrityError
from django.http import Http404, HttpRequest, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response

from portal.core import errors as domain
from portal.core.problems import PROBLEM_CONTENT_TYPE, json_problem, problem

logger = logging.getLogger(__name__)


_DOMAIN_STATUS: list[tuple[type[domain.DomainError], int]] = [
    (domain.NotFound, status.HTTP_404_NOT_FOUND),
    (domain.PermissionDenied, status.HTTP_403_FORBIDDEN),
    (domain.Conflict, status.HTTP_409_CONFLICT),
    (domain.Gone, status.HTTP_410_GONE),
    (domain.ValidationFailed, status.HTTP_400_BAD_REQUEST),
]

_DRF_CODES: dict[type[exceptions.APIException], tuple[str, str]] = {
    exceptions.ParseError: ("malformed_request", "Malformed request"),
    exceptions.AuthenticationFailed: ("authentication_failed", "Authentication failed"),
    exceptions.NotAuthenticated: ("not_authenticated", "Authentication required"),
    exceptions.PermissionDenied: ("permission_denied", "Permission denied"),
    exceptions.NotFound: ("not_found", "Not found"),
    exceptions.MethodNotAllowed: ("method_not_allowed", "Method not allowed"),
    exceptions.NotAcceptable: ("not_acceptable", "Not acceptable"),
    exceptions.UnsupportedMediaType: ("unsupported_media_type", "Unsupported media type"),
    exceptions.Throttled: ("rate_limited", "Too many requests"),
}


def flatten_validation_errors(detail: Any, path: str = "") -> list[dict[str, str]]:
    """DRF's nested error dicts and lists become one entry per field, with a dotted path."""
    entries: list[dict[str, str]] = []
    if isinstance(detail, dict):
        for key, value in detail.items():
            name = "" if key in ("non_field_errors",) else str(key)
            entries.extend(flatten_validation_errors(value, f"{path}.{name}" if path and name else path or name))
    elif isinstance(detail, list):
        if all(isinstance(item, exceptions.ErrorDetail | str) for item in detail):
            for item in detail:
                entries.append(
                    {"field": path, "code": getattr(item, "code", "invalid") or "invalid", "message": str(item)}
                )
        else:
            for index, item in enumerate(detail):
                if item:
                    entries.extend(flatten_validation_errors(item, f"{path}[{index}]"))
    else:
        entries.append({"field": path, "code": getattr(detail, "code", "invalid") or "invalid", "message": str(detail)})
    return entries


def _problem_response(body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    response = Response(body, status=body["status"], headers=headers, content_type=PROBLEM_CONTENT_TYPE)
    return response


def problem_exception_handler(error: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(error, domain.DomainError):
        status_code = next((code for kind, code in _DOMAIN_STATUS if isinstance(error, kind)), 400)
        errors = None
        if isinstance(error, domain.ValidationFailed):
            errors = [{"field": p.field, "code": p.code, "message": p.message} for p in error.problems]
        return _problem_response(
            problem(
                status_code=status_code,
                code=error.code,
                title=error.title,
                detail=error.detail,
                errors=errors,
                extra=error.extra,
            )
        )
    if isinstance(error, RequestDataTooBig):  # a body without Content-Length that grew past the limit
        limit = int(settings.DATA_UPLOAD_MAX_MEMORY_SIZE or 0)
        return _problem_response(
            problem(
                status_code=413,
                code="payload_too_large",
                title="Payload too large",
                detail=f"The request body is larger than the portal accepts ({limit} bytes at most)",
                extra={"limit_bytes": limit},
            )
        )
    if isinstance(error, Http404):
        error = exceptions.NotFound()
    elif isinstance(error, DjangoPermissionDenied):
        error = exceptions.PermissionDenied()
    if isinstance(error, exceptions.ValidationError):
        return _problem_response(
            problem(
                status_code=400,
                code="validation_failed",
                title="Invalid request",
                detail="The request has invalid fields",
                errors=flatten_validation_errors(error.detail),
            )
        )
    if isinstance(error, exceptions.APIException):
        default_code, title = next(
            (value for kind, value in _DRF_CODES.items() if isinstance(error, kind)),
            (str(error.default_code), getattr(error, "title", "Request failed")),
        )
        detail = error.detail
        code = getattr(detail, "code", None)
        if not isinstance(code, str) or code in ("", "error", str(error.default_code)):
            code = default_code
        headers: dict[str, str] = {}
        wait = getattr(error, "wait", None)
        if isinstance(error, exceptions.Throttled) and wait is not None:
            headers["Retry-After"] = str(max(1, int(wait + 0.999)))
        view = context.get("view")
        if isinstance(error, exceptions.NotAuthenticated | exceptions.AuthenticationFailed) and view is not None:
            authenticate_header = view.get_authenticate_header(context["request"])
            if authenticate_header:
                headers["WWW-Authenticate"] = authenticate_header
        if isinstance(error, exceptions.MethodNotAllowed) and context.get("view") is not None:
            headers["Allow"] = ", ".join(context["view"].allowed_methods)
        return _problem_response(
            problem(status_code=error.status_code, code=code, title=title, detail=_text(detail)),
            headers,
        )
    if isinstance(error, IntegrityError):
        # Services check first; a constraint firing here means a concurrent request won the race.
        logger.info("integrity error answered as conflict: %s", " ".join(str(error).split()))
        return _problem_response(
            problem(
                status_code=409,
                code="conflict",
                title="Conflict",
                detail="The request conflicts with a concurrent change; retry it",
            )
        )
    return None


def _text(detail: Any) -> str:
    if isinstance(detail, list | tuple):
        return "; ".join(str(item) for item in detail)
    if isinstance(detail, dict):
        return "; ".join(f"{key}: {_text(value)}" for key, value in detail.items())
    return str(detail)


def not_found_view(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return json_problem(404, "not_found", "Not found", f"Nothing is served at {request.path}")


def server_error_view(request: HttpRequest) -> JsonResponse:
    return json_problem(500, "internal_error", "Internal error", "The portal failed to answer; it has been logged")


def bad_request_view(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return json_problem(400, "bad_request", "Bad request", "The request could not be understood")


def permission_denied_view(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return json_problem(403, "permission_denied", "Permission denied", "You may not do this")


def csrf_failure_view(request: HttpRequest, reason: str = "") -> JsonResponse:
    return json_problem(403, "csrf_failed", "CSRF check failed", reason or "The CSRF check failed")
