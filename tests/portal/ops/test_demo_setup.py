"""`make demo` run again and again leaves one live token of each kind it prints, not one more per run."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command

from portal.tokens.models import ApiToken

pytestmark = pytest.mark.django_db


def test_each_run_revokes_the_tokens_the_previous_run_printed() -> None:
    for _ in range(3):
        call_command("demo", setup_only=True, stdout=io.StringIO())
    live = ApiToken.objects.filter(revoked_at__isnull=True, name__startswith="make demo")
    assert sorted(live.values_list("name", flat=True)) == ["make demo (platform admin)", "make demo (team admin)"]
    assert ApiToken.objects.filter(name__startswith="make demo").count() == 6
