"""Types of the C scan of CloudEvents batches (portal/usage/_cloudevents_scan.c; its docstring says what it declines)."""

from typing import Any

# The fields the scan returns, one column each, in this order (events._SCAN_COLUMNS is held equal to it).
COLUMNS: tuple[str, ...]

# One list a column, one value an event (str, int, or None for an optional field absent or null); None: not sure.
def scan(body: bytes, max_events: int, /) -> list[list[Any]] | None: ...
