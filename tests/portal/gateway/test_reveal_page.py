"""The browser page behind a one-time reveal link (what Backstage's task output links to)."""

from __future__ import annotations

import hashlib
import re
from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from portal.core.models import AuditEvent
from portal.gateway.models import Credential, CredentialReveal
from portal.tenancy.models import Membership, Role
from tests.conftest import RoleMatrix

pytestmark = pytest.mark.django_db

BASE = "/api/v1/teams/alpha/credentials"


def _link(matrix: RoleMatrix, name: str = "from-backstage") -> str:
    created = matrix.client("developer").post(BASE, {"name": name, "delivery": "reveal_link"}, format="json")
    assert created.status_code == 201, created.content
    body = created.json()
    assert "key" not in body
    token = body["reveal_url"].rsplit("/", 1)[1]
    assert body["reveal_page_url"] == f"http://testserver/reveal/{token}"
    return f"/reveal/{token}"


def test_opening_the_link_describes_it_and_only_a_confirmation_reveals_the_key_once(matrix: RoleMatrix) -> None:
    page = _link(matrix)
    browser = APIClient()  # no portal identity, as a browser following a link from Backstage
    preview = browser.get(page)
    assert preview.status_code == 200
    text = preview.content.decode()
    assert "from-backstage" in text
    assert "alpha" in text
    assert "gpk_" not in text
    assert preview["Cache-Control"] == "no-store"
    assert preview["Referrer-Policy"] == "no-referrer"
    assert browser.get(page).status_code == 200  # looking again (or a link preview) does not use it up
    assert not AuditEvent.objects.filter(action="credential.reveal").exists()

    revealed = browser.post(page)
    assert revealed.status_code == 200
    credential = Credential.objects.get(name="from-backstage")
    found = re.search(r"gpk_[A-Za-z0-9_-]+", revealed.content.decode())
    assert found is not None
    key = found.group(0)
    assert hashlib.sha256(key.encode()).hexdigest() == credential.key_hash
    assert revealed["Cache-Control"] == "no-store"
    event = AuditEvent.objects.get(action="credential.reveal")
    assert event.after == {"channel": "link"}
    assert key not in str(event.before) + str(event.after)

    for again in (browser.post(page), browser.get(page)):
        assert again.status_code == 410
        assert "gpk_" not in again.content.decode()
    assert "already revealed" in browser.get(page).content.decode()


def test_an_expired_unknown_or_orphaned_link_reveals_nothing(matrix: RoleMatrix) -> None:
    browser = APIClient()
    assert browser.get("/reveal/not-a-token").status_code == 404
    assert browser.post("/reveal/not-a-token").status_code == 404

    expired = _link(matrix, "late")
    CredentialReveal.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    response = browser.post(expired)
    assert response.status_code == 410
    assert "expired" in response.content.decode()

    orphaned = _link(matrix, "left")
    Membership.objects.filter(team=matrix.team, user=matrix.developer).update(role=Role.VIEWER)
    response = browser.post(orphaned)  # its creator may no longer manage the team's keys
    assert response.status_code == 404
    assert "gpk_" not in response.content.decode()
    assert CredentialReveal.objects.get(credential__name="left").revealed_at is None


def test_the_api_link_and_the_page_share_one_use(matrix: RoleMatrix) -> None:
    page = _link(matrix, "shared")
    token = page.rsplit("/", 1)[1]
    assert matrix.client("developer").get(f"/api/v1/credential-reveals/{token}").status_code == 200
    assert APIClient().post(page).status_code == 410
