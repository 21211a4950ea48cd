"""Secrets at rest: Fernet with rotation (first key encrypts, all keys decrypt)."""

from __future__ import annotations

import pytest

from portal.core.encryption import (
    SecretDecryptionError,
    decrypt_secret,
    encrypt_secret,
    generate_key,
    reencrypt_secret,
)


def test_round_trip_and_ciphertext_differs_from_plaintext(settings: object) -> None:
    settings.SECRET_ENCRYPTION_KEYS = [generate_key()]  # type: ignore[attr-defined]
    ciphertext = encrypt_secret("kubeconfig-contents")
    assert "kubeconfig-contents" not in ciphertext
    assert decrypt_secret(ciphertext) == "kubeconfig-contents"


def test_rotation_keeps_old_secrets_readable_then_reencrypts(settings: object) -> None:
    old_key, new_key = generate_key(), generate_key()
    settings.SECRET_ENCRYPTION_KEYS = [old_key]  # type: ignore[attr-defined]
    old_ciphertext = encrypt_secret("s3cret")
    settings.SECRET_ENCRYPTION_KEYS = [new_key, old_key]  # type: ignore[attr-defined]
    assert decrypt_secret(old_ciphertext) == "s3cret"
    rotated = reencrypt_secret(old_ciphertext)
    settings.SECRET_ENCRYPTION_KEYS = [new_key]  # type: ignore[attr-defined]
    assert decrypt_secret(rotated) == "s3cret"
    with pytest.raises(SecretDecryptionError):
        decrypt_secret(old_ciphertext)
