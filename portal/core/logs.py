"""Structured logs: one JSON object per line, carrying the trace and span ids of the work that wrote it; and no
secret in any line: one-time reveal links, portal API tokens and gateway keys are redacted before a line is written."""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime
from typing import Any

from gunicorn.glogging import Logger as GunicornLogger
from opentelemetry import trace

# Attributes every LogRecord has; anything else was passed in `extra=` and is kept.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            entry["trace_id"] = format(context.trace_id, "032x")
            entry["span_id"] = format(context.span_id, "016x")
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value if isinstance(value, str | int | float | bool | type(None)) else repr(value)
        if record.exc_info:
            entry["exception"] = record.exc_text or self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


# The secret part of what may reach a log line: a one-time reveal link's token is the last segment of its path (the
# browser page /reveal/<token> and the API's /api/v1/credential-reveals/<token>: request lines of access logs,
# Django's "Not Found: /reveal/..." warnings); portal API tokens (gpt_<id>_<secret>) and gateway keys
# (gpk_<id>_<secret>) keep their non-secret prefix, which is what lists show.
REDACTED = "[redacted]"
_SECRET_PATTERNS = (
    (re.compile(r"(/reveal/|/credential-reveals/)[^/\s?#\"']+"), rf"\g<1>{REDACTED}"),
    (re.compile(r"\b(gp[tk]_[A-Za-z0-9]{4,32}_)[A-Za-z0-9_-]{8,}"), rf"\g<1>{REDACTED}"),
)


def redact_secrets(text: str) -> str:
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactSecretsFilter(logging.Filter):
    """On a handler: every record it writes (any logger, propagated or not) has its secrets redacted first. The
    message is formatted here once, so arguments that carry a path (Django's request warnings) are covered too."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact_secrets(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        for key, value in list(record.__dict__.items()):
            if key not in _STANDARD and isinstance(value, str) and not key.startswith("_"):
                setattr(record, key, redact_secrets(value))
        if record.exc_info and not record.exc_text:
            # Formatters reuse exc_text when it is set: a traceback whose message names a secret is written redacted.
            record.exc_text = redact_secrets(logging.Formatter().formatException(record.exc_info))
        return True


class RedactingGunicornLogger(GunicornLogger):
    """gunicorn's logger (`--logger-class portal.core.logs.RedactingGunicornLogger`) whose access and error logs
    redact secrets: its access log writes each request line, and a reveal link's path is its secret."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for logger in (self.error_log, self.access_log):
            for handler in logger.handlers:
                handler.addFilter(RedactSecretsFilter())
