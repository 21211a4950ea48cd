"""Re-encrypt every secret at rest with the first key of PORTAL_SECRET_KEYS (the second step of a key rotation)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from portal.clusters.services import cluster_credentials_reencrypt_all
from portal.core.encryption import SecretDecryptionError
from portal.gateway.services import gateway_secrets_reencrypt_all


class Command(BaseCommand):
    help = (
        "Rotate the encryption key of secrets at rest: put the new key first in PORTAL_SECRET_KEYS (keep the old "
        "ones after it), run this, then remove the old keys. Cluster credentials, API key copies and provider "
        "credentials are re-encrypted one row at a time, so it is safe to run again after an interruption."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            clusters = cluster_credentials_reencrypt_all()
            gateway = gateway_secrets_reencrypt_all()
        except SecretDecryptionError as error:
            raise CommandError(f"{error}: keep every old key in PORTAL_SECRET_KEYS until this succeeds") from None
        self.stdout.write(
            f"re-encrypted {clusters} cluster credential(s) and {gateway} gateway secret(s) with the first key"
        )
