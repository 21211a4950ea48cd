"""Keys that encrypt secrets at rest: configured keys, else the demo's generated key or the tests' key, else none."""

from __future__ import annotations

import base64
import hashlib
import os
import sys
from pathlib import Path

from cryptography.fernet import Fernet

from portal.settings.env import ENV, VAR_DIR, ConfigurationError

# `make demo` (manage.py demo) keeps its own random key here, so what it encrypted stays readable across runs; the
# processes it starts, and `manage.py` commands run later against the same var/ directory, read the same file.
DEMO_KEY_FILE = VAR_DIR / "demo-secret-key"
# The tests' key: public on purpose, never a real secret. pytest (8.2 and later) sets PYTEST_VERSION in its process
# and so in every process a test starts (https://docs.pytest.org/en/stable/reference/reference.html#envvar-PYTEST_VERSION).
TEST_KEY = base64.urlsafe_b64encode(hashlib.sha256(b"genai-portal tests only: never a real secret").digest()).decode()

MISSING_KEY_MESSAGE = (
    "PORTAL_SECRET_KEYS must be set: secrets at rest (cluster credentials, gateway keys, provider credentials) are "
    "encrypted with it. Generate a key with "
    "`python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'`; "
    "`make demo` makes one of its own under var/."
)


def _demo_key(path: Path) -> str:
    """The demo's key, generated on its first run (readable by its owner only) and kept across runs."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process of the same demo wrote it first
            pass
        else:
            with os.fdopen(descriptor, "w") as file:
                file.write(Fernet.generate_key().decode() + "\n")
    return path.read_text().strip()


def encryption_keys(*, configured: list[str], under_pytest: bool, command: list[str], key_file: Path) -> list[str]:
    if configured:
        return configured
    if under_pytest:
        return [TEST_KEY]
    if command[1:2] == ["demo"] or key_file.exists():
        return [_demo_key(key_file)]
    raise ConfigurationError(MISSING_KEY_MESSAGE)


# A comma-separated list of Fernet keys; the first encrypts, all decrypt, so a key is rotated by putting the new one
# first and re-encrypting (manage.py rotate_secrets). Never derived from anything public.
SECRET_ENCRYPTION_KEYS = encryption_keys(
    configured=ENV.text_list("PORTAL_SECRET_KEYS", []),
    under_pytest=ENV.text("PYTEST_VERSION") is not None,
    command=[Path(sys.argv[0]).name, *sys.argv[1:]] if sys.argv else [],
    key_file=DEMO_KEY_FILE,
)
