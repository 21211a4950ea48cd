"""Portal API tokens: shown once, stored as a hash, prefix visible, expiry and revocation."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from portal.tokens.models import ApiToken
from portal.tokens.services import api_token_issue
from portal.tokens.token_format import hash_token
from tests.conftest import assert_problem
from tests.factories import ServicePrincipalFactory, UserFactory

pytestmark = pytest.mark.django_db


def _bearer(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def test_issued_token_is_stored_only_as_its_hash_and_prefix() -> None:
    user = UserFactory()
    issued = api_token_issue(actor=None, principal=user, name="laptop", scopes=[])
    stored = ApiToken.objects.get(pk=issued.token.pk)
    assert stored.token_hash == hash_token(issued.plaintext)
    assert issued.plaintext.startswith(stored.prefix + "_")
    assert len(stored.prefix) == len("gpt_") + 8
    # No column of any table holds the plaintext (or its secret part).
    secret_part = issued.plaintext.rsplit("_", 1)[1]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = 'public' AND data_type IN ('text', 'character varying', 'jsonb', 'bytea')"
        )
        columns = cursor.fetchall()
        for table, column in columns:
            cursor.execute(
                f'SELECT count(*) FROM "{table}" WHERE position(%s in "{column}"::text) > 0',
                [secret_part],
            )
            assert cursor.fetchone()[0] == 0, f"{table}.{column} holds the token"


def test_post_tokens_shows_token_once_and_list_never_shows_it() -> None:
    user = UserFactory()
    client = _bearer(api_token_issue(actor=None, principal=user, name="first", scopes=[]).plaintext)
    created = client.post("/api/v1/tokens", {"name": "ci"}, format="json")
    assert created.status_code == 201
    plaintext = created.json()["token"]
    assert plaintext.startswith(created.json()["prefix"] + "_")
    listed = client.get("/api/v1/tokens").json()
    assert listed["count"] == 2
    assert all("token" not in row for row in listed["results"])
    assert plaintext not in str(listed)
    # The new token works.
    assert _bearer(plaintext).get("/api/v1/me").json()["user"]["ref"] == user.backstage_ref


def test_default_expiry_comes_from_settings(settings: object) -> None:
    issued = api_token_issue(actor=None, principal=UserFactory(), name="x", scopes=[])
    expected = timezone.now() + timedelta(days=settings.API_TOKEN_DEFAULT_LIFETIME_DAYS)  # type: ignore[attr-defined]
    assert abs(issued.token.expires_at - expected) < timedelta(seconds=5)


def test_expired_token_is_refused() -> None:
    issued = api_token_issue(actor=None, principal=UserFactory(), name="x", scopes=[])
    ApiToken.objects.filter(pk=issued.token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert_problem(_bearer(issued.plaintext).get("/api/v1/me"), 401, "token_expired")


def test_revoked_token_is_refused_and_revocation_is_audited() -> None:
    user = UserFactory()
    first = api_token_issue(actor=None, principal=user, name="a", scopes=[])
    second = api_token_issue(actor=None, principal=user, name="b", scopes=[])
    response = _bearer(first.plaintext).delete(f"/api/v1/tokens/{second.token.pk}")
    assert response.status_code == 204
    assert_problem(_bearer(second.plaintext).get("/api/v1/me"), 401, "token_revoked")
    assert _bearer(first.plaintext).get("/api/v1/me").status_code == 200
    from portal.core.models import AuditEvent

    assert AuditEvent.objects.filter(action="api_token.revoke", target_id=str(second.token.pk)).count() == 1


def test_cannot_revoke_someone_elses_token() -> None:
    mine = api_token_issue(actor=None, principal=UserFactory(), name="a", scopes=[])
    theirs = api_token_issue(actor=None, principal=UserFactory(), name="b", scopes=[])
    assert_problem(_bearer(mine.plaintext).delete(f"/api/v1/tokens/{theirs.token.pk}"), 404)
    theirs.token.refresh_from_db()
    assert theirs.token.revoked_at is None


@pytest.mark.parametrize(
    "header",
    ["Bearer nope", "Bearer gpt_deadbeef_" + "x" * 43, "Bearer", "Bearer a b", "Token abc"],
)
def test_bad_credentials_are_refused_with_problem_details(header: str) -> None:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)
    response = client.get("/api/v1/me")
    body = assert_problem(response, 401)
    assert body["code"] in {"invalid_token", "malformed_token", "not_authenticated"}
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_service_tokens_need_a_platform_admin() -> None:
    person = _bearer(api_token_issue(actor=None, principal=UserFactory(), name="a", scopes=[]).plaintext)
    refused = person.post(
        "/api/v1/tokens", {"name": "bs", "service_principal": "backstage", "scopes": ["backstage"]}, format="json"
    )
    assert_problem(refused, 403, "platform_admin_required")
    assert not ApiToken.objects.filter(name="bs").exists()
    admin = _bearer(api_token_issue(actor=None, principal=UserFactory(is_staff=True), name="a", scopes=[]).plaintext)
    created = admin.post(
        "/api/v1/tokens", {"name": "bs", "service_principal": "backstage", "scopes": ["backstage"]}, format="json"
    )
    assert created.status_code == 201
    assert created.json()["scopes"] == ["backstage"]
    assert created.json()["principal"] == "service:backstage"


def test_personal_tokens_cannot_carry_scopes() -> None:
    person = _bearer(api_token_issue(actor=None, principal=UserFactory(), name="a", scopes=[]).plaintext)
    body = assert_problem(person.post("/api/v1/tokens", {"name": "x", "scopes": ["admin"]}, format="json"), 400)
    assert body["errors"][0]["field"] == "scopes"


def test_admin_scope_makes_a_service_a_platform_admin_only_as_itself() -> None:
    service = ServicePrincipalFactory()
    client = _bearer(api_token_issue(actor=None, principal=service, name="ops", scopes=["admin"]).plaintext)
    me = client.get("/api/v1/me").json()
    assert me["platform_admin"] is True
    assert me["scopes"] == ["admin"]
