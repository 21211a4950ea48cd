"""Links shown to people: the console's page shapes on PORTAL_PUBLIC_URL (the Backstage plugin builds the same)."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import RequestFactory

from portal.core.links import FLEET_PATH, console_path, console_url, public_url
from tests.conftest import RoleMatrix


def test_console_paths_have_the_shapes_the_console_serves() -> None:
    assert console_path() == "/console/"
    assert FLEET_PATH == "/console/fleet/"
    assert console_path(team="ml") == "/console/teams/ml/"
    assert console_path(team="ml", deployment="chat") == "/console/teams/ml/deployments/chat/"
    assert console_path(model="qwen2-5-7b-instruct") == "/console/models/qwen2-5-7b-instruct/"
    assert console_path(team="a/b") == "/console/teams/a%2Fb/"  # nothing named changes the path's shape
    with pytest.raises(ValueError, match="needs its team"):
        console_path(deployment="chat")
    with pytest.raises(ValueError, match="not both"):
        console_path(team="ml", model="m")


def test_public_url_is_the_configured_one_else_the_request_address(settings: Any) -> None:
    settings.ALLOWED_HOSTS = ["portal.internal"]
    request = RequestFactory().get("/api/v1/me", HTTP_HOST="portal.internal:8000")
    settings.PUBLIC_URL = None
    assert console_url(team="ml", request=request) == "http://portal.internal:8000/console/teams/ml/"
    settings.PUBLIC_URL = "https://genai.example.com"
    assert console_url(team="ml", deployment="chat", request=request) == (
        "https://genai.example.com/console/teams/ml/deployments/chat/"
    )
    assert public_url("/reveal/x") == "https://genai.example.com/reveal/x"
    with pytest.raises(ValueError, match="starts with '/'"):
        public_url("console/")


@pytest.mark.django_db
def test_the_reveal_page_link_people_open_is_on_the_public_url(matrix: RoleMatrix, settings: Any) -> None:
    settings.PUBLIC_URL = "https://genai.example.com"
    body = (
        matrix.client("developer")
        .post("/api/v1/teams/alpha/credentials", {"name": "app", "delivery": "reveal_link"}, format="json")
        .json()
    )
    token = body["reveal_url"].rsplit("/", 1)[1]
    # The API link stays on the address the caller used (its own client follows it with its token).
    assert body["reveal_url"] == f"http://testserver/api/v1/credential-reveals/{token}"
    assert body["reveal_page_url"] == f"https://genai.example.com/reveal/{token}"
