"""Reading Backstage's catalog: where it is, the external-access token, and how groups become teams."""

from __future__ import annotations

from portal.settings.env import ENV, ConfigurationError

# The Backstage backend's base URL (e.g. https://backstage.example.com); unset turns the team sync off.
BACKSTAGE_URL = ENV.url("PORTAL_BACKSTAGE_URL", schemes=frozenset({"http", "https"}))
# A static external-access token of that backend (backend.auth.externalAccess, type static, read on catalog).
BACKSTAGE_CATALOG_TOKEN = ENV.text("PORTAL_BACKSTAGE_CATALOG_TOKEN")
if BACKSTAGE_URL and not BACKSTAGE_CATALOG_TOKEN:
    raise ConfigurationError("PORTAL_BACKSTAGE_CATALOG_TOKEN must be set when PORTAL_BACKSTAGE_URL is set")
if BACKSTAGE_CATALOG_TOKEN is not None and (
    len(BACKSTAGE_CATALOG_TOKEN) < 8 or any(c.isspace() for c in BACKSTAGE_CATALOG_TOKEN)
):
    raise ConfigurationError("PORTAL_BACKSTAGE_CATALOG_TOKEN must be at least 8 characters without whitespace")
# Which groups are read: a Backstage catalog filter (by-query `filter`).
BACKSTAGE_SYNC_GROUP_FILTER = ENV.text("PORTAL_BACKSTAGE_SYNC_FILTER", "kind=group") or "kind=group"
# The role of a group member when the group declares no roles (genai-portal.dev/admins etc.).
BACKSTAGE_SYNC_DEFAULT_ROLE = ENV.choice(
    "PORTAL_BACKSTAGE_SYNC_DEFAULT_ROLE", "developer", choices=frozenset({"admin", "developer", "viewer"})
)
# Create a team for a group annotated genai-portal.dev/team when none exists yet.
BACKSTAGE_SYNC_CREATE_TEAMS = ENV.boolean("PORTAL_BACKSTAGE_SYNC_CREATE_TEAMS", default=True)
BACKSTAGE_SYNC_TIMEOUT_SECONDS = ENV.integer("PORTAL_BACKSTAGE_SYNC_TIMEOUT_SECONDS", 10, minimum=1, maximum=300)
# Only groups whose `backstage.io/managed-by-origin-location` annotation starts with one of these prefixes
# (comma-separated, e.g. `url:https://github.com/acme/org/`) are trusted by the team sync; empty: every group.
BACKSTAGE_SYNC_TRUSTED_ORIGINS = tuple(ENV.text_list("PORTAL_BACKSTAGE_SYNC_TRUSTED_ORIGINS", []))
