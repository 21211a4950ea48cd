"""Secrets at rest: Fernet with rotation (first key encrypts, all keys decrypt)."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet, InvalidToken

from portal.core.encryption import (
    SecretDecryptionError,
    decrypt_secret,
    encrypt_secret,
    generate_key,
    reencrypt_secret,
)
from portal.settings.secrets import TEST_KEY

ROOT = Path(__file__).resolve().parents[3]


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


# --- where the key comes from ------------------------------------------------------------------------------------


def _settings_in_a_process(
    environment: dict[str, str], *argv: str, script: str = "print(settings.SECRET_ENCRYPTION_KEYS)"
) -> subprocess.CompletedProcess[str]:
    """Loads the settings in a new process the way a portal process starts: not under pytest (its environment
    variable removed), with the given command line."""
    program = f"import sys; sys.argv = {list(argv)!r}; import django; django.setup(); from django.conf import settings; {script}"
    clean = {name: value for name, value in os.environ.items() if name not in ("PYTEST_VERSION", "PORTAL_SECRET_KEYS")}
    return subprocess.run(
        [sys.executable, "-c", program],
        cwd=ROOT,
        env={**clean, "DJANGO_SETTINGS_MODULE": "portal.settings", **environment},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_outside_demo_and_tests_a_missing_key_stops_startup(tmp_path: Path) -> None:
    result = _settings_in_a_process({"PORTAL_VAR_DIR": str(tmp_path)}, "gunicorn")
    assert result.returncode != 0
    assert "ConfigurationError: PORTAL_SECRET_KEYS must be set" in result.stderr
    assert not (tmp_path / "demo-secret-key").exists()


def test_a_configured_key_is_used(tmp_path: Path) -> None:
    key = generate_key()
    result = _settings_in_a_process({"PORTAL_VAR_DIR": str(tmp_path), "PORTAL_SECRET_KEYS": key}, "gunicorn")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == repr([key])


def test_the_demo_generates_a_random_key_under_var_and_keeps_it_across_runs(tmp_path: Path) -> None:
    first = _settings_in_a_process({"PORTAL_VAR_DIR": str(tmp_path)}, "manage.py", "demo")
    assert first.returncode == 0, first.stderr
    key_file = tmp_path / "demo-secret-key"
    key = key_file.read_text().strip()
    assert first.stdout.strip().splitlines()[-1] == repr([key])
    assert key != TEST_KEY
    assert key_file.stat().st_mode & 0o077 == 0  # readable by its owner only
    Fernet(key.encode())  # a valid Fernet key
    # The next run, and the processes the demo starts (web, worker: another command line), read the same key.
    again = _settings_in_a_process({"PORTAL_VAR_DIR": str(tmp_path)}, "manage.py", "demo")
    worker = _settings_in_a_process({"PORTAL_VAR_DIR": str(tmp_path)}, "celery", "-A", "portal", "worker")
    assert again.stdout.strip().splitlines()[-1] == repr([key])
    assert worker.stdout.strip().splitlines()[-1] == repr([key])
    # Another demo (another var/ directory) has another key.
    other = tmp_path / "other"
    _settings_in_a_process({"PORTAL_VAR_DIR": str(other)}, "manage.py", "demo")
    assert (other / "demo-secret-key").read_text().strip() != key


def test_tests_get_the_test_key_and_never_a_key_derived_from_the_secret_key(settings: object) -> None:
    assert settings.SECRET_ENCRYPTION_KEYS == [TEST_KEY]  # type: ignore[attr-defined]
    ciphertext = encrypt_secret("provider-key")
    # The old fallback: a key derived from the (public, default) Django secret key no longer decrypts anything.
    derived = base64.urlsafe_b64encode(hashlib.sha256(settings.SECRET_KEY.encode()).digest())  # type: ignore[attr-defined]
    with pytest.raises(InvalidToken):
        Fernet(derived).decrypt(ciphertext.encode())


def test_with_no_key_at_all_nothing_is_encrypted(settings: object) -> None:
    settings.SECRET_ENCRYPTION_KEYS = []  # type: ignore[attr-defined]
    with pytest.raises(SecretDecryptionError, match="no encryption key"):
        encrypt_secret("provider-key")
