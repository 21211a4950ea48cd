"""RFC 9457 problem details: the one error body of the portal, built here for the API and middleware alike."""

from __future__ import annotations

from typing import Any

from django.http import JsonResponse

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_TYPE_BASE = "https://genai-portal.dev/problems/"


def problem(
    *,
    status_code: int,
    code: str,
    title: str,
    detail: str,
    errors: list[dict[str, str]] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + code.replace("_", "-"),
        "title": title,
        "status": status_code,
        "detail": detail,
        "code": code,
    }
    if errors is not None:
        body["errors"] = errors
    if extra:
        body.update({key: value for key, value in extra.items() if key not in body})
    return body


def json_problem(
    status_code: int, code: str, title: str, detail: str, *, extra: dict[str, Any] | None = None
) -> JsonResponse:
    return JsonResponse(
        problem(status_code=status_code, code=code, title=title, detail=detail, extra=extra),
        status=status_code,
        content_type=PROBLEM_CONTENT_TYPE,
    )
