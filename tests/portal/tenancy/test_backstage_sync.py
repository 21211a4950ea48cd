"""Team sync from Backstage groups, against a local HTTP server that answers like Backstage's catalog API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from portal.core.models import AuditEvent
from portal.tenancy import backstage_sync
from portal.tenancy.backstage_sync import BackstageCatalogError, backstage_groups_fetch, backstage_teams_sync
from portal.tenancy.models import Membership, Role, Team, User
from tests.factories import MembershipFactory, TeamFactory, UserFactory
from workers.tasks.tenancy import sync_backstage_teams

pytestmark = pytest.mark.django_db

TOKEN = "portal-reads-the-catalog"


def group(
    name: str,
    members: list[str] | None = None,
    *,
    related: list[str] | None = None,
    annotations: dict[str, str] | None = None,
    namespace: str = "default",
    title: str | None = None,
) -> dict[str, Any]:
    """A Group entity as the catalog returns it: spec.members as written, relations as resolved."""
    return {
        "apiVersion": "backstage.io/v1alpha1",
        "kind": "Group",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "annotations": annotations or {},
            **({"title": title} if title else {}),
        },
        "spec": {"type": "team", "children": [], "members": members or []},
        "relations": [{"type": "hasMember", "targetRef": ref} for ref in related or []]
        + [{"type": "childOf", "targetRef": "group:default/org"}],
    }


class FakeBackstage:
    """Serves /api/catalog/entities/by-query with cursor pagination and a static external-access token."""

    def __init__(self, entities: list[dict[str, Any]], page_size: int = 2) -> None:
        self.entities = entities
        self.page_size = page_size
        self.requests: list[tuple[str, dict[str, list[str]], str | None]] = []
        self.status_override: int | None = None
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                parsed = urllib.parse.urlparse(self.path)
                query = urllib.parse.parse_qs(parsed.query)
                fake.requests.append((parsed.path, query, self.headers.get("Authorization")))
                if fake.status_override is not None:
                    self._send(fake.status_override, {"error": {"name": "Boom", "message": "broken"}})
                    return
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    self._send(401, {"error": {"name": "AuthenticationError", "message": "Unauthorized"}})
                    return
                if parsed.path != "/api/catalog/entities/by-query":
                    self._send(404, {"error": {"name": "NotFoundError", "message": "no route"}})
                    return
                offset = int(query["cursor"][0]) if "cursor" in query else 0
                wanted = [
                    entity
                    for entity in fake.entities
                    if "cursor" in query or query.get("filter") == ["kind=group"]
                    if entity["kind"].lower() == "group"
                ]
                page = wanted[offset : offset + fake.page_size]
                body: dict[str, Any] = {"items": page, "totalItems": len(wanted), "pageInfo": {}}
                if offset + fake.page_size < len(wanted):
                    body["pageInfo"]["nextCursor"] = str(offset + fake.page_size)
                self._send(200, body)

            def _send(self, status: int, body: dict[str, Any]) -> None:
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        # shutdown() waits for the serving loop's next poll: 0.5 s per test at the default interval
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def backstage() -> Iterator[FakeBackstage]:
    server = FakeBackstage([])
    yield server
    server.stop()


def fetch(server: FakeBackstage) -> list[backstage_sync.BackstageGroup]:
    return backstage_groups_fetch(base_url=server.url, token=TOKEN, group_filter="kind=group", timeout=5)


def roles(team: Team) -> dict[str, str]:
    return {m.user.backstage_ref or m.user.username: m.role for m in Membership.objects.filter(team=team)}


# --- reading the catalog ---------------------------------------------------------------------------


def test_groups_are_read_page_by_page_with_the_token(backstage: FakeBackstage) -> None:
    backstage.entities = [
        group("alpha", ["jane"], related=["user:default/jane", "user:default/bob"]),
        group("beta", ["partners/Kim", "user:default/lee"], namespace="default"),
        group("gamma", annotations={"genai-portal.dev/team": "gamma-team"}, title="Gamma people"),
        {"kind": "User", "metadata": {"name": "jane"}, "spec": {}},
    ]
    groups = {g.ref: g for g in fetch(backstage)}

    assert sorted(groups) == ["group:default/alpha", "group:default/beta", "group:default/gamma"]
    assert groups["group:default/alpha"].members == {"user:default/jane", "user:default/bob"}
    # stringifyEntityRef lowercases the whole ref; spec.members keeps the case it was written in.
    assert groups["group:default/beta"].members == {"user:partners/kim", "user:default/lee"}
    assert groups["group:default/gamma"].team_slug == "gamma-team"
    assert groups["group:default/gamma"].title == "Gamma people"
    assert groups["group:default/alpha"].declared_roles is None
    assert [request[1].get("cursor") for request in backstage.requests] == [None, ["2"]]
    assert backstage.requests[0][1]["filter"] == ["kind=group"]
    assert {request[2] for request in backstage.requests} == {f"Bearer {TOKEN}"}


def test_role_annotations_declare_roles_of_members_only() -> None:
    parsed = backstage_sync.group_from_entity(
        group(
            "ml",
            ["jane", "bob"],
            annotations={
                "genai-portal.dev/admins": "jane, user:default/ops",
                "genai-portal.dev/viewers": "bob jane",
            },
        )
    )
    assert parsed is not None
    assert parsed.declared_roles == {"user:default/jane": "admin", "user:default/bob": "viewer"}
    assert parsed.members == {"user:default/jane", "user:default/bob"}
    assert parsed.annotated_non_members == {"user:default/ops"}


def test_refs_are_lowercase_whatever_case_members_and_annotations_are_written_in() -> None:
    parsed = backstage_sync.group_from_entity(
        group(
            "ML-Team",
            ["Jane.Doe", "partners/Kim"],
            related=["user:default/jane.doe", "user:partners/kim", "user:default/bob"],
            annotations={"genai-portal.dev/admins": "Jane.Doe User:Partners/KIM", "genai-portal.dev/viewers": "BOB"},
            namespace="Default",
        )
    )
    assert parsed is not None
    assert parsed.ref == "group:default/ml-team"
    assert parsed.members == {"user:default/jane.doe", "user:partners/kim", "user:default/bob"}
    assert parsed.declared_roles == {
        "user:default/jane.doe": "admin",
        "user:partners/kim": "admin",
        "user:default/bob": "viewer",
    }
    assert parsed.annotated_non_members == frozenset()


@pytest.mark.parametrize("status", [401, 500])
def test_a_catalog_that_refuses_is_an_error_that_names_the_status(backstage: FakeBackstage, status: int) -> None:
    backstage.status_override = status
    with pytest.raises(BackstageCatalogError, match=f"Backstage answered {status}"):
        fetch(backstage)


def test_a_wrong_token_is_refused_and_an_unreachable_catalog_is_an_error(backstage: FakeBackstage) -> None:
    with pytest.raises(BackstageCatalogError, match="answered 401"):
        backstage_groups_fetch(base_url=backstage.url, token="wrong-token", group_filter="kind=group", timeout=5)
    backstage.stop()
    with pytest.raises(BackstageCatalogError, match="could not be read"):
        fetch(backstage)
    backstage.server = ThreadingHTTPServer(("127.0.0.1", 0), backstage.server.RequestHandlerClass)  # for teardown
    # shutdown() waits for the serving loop's next poll: 0.5 s per test at the default interval
    backstage.thread = threading.Thread(
        target=backstage.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
    )
    backstage.thread.start()


# --- applying groups to teams ----------------------------------------------------------------------


def test_an_annotated_group_creates_its_team_with_declared_roles_audited_by_the_sync_principal(
    backstage: FakeBackstage,
) -> None:
    backstage.entities = [
        group(
            "ml-team",
            ["jane", "bob", "kim"],
            annotations={"genai-portal.dev/team": "ml", "genai-portal.dev/admins": "jane"},
            title="Machine learning",
        )
    ]
    report = backstage_teams_sync(groups=fetch(backstage), default_role=Role.DEVELOPER)

    team = Team.objects.get(slug="ml")
    assert (team.display_name, team.backstage_group_ref) == ("Machine learning", "group:default/ml-team")
    assert roles(team) == {
        "user:default/jane": "admin",
        "user:default/bob": "developer",
        "user:default/kim": "developer",
    }
    assert [t.created for t in report.teams] == [True]
    assert report.problems == []
    sync_user = User.objects.get(username="service:backstage-sync")
    assert sync_user.kind == User.Kind.SERVICE
    actions = list(AuditEvent.objects.filter(team_slug="ml").order_by("id").values_list("action", "actor_label"))
    assert actions[0] == ("team.create", "service:backstage-sync")
    assert actions.count(("membership.add", "service:backstage-sync")) == 3
    assert actions[-1] == ("team.backstage_sync", "service:backstage-sync")
    summary = AuditEvent.objects.get(action="team.backstage_sync", team_slug="ml")
    assert summary.after is not None
    assert summary.after["created"] is True
    assert sorted(summary.after["added"]) == [
        "user:default/bob as developer",
        "user:default/jane as admin",
        "user:default/kim as developer",
    ]


def test_a_linked_team_follows_its_group_and_roles_stay_with_the_portal_when_none_are_declared() -> None:
    team = TeamFactory(slug="alpha", backstage_group_ref="group:default/alpha")
    MembershipFactory(team=team, role=Role.ADMIN, user=UserFactory(backstage_ref="user:default/jane"))
    MembershipFactory(team=team, role=Role.VIEWER, user=UserFactory(backstage_ref="user:default/bob"))
    MembershipFactory(team=team, role=Role.DEVELOPER, user=UserFactory(backstage_ref="user:default/gone"))
    local = MembershipFactory(
        team=team, role=Role.VIEWER, user=UserFactory(username="local-person", backstage_ref=None)
    )
    groups = [backstage_sync.group_from_entity(group("alpha", ["jane", "bob", "new"]))]

    report = backstage_teams_sync(groups=[g for g in groups if g], default_role=Role.VIEWER)

    assert roles(team) == {
        "user:default/jane": "admin",
        "user:default/bob": "viewer",
        "user:default/new": "viewer",
        "local-person": "viewer",
    }
    assert Membership.objects.filter(pk=local.pk).exists()
    (team_report,) = report.teams
    assert (team_report.added, team_report.removed, team_report.changed) == (
        ["user:default/new as viewer"],
        ["user:default/gone"],
        [],
    )
    removed = AuditEvent.objects.get(action="membership.remove", team_slug="alpha")
    assert removed.actor_label == "service:backstage-sync"


def test_declared_roles_promote_and_demote() -> None:
    team = TeamFactory(slug="alpha", backstage_group_ref="group:default/alpha")
    MembershipFactory(team=team, role=Role.ADMIN, user=UserFactory(backstage_ref="user:default/jane"))
    MembershipFactory(team=team, role=Role.VIEWER, user=UserFactory(backstage_ref="user:default/bob"))
    parsed = backstage_sync.group_from_entity(
        group("alpha", ["jane", "bob"], annotations={"genai-portal.dev/admins": "bob"})
    )
    assert parsed is not None

    report = backstage_teams_sync(groups=[parsed], default_role=Role.DEVELOPER)

    assert roles(team) == {"user:default/jane": "developer", "user:default/bob": "admin"}
    assert sorted(report.teams[0].changed) == [
        "user:default/bob: viewer -> admin",
        "user:default/jane: admin -> developer",
    ]


NAMES_ALPHA = {"genai-portal.dev/team": "alpha"}  # the link is trusted even when no admin is a member


@pytest.mark.parametrize(
    "entity",
    [
        group("alpha", ["bob"], annotations=NAMES_ALPHA),  # the admin left the group, no roles declared
        group("alpha", ["jane", "bob"], annotations={"genai-portal.dev/developers": "jane bob"}),  # no admin declared
        group("alpha", [], annotations=NAMES_ALPHA),  # everybody left
    ],
)
def test_the_last_admin_is_never_removed_or_demoted(entity: dict[str, Any]) -> None:
    team = TeamFactory(slug="alpha", backstage_group_ref="group:default/alpha")
    MembershipFactory(team=team, role=Role.ADMIN, user=UserFactory(backstage_ref="user:default/jane"))
    MembershipFactory(team=team, role=Role.DEVELOPER, user=UserFactory(backstage_ref="user:default/bob"))
    parsed = backstage_sync.group_from_entity(entity)
    assert parsed is not None

    report = backstage_teams_sync(groups=[parsed], default_role=Role.DEVELOPER)

    assert roles(team)["user:default/jane"] == "admin"
    assert report.teams[0].kept_admins == ["user:default/jane"]
    assert Membership.objects.filter(team=team, role=Role.ADMIN).count() == 1


def test_a_second_run_changes_nothing_and_audits_nothing(backstage: FakeBackstage) -> None:
    backstage.entities = [
        group(
            "ml-team", ["jane", "bob"], annotations={"genai-portal.dev/team": "ml", "genai-portal.dev/admins": "jane"}
        )
    ]
    backstage_teams_sync(groups=fetch(backstage))
    events = AuditEvent.objects.count()

    report = backstage_teams_sync(groups=fetch(backstage))

    assert AuditEvent.objects.count() == events
    assert [t.changes for t in report.teams] == [False]


def test_a_team_is_never_taken_over_by_an_annotation(backstage: FakeBackstage) -> None:
    unlinked = TeamFactory(slug="ml", backstage_group_ref=None)
    MembershipFactory(team=unlinked, role=Role.ADMIN, user=UserFactory(backstage_ref="user:default/owner"))
    TeamFactory(slug="other", backstage_group_ref="group:default/somewhere")
    backstage.entities = [
        group("grab", ["mallory"], annotations={"genai-portal.dev/team": "ml", "genai-portal.dev/admins": "mallory"}),
        group("grab2", ["mallory"], annotations={"genai-portal.dev/team": "other"}),
        group("bad", ["x"], annotations={"genai-portal.dev/team": "Not_A_Slug"}),
    ]
    events = AuditEvent.objects.count()

    report = backstage_teams_sync(groups=fetch(backstage))

    assert roles(unlinked) == {"user:default/owner": "admin"}
    assert Team.objects.get(slug="ml").backstage_group_ref is None
    assert report.teams == []
    assert sorted(report.problems) == [
        "group:default/bad: 'Not_A_Slug' is not a valid team slug",
        "group:default/grab2: team 'other' exists and is linked to group:default/somewhere; "
        "a team admin links it by setting its backstage_group_ref",
        "group:default/grab: team 'ml' exists and is linked to no group; "
        "a team admin links it by setting its backstage_group_ref",
    ]
    assert AuditEvent.objects.count() == events


def test_teams_whose_group_is_not_in_backstage_and_creation_turned_off_are_left_alone() -> None:
    team = TeamFactory(slug="alpha", backstage_group_ref="group:default/alpha")
    MembershipFactory(team=team, role=Role.ADMIN, user=UserFactory(backstage_ref="user:default/jane"))
    parsed = backstage_sync.group_from_entity(group("new", ["bob"], annotations={"genai-portal.dev/team": "new"}))
    assert parsed is not None

    report = backstage_teams_sync(groups=[parsed], create_teams=False)

    assert roles(team) == {"user:default/jane": "admin"}
    assert not Team.objects.filter(slug="new").exists()
    assert report.teams == []


# --- whom the sync trusts ---------------------------------------------------------------------------


def test_lowercase_relations_and_mixed_case_annotations_make_no_phantom_user_and_demote_nobody() -> None:
    team = TeamFactory(slug="alpha", backstage_group_ref="group:default/alpha")
    jane = UserFactory(backstage_ref="user:default/jane.doe")
    MembershipFactory(team=team, role=Role.ADMIN, user=jane)
    MembershipFactory(team=team, role=Role.VIEWER, user=UserFactory(backstage_ref="user:default/bob"))
    # As the catalog answers: relations lowercase, spec.members and annotations as the YAML was written.
    parsed = backstage_sync.group_from_entity(
        group(
            "Alpha",
            ["Jane.Doe", "Bob"],
            related=["user:default/jane.doe", "user:default/bob"],
            annotations={"genai-portal.dev/admins": "Jane.Doe", "genai-portal.dev/viewers": "user:default/BOB"},
        )
    )
    assert parsed is not None
    users = User.objects.count()

    report = backstage_teams_sync(groups=[parsed], default_role=Role.DEVELOPER)

    assert roles(team) == {"user:default/jane.doe": "admin", "user:default/bob": "viewer"}
    assert User.objects.count() == users
    assert [t.changes for t in report.teams] == [False]
    assert not AuditEvent.objects.filter(action__startswith="membership.").exists()


def test_a_team_linked_to_a_group_its_admins_are_not_in_is_left_alone(backstage: FakeBackstage) -> None:
    # A team admin may write any group ref on their team; a group they are not in must not fill it.
    evil = TeamFactory(slug="evil", backstage_group_ref="group:default/finance")
    MembershipFactory(team=evil, role=Role.ADMIN, user=UserFactory(backstage_ref="user:default/mallory"))
    claimed = TeamFactory(slug="evil2", backstage_group_ref="group:default/payroll")
    MembershipFactory(team=claimed, role=Role.ADMIN, user=UserFactory(backstage_ref="user:default/mallory2"))
    backstage.entities = [
        group("finance", ["alice", "bob"], annotations={"genai-portal.dev/admins": "alice"}),
        # Names another team: the link of "evil2" is not trusted either (and "payroll" is not created).
        group("payroll", ["carol"], annotations={"genai-portal.dev/team": "payroll"}),
    ]
    events = AuditEvent.objects.count()

    report = backstage_teams_sync(groups=fetch(backstage))

    assert roles(evil) == {"user:default/mallory": "admin"}
    assert roles(claimed) == {"user:default/mallory2": "admin"}
    assert not Team.objects.filter(slug="payroll").exists()
    assert not User.objects.filter(backstage_ref__in=["user:default/alice", "user:default/carol"]).exists()
    assert report.teams == []
    assert report.untrusted_links == [
        "group:default/finance: team 'evil' is linked to it, but the group does not name the team "
        "(genai-portal.dev/team) and none of the team's admins is a member; left alone",
        "group:default/payroll: team 'evil2' is linked to it, but the group does not name the team "
        "(genai-portal.dev/team) and none of the team's admins is a member; left alone",
    ]
    assert AuditEvent.objects.count() == events


def test_an_admin_named_only_by_an_annotation_does_not_make_a_link_trusted() -> None:
    team = TeamFactory(slug="evil", backstage_group_ref="group:default/finance")
    MembershipFactory(team=team, role=Role.ADMIN, user=UserFactory(backstage_ref="user:default/mallory"))
    parsed = backstage_sync.group_from_entity(
        group("finance", ["alice"], annotations={"genai-portal.dev/admins": "mallory alice"})
    )
    assert parsed is not None

    report = backstage_teams_sync(groups=[parsed])

    assert roles(team) == {"user:default/mallory": "admin"}
    assert len(report.untrusted_links) == 1


@pytest.mark.parametrize(
    ("members", "annotations"),
    [
        (["jane", "alice"], {}),  # an admin of the team is a member of the group
        (["alice"], {"genai-portal.dev/team": "alpha"}),  # the group names the team
    ],
)
def test_a_trusted_link_is_synced(members: list[str], annotations: dict[str, str]) -> None:
    team = TeamFactory(slug="alpha", backstage_group_ref="group:default/alpha")
    MembershipFactory(team=team, role=Role.ADMIN, user=UserFactory(backstage_ref="user:default/jane"))
    parsed = backstage_sync.group_from_entity(group("Alpha", members, annotations=annotations))
    assert parsed is not None

    report = backstage_teams_sync(groups=[parsed], default_role=Role.VIEWER)

    assert roles(team)["user:default/alice"] == "viewer"
    assert report.untrusted_links == []
    assert [t.team for t in report.teams] == ["alpha"]


def test_role_annotations_give_roles_to_members_only(caplog: pytest.LogCaptureFixture) -> None:
    team = TeamFactory(slug="alpha", backstage_group_ref="group:default/alpha")
    MembershipFactory(team=team, role=Role.ADMIN, user=UserFactory(backstage_ref="user:default/jane"))
    parsed = backstage_sync.group_from_entity(
        group(
            "alpha",
            ["jane", "bob"],
            annotations={"genai-portal.dev/admins": "jane mallory", "genai-portal.dev/viewers": "user:partners/eve"},
        )
    )
    assert parsed is not None

    with caplog.at_level("INFO", logger="portal.tenancy.backstage_sync"):
        report = backstage_teams_sync(groups=[parsed], default_role=Role.DEVELOPER)

    assert roles(team) == {"user:default/jane": "admin", "user:default/bob": "developer"}
    assert not User.objects.filter(backstage_ref__in=["user:default/mallory", "user:partners/eve"]).exists()
    assert report.teams[0].ignored_non_members == ["user:default/mallory", "user:partners/eve"]
    assert "names user:default/mallory, user:partners/eve in a role annotation but not as members" in caplog.text


def test_no_team_is_created_when_only_platform_admins_create_teams(backstage: FakeBackstage, settings: Any) -> None:
    settings.TEAM_CREATION = "admins"
    linked = TeamFactory(slug="alpha", backstage_group_ref="group:default/alpha")
    MembershipFactory(team=linked, role=Role.ADMIN, user=UserFactory(backstage_ref="user:default/jane"))
    backstage.entities = [
        group("ml-team", ["kim"], annotations={"genai-portal.dev/team": "ml", "genai-portal.dev/admins": "kim"}),
        group("alpha", ["jane", "bob"]),
    ]

    report = backstage_teams_sync(groups=fetch(backstage), create_teams=True)

    assert not Team.objects.filter(slug="ml").exists()
    assert not User.objects.filter(backstage_ref="user:default/kim").exists()
    assert roles(linked) == {"user:default/jane": "admin", "user:default/bob": "developer"}
    assert [t.team for t in report.teams] == ["alpha"]


def test_only_groups_from_trusted_origins_are_applied(backstage: FakeBackstage, settings: Any) -> None:
    settings.BACKSTAGE_SYNC_TRUSTED_ORIGINS = ("url:https://github.com/acme/org/",)
    origin = "backstage.io/managed-by-origin-location"
    linked = TeamFactory(slug="alpha", backstage_group_ref="group:default/alpha")
    MembershipFactory(team=linked, role=Role.ADMIN, user=UserFactory(backstage_ref="user:default/jane"))
    backstage.entities = [
        group(
            "ml-team",
            ["kim"],
            annotations={"genai-portal.dev/team": "ml", origin: "url:https://github.com/acme/org/blob/main/org.yaml"},
        ),
        group("alpha", ["jane", "eve"], annotations={origin: "url:https://github.com/someone/else/org.yaml"}),
        group("beta", ["x"], annotations={"genai-portal.dev/team": "beta"}),  # no origin at all
    ]

    report = backstage_teams_sync(groups=fetch(backstage))

    assert roles(Team.objects.get(slug="ml")) == {"user:default/kim": "developer"}
    assert roles(linked) == {"user:default/jane": "admin"}
    assert not Team.objects.filter(slug="beta").exists()
    assert report.untrusted_groups == ["group:default/alpha", "group:default/beta"]

    settings.BACKSTAGE_SYNC_TRUSTED_ORIGINS = ()  # empty: every group
    backstage_teams_sync(groups=fetch(backstage))
    assert roles(linked) == {"user:default/jane": "admin", "user:default/eve": "developer"}
    assert Team.objects.filter(slug="beta").exists()


# --- the scheduled task ----------------------------------------------------------------------------


def test_the_task_syncs_from_the_configured_backstage(backstage: FakeBackstage, settings: Any) -> None:
    settings.BACKSTAGE_URL = backstage.url
    settings.BACKSTAGE_CATALOG_TOKEN = TOKEN
    settings.BACKSTAGE_SYNC_DEFAULT_ROLE = Role.VIEWER
    backstage.entities = [
        group(
            "ml-team", ["jane", "bob"], annotations={"genai-portal.dev/team": "ml", "genai-portal.dev/admins": "jane"}
        )
    ]

    summary = sync_backstage_teams()

    assert summary == {
        "groups": 1,
        "teams": 1,
        "created": 1,
        "changed": 1,
        "problems": 0,
        "untrusted_links": 0,
        "untrusted_groups": 0,
        "ignored_non_members": 0,
    }
    assert roles(Team.objects.get(slug="ml")) == {"user:default/jane": "admin", "user:default/bob": "viewer"}


def test_the_task_does_nothing_when_backstage_is_not_configured(settings: Any) -> None:
    settings.BACKSTAGE_URL = None
    assert sync_backstage_teams() is None
    assert not User.objects.filter(username="service:backstage-sync").exists()


def test_a_failed_read_changes_nothing(backstage: FakeBackstage, settings: Any) -> None:
    settings.BACKSTAGE_URL = backstage.url
    settings.BACKSTAGE_CATALOG_TOKEN = "not-the-token"
    team = TeamFactory(slug="alpha", backstage_group_ref="group:default/alpha")
    MembershipFactory(team=team, role=Role.ADMIN, user=UserFactory(backstage_ref="user:default/jane"))

    with pytest.raises(BackstageCatalogError):
        backstage_sync.backstage_sync_run()

    assert roles(team) == {"user:default/jane": "admin"}


# --- settings --------------------------------------------------------------------------------------


def test_trusted_origins_are_read_as_a_comma_separated_list() -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PORTAL_BACKSTAGE")}
    program = "import portal.settings.backstage as s; print(repr(s.BACKSTAGE_SYNC_TRUSTED_ORIGINS))"
    for value, expected in [
        (None, "()"),
        ("url:https://a/org/, file:/srv/org ,", "('url:https://a/org/', 'file:/srv/org')"),
    ]:
        environment = clean if value is None else {**clean, "PORTAL_BACKSTAGE_SYNC_TRUSTED_ORIGINS": value}
        result = subprocess.run(
            [sys.executable, "-c", program], env=environment, capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == expected


@pytest.mark.parametrize(
    ("environment", "error"),
    [
        ({"PORTAL_BACKSTAGE_URL": "http://backstage:7007"}, "PORTAL_BACKSTAGE_CATALOG_TOKEN must be set"),
        ({"PORTAL_BACKSTAGE_URL": "http://b", "PORTAL_BACKSTAGE_CATALOG_TOKEN": "short"}, "at least 8 characters"),
        ({"PORTAL_BACKSTAGE_URL": "ftp://b", "PORTAL_BACKSTAGE_CATALOG_TOKEN": "long-enough"}, "scheme http, https"),
        ({"PORTAL_BACKSTAGE_SYNC_DEFAULT_ROLE": "owner"}, "must be one of admin, developer, viewer"),
        ({"PORTAL_BACKSTAGE_URL": "https://b", "PORTAL_BACKSTAGE_CATALOG_TOKEN": "long-enough"}, None),
    ],
)
def test_backstage_settings_are_validated_at_startup(environment: dict[str, str], error: str | None) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PORTAL_BACKSTAGE")}
    result = subprocess.run(
        [sys.executable, "-c", "import portal.settings.backstage as s; print(s.BACKSTAGE_URL)"],
        env={**clean, **environment},
        capture_output=True,
        text=True,
        check=False,
    )
    if error is None:
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == environment["PORTAL_BACKSTAGE_URL"]
    else:
        assert result.returncode != 0
        assert error in result.stderr
