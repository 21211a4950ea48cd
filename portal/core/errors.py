"""Domain errors: what went wrong in business terms, with no knowledge of HTTP."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class FieldProblem:
    """One offending input field and why it was refused."""

    field: str
    message: str
    code: str = "invalid"


class DomainError(Exception):
    """Base of every error a service raises on purpose; `code` is stable and documented."""

    code = "domain_error"
    title = "The request could not be completed"

    def __init__(self, detail: str, *, code: str | None = None, extra: dict[str, Any] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code
        self.extra: dict[str, Any] = extra or {}


class NotFound(DomainError):
    """The object does not exist, or the caller may not know that it does."""

    code = "not_found"
    title = "Not found"


class PermissionDenied(DomainError):
    """The caller may see the object but not do this to it."""

    code = "permission_denied"
    title = "Permission denied"


class Gone(DomainError):
    """The object existed and is no longer available (a used or expired one-time link)."""

    code = "gone"
    title = "Gone"


class Conflict(DomainError):
    """The request clashes with the current state (duplicate, last admin, in use)."""

    code = "conflict"
    title = "Conflict"


class ValidationFailed(DomainError):
    """Input that is well-formed but breaks a business rule, field by field."""

    code = "validation_failed"
    title = "Invalid request"

    def __init__(self, problems: list[FieldProblem], detail: str = "The request has invalid fields") -> None:
        super().__init__(detail)
        self.problems = problems

    @classmethod
    def for_field(cls, field_name: str, message: str, code: str = "invalid") -> ValidationFailed:
        return cls([FieldProblem(field=field_name, message=message, code=code)])
