"""Format, hashing and parsing of portal API tokens (pure functions, no database)."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

TOKEN_PREFIX = "gpt"  # "genai portal token": recognisable in logs and by secret scanners
_PREFIX_ID_BYTES = 6
_SECRET_BYTES = 32


@dataclass(frozen=True)
class NewToken:
    plaintext: str
    prefix: str
    token_hash: str


def hash_token(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


def generate_token() -> NewToken:
    """A token looks like gpt_<8 chars id>_<43 chars secret>; the part before the secret is the prefix."""
    identifier = secrets.token_hex(_PREFIX_ID_BYTES)[:8]
    secret = secrets.token_urlsafe(_SECRET_BYTES)
    prefix = f"{TOKEN_PREFIX}_{identifier}"
    plaintext = f"{prefix}_{secret}"
    return NewToken(plaintext=plaintext, prefix=prefix, token_hash=hash_token(plaintext))


def looks_like_token(value: str) -> bool:
    parts = value.split("_", 2)
    return len(parts) == 3 and parts[0] == TOKEN_PREFIX and len(parts[1]) == 8 and len(parts[2]) >= 32
