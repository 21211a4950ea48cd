"""Types of usage ingestion's per-event arithmetic in C (portal/usage/_native.c says what each does and refuses)."""

from collections.abc import Sequence
from typing import Any

def event_ids(prefix: bytes, names: Sequence[str], /) -> list[str]: ...
def keys(prefix: bytes, event_ids: Sequence[str], /) -> list[bytes]: ...
def copy_rows(columns: tuple[list[Any], ...], /) -> bytes: ...
def deltas(
    columns: tuple[list[Any], ...], skip: set[int] | None, bounds: tuple[int, ...], /
) -> list[tuple[Any, ...]]: ...
def charges(
    indexes: list[int],
    prices: list[tuple[int, int, int, int, int, bool]],
    inputs: list[int | None],
    cached: list[int | None],
    writes: list[int | None],
    outputs: list[int | None],
    reasonings: list[int | None],
    max_cost: int,
    /,
) -> tuple[list[int], list[int]] | None: ...
def sha_extensions(enable: bool, /) -> bool: ...
