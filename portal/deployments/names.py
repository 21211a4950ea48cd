"""The name a deployment is known by outside its team's namespace: its served model name at the gateway, which is
also the name of its Backend, AIServiceBackend, AIGatewayRoute (the cluster's shared gateway namespace) and
LocalModelCache (cluster-scoped). Pure: no Django.

Unique across teams by construction, never by luck: `f"{team}-{name}"` made team `team` deploying `b-chat` and team
`team-b` deploying `chat` write the same objects (one team took over the other's route). The rule:

- short form `<team>--<name>` when neither part contains `--` and it fits a DNS label (63 characters). A team slug
  never ends in `-` and a deployment name starts with a letter, so the first `--` is the separator: the pair is
  read back from the name, and two deployments with the same short name are the same (team, name).
- long form `<team>-<name>` cut to fit, then `--<deployment id>`, otherwise. It ends in `--` and digits; a short
  form never does (after its last `--` comes the deployment name, which starts with a letter). The id is read
  back from the end, so two deployments with the same long name are the same deployment.

Names the portal itself writes in the gateway namespace start with `genai-portal` (key Secrets, policies, managed
routes, provider backends), a prefix team slugs may not take, so those never collide with a deployment either.
"""

from __future__ import annotations

MAX_DNS_LABEL = 63
SEPARATOR = "--"
# Every name the portal writes in a shared namespace for itself starts with this; team slugs may not.
RESERVED_TEAM_PREFIX = "genai-portal"


def deployment_gateway_name(*, team_slug: str, name: str, deployment_id: int) -> str:
    short = f"{team_slug}{SEPARATOR}{name}"
    if SEPARATOR not in team_slug and SEPARATOR not in name and len(short) <= MAX_DNS_LABEL:
        return short
    suffix = f"{SEPARATOR}{deployment_id}"
    readable = f"{team_slug}-{name}"[: MAX_DNS_LABEL - len(suffix)].rstrip("-")
    return f"{readable}{suffix}"


def team_slug_reserved(slug: str) -> bool:
    return slug.startswith(RESERVED_TEAM_PREFIX)
