"""`manage.py rotate_secrets`: after it, every secret at rest decrypts with the new key alone."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from portal.clusters.models import Cluster
from portal.clusters.selectors import cluster_connection
from portal.clusters.services import cluster_register
from portal.core.encryption import SecretDecryptionError, decrypt_secret, generate_key
from portal.gateway.models import Credential, ProviderBackend
from portal.gateway.services import credential_issue, provider_backend_create
from tests.factories import TeamFactory

pytestmark = pytest.mark.django_db


def test_rotation_reencrypts_cluster_credentials_keys_and_provider_credentials(settings: object) -> None:
    old_key, new_key = generate_key(), generate_key()
    settings.SECRET_ENCRYPTION_KEYS = [old_key]  # type: ignore[attr-defined]
    cluster = cluster_register(
        actor=None,
        name="rotation",
        api_server="https://gpu.example.internal:6443",
        auth_kind="token",
        token="cluster-token",
        region="eu-west",
        gateway_namespace="genai-gateway",
        gateway_name="ai-gateway",
        deployment_mode="Standard",
        autoscaler_class="keda",
    )
    issued = credential_issue(actor=None, team=TeamFactory(slug="rotating"), name="ci")
    provider_backend_create(
        actor=None,
        cluster=cluster,
        values={"name": "openai", "provider": "openai", "hostname": "api.openai.com", "credential": "sk-provider"},
    )
    before = {
        "cluster": Cluster.objects.get(pk=cluster.pk).credentials_ciphertext,
        "key": Credential.objects.get(pk=issued.credential_id).key_ciphertext,
        "provider": ProviderBackend.objects.get(cluster=cluster).credential_ciphertext,
    }

    settings.SECRET_ENCRYPTION_KEYS = [new_key, old_key]  # type: ignore[attr-defined]
    out = StringIO()
    call_command("rotate_secrets", stdout=out)
    assert "re-encrypted 1 cluster credential(s) and 2 gateway secret(s)" in out.getvalue()

    settings.SECRET_ENCRYPTION_KEYS = [new_key]  # type: ignore[attr-defined]
    assert cluster_connection(cluster_id=cluster.pk).token == "cluster-token"
    assert decrypt_secret(Credential.objects.get(pk=issued.credential_id).key_ciphertext) == issued.key
    assert decrypt_secret(ProviderBackend.objects.get(cluster=cluster).credential_ciphertext) == "sk-provider"
    for ciphertext in before.values():  # the old ciphertexts needed the old key, which is gone
        with pytest.raises(SecretDecryptionError):
            decrypt_secret(ciphertext)


def test_rotation_without_the_old_key_fails_clearly_and_changes_nothing(settings: object) -> None:
    settings.SECRET_ENCRYPTION_KEYS = [generate_key()]  # type: ignore[attr-defined]
    issued = credential_issue(actor=None, team=TeamFactory(slug="lost-key"), name="ci")
    before = Credential.objects.get(pk=issued.credential_id).key_ciphertext
    settings.SECRET_ENCRYPTION_KEYS = [generate_key()]  # type: ignore[attr-defined]
    with pytest.raises(CommandError, match="keep every old key"):
        call_command("rotate_secrets")
    assert Credential.objects.get(pk=issued.credential_id).key_ciphertext == before
