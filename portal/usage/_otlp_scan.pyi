"""Types of the C scan of OTLP logs exports (portal/usage/_otlp_scan.c; its docstring says what it declines)."""

from typing import Any

# Per ResourceLogs: its attributes (text, '' when nothing is set, None for another kind) and per ScopeLogs the
# number of records and one column per key (str, int for a count key, None when absent or unset); None: not sure.
def scan(
    body: bytes, keys: tuple[str, ...], count_keys: tuple[str, ...], max_length: int, /
) -> list[tuple[dict[str, str | None], list[tuple[int, list[list[Any]]]]]] | None: ...
