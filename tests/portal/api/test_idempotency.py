"""Idempotency-Key on POST: replay, mismatch, concurrency, and release after a server error."""

from __future__ import annotations

import threading

import pytest
from django.db import connection
from rest_framework.test import APIClient

from portal.api.models import IdempotencyRecord
from portal.core.models import AuditEvent
from portal.tenancy.models import Team
from portal.tokens.services import api_token_issue
from tests.conftest import assert_problem
from tests.factories import TeamFactory, UserFactory


def _client() -> APIClient:
    issued = api_token_issue(actor=None, principal=UserFactory(), name="t", scopes=[])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {issued.plaintext}")
    return client


@pytest.mark.django_db
def test_same_key_and_body_returns_the_first_response_without_executing_again() -> None:
    client = _client()
    body = {"slug": "team-x", "display_name": "X"}
    first = client.post("/api/v1/teams", body, format="json", HTTP_IDEMPOTENCY_KEY="create-x")
    second = client.post("/api/v1/teams", body, format="json", HTTP_IDEMPOTENCY_KEY="create-x")
    assert first.status_code == second.status_code == 201
    assert second.json() == first.json()
    assert second["Idempotent-Replayed"] == "true"
    assert second["Location"] == "/api/v1/teams/team-x"
    assert Team.objects.filter(slug="team-x").count() == 1
    assert AuditEvent.objects.filter(action="team.create").count() == 1


@pytest.mark.django_db
def test_same_key_with_a_different_body_is_422_and_changes_nothing() -> None:
    client = _client()
    client.post("/api/v1/teams", {"slug": "team-x", "display_name": "X"}, format="json", HTTP_IDEMPOTENCY_KEY="k")
    response = client.post(
        "/api/v1/teams", {"slug": "team-y", "display_name": "Y"}, format="json", HTTP_IDEMPOTENCY_KEY="k"
    )
    assert_problem(response, 422, "idempotency_key_reused")
    assert not Team.objects.filter(slug="team-y").exists()


@pytest.mark.django_db
def test_keys_are_scoped_per_principal() -> None:
    body = {"slug": "team-x", "display_name": "X"}
    assert _client().post("/api/v1/teams", body, format="json", HTTP_IDEMPOTENCY_KEY="k").status_code == 201
    other = _client().post("/api/v1/teams", body, format="json", HTTP_IDEMPOTENCY_KEY="k")
    assert_problem(other, 409, "team_exists")


@pytest.mark.django_db
def test_a_refusal_is_not_remembered_so_a_retry_after_fixing_the_cause_runs_again() -> None:
    client = _client()
    TeamFactory(slug="taken")
    body = {"slug": "taken", "display_name": "Taken"}
    first = client.post("/api/v1/teams", body, format="json", HTTP_IDEMPOTENCY_KEY="retry-me")
    assert_problem(first, 409, "team_exists")
    assert not first.has_header("Idempotent-Replayed")
    assert not IdempotencyRecord.objects.filter(key="retry-me").exists()
    Team.objects.filter(slug="taken").delete()  # the cause goes away (here: the other team is removed)
    second = client.post("/api/v1/teams", body, format="json", HTTP_IDEMPOTENCY_KEY="retry-me")
    assert second.status_code == 201, second.content
    assert not second.has_header("Idempotent-Replayed")
    third = client.post("/api/v1/teams", body, format="json", HTTP_IDEMPOTENCY_KEY="retry-me")
    assert third.status_code == 201
    assert third["Idempotent-Replayed"] == "true"


@pytest.mark.django_db
@pytest.mark.parametrize("key", ["", "x" * 256, "clé"])
def test_invalid_keys_are_refused(key: str) -> None:
    response = _client().post(
        "/api/v1/teams", {"slug": "t", "display_name": "T"}, format="json", HTTP_IDEMPOTENCY_KEY=key
    )
    assert_problem(response, 400, "invalid_idempotency_key")
    assert not Team.objects.filter(slug="t").exists()


@pytest.mark.django_db
def test_without_a_key_nothing_is_stored() -> None:
    _client().post("/api/v1/teams", {"slug": "team-x", "display_name": "X"}, format="json")
    assert IdempotencyRecord.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_concurrent_duplicates_execute_once() -> None:
    client = _client()
    body = {"slug": "raced", "display_name": "Raced"}
    barrier = threading.Barrier(8)
    statuses: list[int] = []
    lock = threading.Lock()

    def send() -> None:
        try:
            barrier.wait()
            response = client.post("/api/v1/teams", body, format="json", HTTP_IDEMPOTENCY_KEY="race")
            with lock:
                statuses.append(response.status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=send) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert Team.objects.filter(slug="raced").count() == 1
    assert AuditEvent.objects.filter(action="team.create").count() == 1
    # Each duplicate either replays the stored 201 or is told the first is still in progress; none ran twice.
    assert set(statuses) <= {201, 409}
    assert statuses.count(201) >= 1
    record = IdempotencyRecord.objects.get(key="race")
    assert record.response_status == 201


@pytest.mark.django_db
def test_purge_removes_only_expired_records(settings: object) -> None:
    from datetime import timedelta

    from django.utils import timezone

    from portal.api.services import idempotency_records_purge_expired

    client = _client()
    client.post("/api/v1/teams", {"slug": "old", "display_name": "Old"}, format="json", HTTP_IDEMPOTENCY_KEY="old")
    client.post("/api/v1/teams", {"slug": "new", "display_name": "New"}, format="json", HTTP_IDEMPOTENCY_KEY="new")
    IdempotencyRecord.objects.filter(key="old").update(
        created_at=timezone.now() - timedelta(hours=settings.IDEMPOTENCY_RETENTION_HOURS + 1)  # type: ignore[attr-defined]
    )
    assert idempotency_records_purge_expired() == 1
    assert list(IdempotencyRecord.objects.values_list("key", flat=True)) == ["new"]
