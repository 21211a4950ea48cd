"""Ownership labels: every object the portal creates carries them, so it can be listed and pruned by selector."""

from __future__ import annotations

MANAGED_BY_KEY = "app.kubernetes.io/managed-by"
MANAGED_BY = "genai-portal"
TEAM_KEY = "portal.genai.io/team"
DEPLOYMENT_KEY = "portal.genai.io/deployment"
DEPLOYMENT_ID_KEY = "portal.genai.io/deployment-id"
COMPONENT_KEY = "portal.genai.io/component"  # which part of a gateway's configuration an object is


def team_labels(team_slug: str) -> dict[str, str]:
    return {MANAGED_BY_KEY: MANAGED_BY, TEAM_KEY: team_slug}


def deployment_labels(team_slug: str, deployment_name: str, deployment_id: int) -> dict[str, str]:
    return {**team_labels(team_slug), DEPLOYMENT_KEY: deployment_name, DEPLOYMENT_ID_KEY: str(deployment_id)}


def deployment_selector(deployment_id: int) -> str:
    return f"{MANAGED_BY_KEY}={MANAGED_BY},{DEPLOYMENT_ID_KEY}={deployment_id}"


def team_namespace(namespace_prefix: str, team_slug: str) -> str:
    return f"{namespace_prefix}{team_slug}"
