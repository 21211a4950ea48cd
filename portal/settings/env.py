"""The only reader of the process environment: typed, validated settings values."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from urllib.parse import urlparse


class ConfigurationError(Exception):
    """A setting in the environment is missing or malformed; startup must stop."""


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@dataclass(frozen=True)
class Environment:
    """Reads named variables from a mapping and fails with a message that names the variable."""

    values: Mapping[str, str]

    def text(self, name: str, default: str | None = None) -> str | None:
        value = self.values.get(name)
        if value is None or value == "":
            return default
        return value

    def required_text(self, name: str) -> str:
        value = self.text(name)
        if value is None:
            raise ConfigurationError(f"{name} must be set")
        return value

    def boolean(self, name: str, default: bool) -> bool:
        raw = self.values.get(name)
        if raw is None:
            return default
        lowered = raw.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ConfigurationError(f"{name} must be one of true/false/1/0/yes/no, got {raw!r}")

    def integer(self, name: str, default: int, *, minimum: int | None = None, maximum: int | None = None) -> int:
        raw = self.values.get(name)
        if raw is None or raw.strip() == "":
            return default
        try:
            value = int(raw.strip())
        except ValueError:
            raise ConfigurationError(f"{name} must be an integer, got {raw!r}") from None
        if minimum is not None and value < minimum:
            raise ConfigurationError(f"{name} must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise ConfigurationError(f"{name} must be at most {maximum}, got {value}")
        return value

    def decimal(self, name: str, default: Decimal) -> Decimal:
        raw = self.values.get(name)
        if raw is None or raw.strip() == "":
            return default
        try:
            value = Decimal(raw.strip())
        except InvalidOperation:
            raise ConfigurationError(f"{name} must be a decimal number, got {raw!r}") from None
        if not value.is_finite() or value < 0:
            raise ConfigurationError(f"{name} must be a finite, non-negative number, got {raw!r}")
        return value

    def url(self, name: str, *, schemes: frozenset[str]) -> str | None:
        raw = self.text(name)
        if raw is None:
            return None
        parsed = urlparse(raw)
        if parsed.scheme not in schemes:
            allowed = ", ".join(sorted(schemes))
            raise ConfigurationError(f"{name} must be a URL with scheme {allowed}, got {parsed.scheme or 'none'!r}")
        return raw

    def choice(self, name: str, default: str, *, choices: frozenset[str]) -> str:
        raw = self.text(name, default)
        assert raw is not None
        if raw not in choices:
            raise ConfigurationError(f"{name} must be one of {', '.join(sorted(choices))}, got {raw!r}")
        return raw

    def text_list(self, name: str, default: list[str]) -> list[str]:
        raw = self.values.get(name)
        if raw is None:
            return default
        return [item.strip() for item in raw.split(",") if item.strip()]


ENV = Environment(os.environ)

BASE_DIR = Path(__file__).resolve().parent.parent.parent
VAR_DIR = Path(ENV.text("PORTAL_VAR_DIR", str(BASE_DIR / "var")) or BASE_DIR / "var")
