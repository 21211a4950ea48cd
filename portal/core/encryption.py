"""Encryption of secrets at rest with rotating Fernet keys (first key encrypts, every key decrypts)."""

from __future__ import annotations

from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings


class SecretDecryptionError(Exception):
    """A stored secret cannot be decrypted with any configured key (a key was removed too early)."""


@lru_cache(maxsize=4)
def _cipher(keys: tuple[str, ...]) -> MultiFernet:
    if not keys:  # the settings refuse to start without a key; a test that empties them gets this
        raise SecretDecryptionError("no encryption key is configured (PORTAL_SECRET_KEYS)")
    return MultiFernet([Fernet(key.encode()) for key in keys])


def _current_cipher() -> MultiFernet:
    return _cipher(tuple(settings.SECRET_ENCRYPTION_KEYS))


def encrypt_secret(plaintext: str) -> str:
    return _current_cipher().encrypt(plaintext.encode()).decode()


def decrypt_secret(ciphertext: str) -> str:
    try:
        return _current_cipher().decrypt(ciphertext.encode()).decode()
    except InvalidToken:
        raise SecretDecryptionError("no configured key decrypts this secret") from None


def reencrypt_secret(ciphertext: str) -> str:
    """Re-encrypt under the first (newest) key, for key rotation."""
    try:
        return _current_cipher().rotate(ciphertext.encode()).decode()
    except InvalidToken:
        raise SecretDecryptionError("no configured key decrypts this secret") from None


def generate_key() -> str:
    return Fernet.generate_key().decode()
