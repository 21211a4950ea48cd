"""The admin's quota-request queue: a platform admin approves or rejects a pending request with a note, through the
tenancy services (audited, an approval applied to the quota); a missing note or a decided request changes nothing."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from portal.core.models import AuditEvent
from portal.tenancy import services
from portal.tenancy.models import QuotaRequest, TeamGpuQuota
from tests.conftest import RoleMatrix
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def _staff() -> tuple[Client, object]:
    person = UserFactory(username="root", backstage_ref=None, is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(person)
    return client, person


def _ask(matrix: RoleMatrix) -> QuotaRequest:
    return services.quota_request_create(
        actor=matrix.developer, team=matrix.team, gpus={"nvidia-l4": 6}, max_deployments=9, reason="a second model"
    )


def _decide(client: Client, pending: QuotaRequest, **form: str):  # type: ignore[no-untyped-def]
    return client.post(reverse("admin:tenancy_quotarequest_decide", args=[pending.pk]), form)


def test_a_platform_admin_approves_with_a_note_and_the_quota_follows(matrix: RoleMatrix) -> None:
    client, person = _staff()
    pending = _ask(matrix)
    overview = client.get("/console/").content.decode()  # the console's overview counts the queue and links to it
    assert 'data-figure="quota-requests-pending"><a href="/admin/tenancy/quotarequest/?status__exact=pending">1<' in (
        overview
    )
    listing = client.get(reverse("admin:tenancy_quotarequest_changelist")).content.decode()
    decide_url = reverse("admin:tenancy_quotarequest_decide", args=[pending.pk])
    assert decide_url in listing
    page = client.get(decide_url).content.decode()
    assert "a second model" in page
    assert "nvidia-l4: 6" in page

    response = _decide(client, pending, decision="approve", note="capacity is there this quarter")
    assert response.status_code == 302
    pending.refresh_from_db()
    assert (pending.status, pending.decided_by, pending.decision_note) == (
        "approved",
        person,
        "capacity is there this quarter",
    )
    assert TeamGpuQuota.objects.get(quota__team=matrix.team, accelerator_type="nvidia-l4").gpus == 6
    audit = AuditEvent.objects.get(action="quota_request.approve")
    assert (audit.actor, audit.team_slug, audit.after["decision_note"]) == (
        person,
        "alpha",
        "capacity is there this quarter",
    )
    assert decide_url not in client.get(reverse("admin:tenancy_quotarequest_changelist")).content.decode()

    again = _decide(client, pending, decision="reject", note="changed my mind")  # decided: refused, nothing changes
    assert again.status_code == 200
    pending.refresh_from_db()
    assert pending.status == "approved"
    assert not AuditEvent.objects.filter(action="quota_request.reject").exists()


def test_a_note_is_required_and_a_rejection_changes_no_quota(matrix: RoleMatrix) -> None:
    client, _ = _staff()
    pending = _ask(matrix)
    gpus_before = list(TeamGpuQuota.objects.filter(quota__team=matrix.team).values_list("accelerator_type", "gpus"))
    for form in ({"decision": "reject", "note": ""}, {"decision": "approve", "note": "  "}, {"note": "why"}):
        response = _decide(client, pending, **form)
        assert response.status_code == 200
        assert "This field is required." in response.content.decode()
    pending.refresh_from_db()
    assert pending.status == "pending"
    assert _decide(client, pending, decision="reject", note="no capacity until March").status_code == 302
    pending.refresh_from_db()
    assert (pending.status, pending.decision_note) == ("rejected", "no capacity until March")
    assert AuditEvent.objects.filter(action="quota_request.reject", target_id=str(pending.pk)).count() == 1
    after = list(TeamGpuQuota.objects.filter(quota__team=matrix.team).values_list("accelerator_type", "gpus"))
    assert after == gpus_before


def test_only_platform_admins_reach_the_queue(matrix: RoleMatrix) -> None:
    pending = _ask(matrix)
    member = Client()
    member.force_login(matrix.admin)
    response = _decide(member, pending, decision="approve", note="me, myself")
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]
    pending.refresh_from_db()
    assert pending.status == "pending"
