"""Backstage on-behalf-of: X-Backstage-User for 'backstage' principals only, and JWKS verification."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm
from rest_framework.test import APIClient

from portal.api import authentication
from portal.tenancy.models import User
from portal.tokens.services import api_token_issue
from tests.conftest import assert_problem
from tests.factories import ServicePrincipalFactory, UserFactory

pytestmark = pytest.mark.django_db


def _client(scopes: list[str]) -> APIClient:
    service = ServicePrincipalFactory()
    issued = api_token_issue(actor=None, principal=service, name="backstage", scopes=scopes)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {issued.plaintext}")
    return client


def test_backstage_principal_acts_for_the_asserted_user_created_on_first_sight() -> None:
    assert not User.objects.filter(backstage_ref="user:default/jane").exists()
    me = _client(["backstage"]).get("/api/v1/me", HTTP_X_BACKSTAGE_USER="user:default/jane").json()
    assert me["user"]["ref"] == "user:default/jane"
    assert me["acting_through"].startswith("service:")
    assert User.objects.get(backstage_ref="user:default/jane").kind == "person"


def test_namespace_defaults_to_default() -> None:
    me = _client(["backstage"]).get("/api/v1/me", HTTP_X_BACKSTAGE_USER="user:jane").json()
    assert me["user"]["ref"] == "user:default/jane"


def test_on_behalf_user_gets_that_users_rights_not_the_services() -> None:
    client = _client(["backstage", "admin"])
    me = client.get("/api/v1/me", HTTP_X_BACKSTAGE_USER="user:default/jane").json()
    assert me["platform_admin"] is False


@pytest.mark.parametrize("scopes", [[], ["usage:write"], ["admin"]])
def test_header_is_refused_for_principals_without_backstage_scope(scopes: list[str]) -> None:
    response = _client(scopes).get("/api/v1/me", HTTP_X_BACKSTAGE_USER="user:default/jane")
    assert_problem(response, 403, "on_behalf_of_not_allowed")
    assert not User.objects.filter(backstage_ref="user:default/jane").exists()


def test_header_is_refused_for_personal_tokens() -> None:
    issued = api_token_issue(actor=None, principal=UserFactory(), name="p", scopes=[])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {issued.plaintext}")
    assert_problem(client.get("/api/v1/me", HTTP_X_BACKSTAGE_USER="user:default/jane"), 403, "on_behalf_of_not_allowed")


@pytest.mark.parametrize("ref", ["group:default/team-a", "jane", "user:default/", "user:default/a b", "user:/x"])
def test_malformed_user_ref_is_a_field_error(ref: str) -> None:
    body = assert_problem(_client(["backstage"]).get("/api/v1/me", HTTP_X_BACKSTAGE_USER=ref), 400, "validation_failed")
    assert body["errors"][0]["field"] == "X-Backstage-User"


class _JwksServer:
    """A local JWKS endpoint serving one freshly generated P-256 public key."""

    def __init__(self) -> None:
        self.private_key = ec.generate_private_key(ec.SECP256R1())
        public_jwk = json.loads(ECAlgorithm.to_jwk(self.private_key.public_key()))
        public_jwk.update({"kid": "test-key", "alg": "ES256", "use": "sig"})
        body = json.dumps({"keys": [public_jwk]}).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api/auth/.well-known/jwks.json"
        # shutdown() waits for the serving loop's next poll: 0.5 s per test at the default interval
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()

    def token(self, subject: str, *, audience: str = "backstage", expires_in: int = 3600, key: object = None) -> str:
        claims = {
            "sub": subject,
            "aud": audience,
            "iss": "http://backstage.test/api/auth",
            "exp": int(time.time()) + expires_in,
        }
        return jwt.encode(claims, key or self.private_key, algorithm="ES256", headers={"kid": "test-key"})


@pytest.fixture
def jwks(settings: object) -> Iterator[_JwksServer]:
    server = _JwksServer()
    settings.BACKSTAGE_JWKS_URL = server.url  # type: ignore[attr-defined]
    settings.BACKSTAGE_TOKEN_ISSUER = "http://backstage.test/api/auth"  # type: ignore[attr-defined]
    authentication._jwks_client.cache_clear()
    yield server
    server.server.shutdown()
    authentication._jwks_client.cache_clear()


def test_verified_backstage_token_is_accepted(jwks: _JwksServer) -> None:
    response = _client(["backstage"]).get(
        "/api/v1/me", HTTP_X_BACKSTAGE_USER="user:default/jane", HTTP_X_BACKSTAGE_TOKEN=jwks.token("user:default/jane")
    )
    assert response.status_code == 200
    assert response.json()["user"]["ref"] == "user:default/jane"


def test_missing_backstage_token_is_refused_when_jwks_configured(jwks: _JwksServer) -> None:
    response = _client(["backstage"]).get("/api/v1/me", HTTP_X_BACKSTAGE_USER="user:default/jane")
    assert_problem(response, 401, "backstage_token_missing")
    assert not User.objects.filter(backstage_ref="user:default/jane").exists()


def test_the_token_subject_and_the_asserted_user_are_compared_as_refs(jwks: _JwksServer) -> None:
    """Backstage writes the token's sub in lower case; a header naming the same user otherwise still matches."""
    response = _client(["backstage"]).get(
        "/api/v1/me",
        HTTP_X_BACKSTAGE_USER="user:Default/Jane",
        HTTP_X_BACKSTAGE_TOKEN=jwks.token("user:default/jane"),
    )
    assert response.status_code == 200, response.content
    assert response.json()["user"]["ref"] == "user:default/jane"


def test_token_for_another_user_is_refused(jwks: _JwksServer) -> None:
    response = _client(["backstage"]).get(
        "/api/v1/me",
        HTTP_X_BACKSTAGE_USER="user:default/jane",
        HTTP_X_BACKSTAGE_TOKEN=jwks.token("user:default/mallory"),
    )
    assert_problem(response, 401, "backstage_user_mismatch")
    assert not User.objects.filter(backstage_ref="user:default/jane").exists()


def test_wrong_audience_expired_and_foreign_key_are_refused(jwks: _JwksServer) -> None:
    client = _client(["backstage"])
    headers = {"HTTP_X_BACKSTAGE_USER": "user:default/jane"}
    wrong_audience = jwks.token("user:default/jane", audience="not-backstage")
    assert_problem(
        client.get("/api/v1/me", HTTP_X_BACKSTAGE_TOKEN=wrong_audience, **headers), 401, "backstage_token_invalid"
    )
    expired = jwks.token("user:default/jane", expires_in=-120)
    assert_problem(client.get("/api/v1/me", HTTP_X_BACKSTAGE_TOKEN=expired, **headers), 401, "backstage_token_expired")
    forged = jwks.token("user:default/jane", key=ec.generate_private_key(ec.SECP256R1()))
    assert_problem(client.get("/api/v1/me", HTTP_X_BACKSTAGE_TOKEN=forged, **headers), 401, "backstage_token_invalid")
    assert_problem(
        client.get("/api/v1/me", HTTP_X_BACKSTAGE_TOKEN="not-a-jwt", **headers), 401, "backstage_token_invalid"
    )


def test_hs256_token_is_refused(jwks: _JwksServer) -> None:
    symmetric = jwt.encode(
        {"sub": "user:default/jane", "aud": "backstage", "exp": int(time.time()) + 60},
        "secret" * 6,
        algorithm="HS256",
        headers={"kid": "test-key"},
    )
    response = _client(["backstage"]).get(
        "/api/v1/me", HTTP_X_BACKSTAGE_USER="user:default/jane", HTTP_X_BACKSTAGE_TOKEN=symmetric
    )
    assert_problem(response, 401, "backstage_token_invalid")


def test_unreachable_jwks_is_a_503_not_a_500(settings: object) -> None:
    settings.BACKSTAGE_JWKS_URL = "http://127.0.0.1:9/jwks.json"  # type: ignore[attr-defined]
    authentication._jwks_client.cache_clear()
    server = _JwksServer()
    try:
        response = _client(["backstage"]).get(
            "/api/v1/me",
            HTTP_X_BACKSTAGE_USER="user:default/jane",
            HTTP_X_BACKSTAGE_TOKEN=server.token("user:default/jane"),
        )
    finally:
        server.server.shutdown()
        authentication._jwks_client.cache_clear()
    assert_problem(response, 503, "backstage_jwks_unavailable")
