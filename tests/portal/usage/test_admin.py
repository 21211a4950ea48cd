"""The usage models ingestion and the compactor write are in the admin, read-only: a platform admin sees a batch's
deltas while they wait for the compactor, then the hourly rollup and request health they were folded into."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.contrib import admin
from django.test import Client
from django.urls import reverse

from portal.usage.models import UsageHourly, UsagePriceSet, UsageRequestHealth, UsageRollupDelta, UsageSource
from tests.factories import UserFactory
from tests.portal.usage.conftest import UsageWorld

pytestmark = pytest.mark.django_db

MODELS = (UsageRollupDelta, UsageHourly, UsageRequestHealth, UsageSource, UsagePriceSet)


def _pages(client: Client, model: type) -> tuple[str, str]:
    meta = model._meta
    listing = client.get(reverse(f"admin:{meta.app_label}_{meta.model_name}_changelist"))
    assert listing.status_code == 200
    row = model._default_manager.first()
    assert row is not None, meta.model_name
    detail = client.get(reverse(f"admin:{meta.app_label}_{meta.model_name}_change", args=[row.pk]))
    assert detail.status_code == 200
    return listing.content.decode(), detail.content.decode()


def test_deltas_then_their_rollups_are_shown_read_only(world: UsageWorld, rollups: Callable[[], int]) -> None:
    assert world.post([world.event(input_tokens=1000, output_tokens=200)]).status_code == 200
    staff = Client()
    staff.force_login(UserFactory(username="usage-admin", backstage_ref=None, is_staff=True, is_superuser=True))
    listing, _ = _pages(staff, UsageRollupDelta)
    assert world.client_id in listing  # the delta's label: which key it belongs to
    assert "0.0045 USD" in listing  # 1,000 input at 2.5 and 200 output at 10 per 1M tokens
    rollups()
    assert not UsageRollupDelta.objects.exists()  # folded and deleted by the compactor
    for model in (UsageHourly, UsageRequestHealth, UsageSource, UsagePriceSet):
        _pages(staff, model)
    for model in MODELS:
        model_admin = admin.site._registry[model]
        request = staff.request().wsgi_request
        request.user = UserFactory(username=f"root-{model._meta.model_name}", is_staff=True, is_superuser=True)
        assert not model_admin.has_add_permission(request)
        assert not model_admin.has_change_permission(request)
        assert not model_admin.has_delete_permission(request)
