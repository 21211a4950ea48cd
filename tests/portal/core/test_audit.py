"""The audit log never keeps secrets, and platform admins can read it through the API."""

from __future__ import annotations

import pytest

from portal.core.audit import audit_record, redact
from portal.core.models import AuditEvent
from tests.conftest import ROLES, RoleMatrix, assert_problem


def test_redact_hides_secret_fields() -> None:
    assert redact({"name": "x", "token_hash": "abc", "kubeconfig": "k", "api_key_ciphertext": "c", "ok": 1}) == {
        "name": "x",
        "token_hash": "[redacted]",
        "kubeconfig": "[redacted]",
        "api_key_ciphertext": "[redacted]",
        "ok": 1,
    }


@pytest.mark.django_db
def test_audit_record_stores_actor_and_redacted_snapshots(matrix: RoleMatrix) -> None:
    event = audit_record(
        actor=matrix.admin,
        action="thing.change",
        target_type="thing",
        target_id=7,
        target_label="seven",
        team_slug="alpha",
        before={"password": "p", "size": 1},
        after={"password": "q", "size": 2},
    )
    event.refresh_from_db()
    assert event.actor_label == "user:default/admin"
    assert event.before == {"password": "[redacted]", "size": 1}
    assert event.after == {"password": "[redacted]", "size": 2}


@pytest.mark.django_db
@pytest.mark.parametrize("who", ROLES)
def test_audit_api_is_for_platform_admins(matrix: RoleMatrix, who: str) -> None:
    audit_record(actor=None, action="x.y", target_type="x", target_id=1, target_label="one", team_slug="alpha")
    response = matrix.client(who).get("/api/v1/audit-events?team=alpha")
    expected = {"anonymous": 401, "platform_admin": 200}.get(who, 403)
    if expected != 200:
        assert_problem(response, expected)
        return
    body = response.json()
    assert body["count"] == AuditEvent.objects.filter(team_slug="alpha").count() == 1
    assert body["results"][0]["action"] == "x.y"


@pytest.mark.django_db
def test_audit_api_rejects_a_malformed_date(matrix: RoleMatrix) -> None:
    body = assert_problem(matrix.client("platform_admin").get("/api/v1/audit-events?since=yesterday"), 400)
    assert body["errors"][0]["field"] == "since"
