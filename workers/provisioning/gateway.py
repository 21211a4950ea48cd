"""The gateway-policy reconciler: one cluster's aggregate gateway policy, level-triggered, keyed by policy id.

One pass: take the policy's lock, load the frozen spec (every team's keys, limits and blocks, provider backends,
managed models), render the policy (pure), apply only objects whose content hash changed (server-side apply,
field manager genai-portal) in the builder's order (keys and the SecurityPolicy first), prune owned objects no
longer desired (by labels), and record generation, fingerprint and what was applied (secrets redacted). An
unchanged policy costs reads, never writes.

An object that would break an upstream limit (the token-limit policy over its rule limit) is withheld, its live
copy kept, and the policy recorded Degraded with the limit named: keys still converge, so revocation, expiry and
suspension are never held back by it. A cluster refusing an object is Failed: the writes made so far are
reported and the generation is not recorded as observed, so the resync tries again.

Quota changes and team suspension happen in tenancy, which knows nothing of the gateway: the periodic resync
finds them, and key expiry and catalog changes, and bumps the generation of the policies they change, so they
converge within one resync without any app having to call the gateway. Its cost grows with what changed: each
reconcile keeps (in Redis) a fingerprint of its inputs read with every secret replaced by a digest; the resync reads
the same, and a policy whose inputs are unchanged is skipped without decrypting or rendering anything. Only a policy
whose inputs changed (or whose kept fingerprint is older than FULL_CHECK_SECONDS, or lost) is rendered whole and
compared with what was applied.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from django.utils import timezone

from portal.clusters import selectors as cluster_selectors
from portal.deployments import selectors as deployment_selectors
from portal.gateway import conf as gateway_conf
from portal.gateway import selectors as gateway_selectors
from portal.gateway import services as gateway_services
from portal.gateway.contracts import GatewayPolicySpec
from workers.kube.client import Cluster, ListedObject, connect
from workers.kube.errors import TerminalClusterError
from workers.provisioning.manifests.gateway import GatewayPolicyRender, policy_selector, render_gateway_policy
from workers.provisioning.manifests.upstream import AIGW_API_VERSION, EG_API_VERSION
from workers.provisioning.reconciler import converge, prune, reconcile_lock, redacted, redis_client, with_hash

# A policy whose inputs look unchanged is still rendered whole and compared this often: a backstop for an input the
# fingerprint could miss, as the deployments' slow sweep is for theirs.
FULL_CHECK_SECONDS = 600

# Kinds the gateway policy can own, all in the cluster's gateway namespace (a deployment's are the reconciler's
# OWNED_KINDS).
POLICY_OWNED_KINDS = (
    ("v1", "Secret"),
    (EG_API_VERSION, "ClientTrafficPolicy"),
    (EG_API_VERSION, "SecurityPolicy"),
    (EG_API_VERSION, "BackendTrafficPolicy"),
    (EG_API_VERSION, "Backend"),
    (AIGW_API_VERSION, "AIServiceBackend"),
    (AIGW_API_VERSION, "BackendSecurityPolicy"),
    (AIGW_API_VERSION, "AIGatewayRoute"),
)


class GatewayPolicyBusy(Exception):
    """Another worker holds this policy's lock; the task retries shortly."""


@dataclass(frozen=True)
class GatewayReconcileResult:
    policy_id: int
    outcome: str  # "applied", "unchanged", "degraded", "failed", "gone"
    writes: int
    message: str = ""


def policy_lock(policy_id: int) -> AbstractContextManager[None]:
    return reconcile_lock(
        f"gateway-policy:{policy_id}",
        GatewayPolicyBusy(f"gateway policy {policy_id} is being reconciled elsewhere"),
    )


def render(spec: GatewayPolicySpec) -> GatewayPolicyRender:
    return render_gateway_policy(
        spec, collector=gateway_conf.otel_collector(), max_rate_limit_rules=gateway_conf.max_rate_limit_rules()
    )


def fingerprint(rendered: GatewayPolicyRender) -> str:
    """A digest of the desired policy and what it withholds (keys included, so a changed key changes it; not
    reversible)."""
    document = {"objects": rendered.objects, "problems": list(rendered.problems)}
    return hashlib.sha256(json.dumps(document, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def policy_spec(policy_id: int, *, decrypt: bool = True) -> GatewayPolicySpec | None:
    """The gateway's desired policy, composed here because its key allow-lists cover the names deployments serve:
    gateway and deployments are independent siblings, and the worker above both hands one's reader to the other."""
    return gateway_selectors.gateway_policy_spec(
        policy_id=policy_id, decrypt=decrypt, deployment_served_names=deployment_selectors.served_names_on_cluster
    )


def desired_fingerprint(policy_id: int) -> str | None:
    """The fingerprint of what the policy should be now; None when the policy is gone."""
    spec = policy_spec(policy_id)
    if spec is None:
        return None
    return fingerprint(render(spec))


def inputs_fingerprint(policy_id: int) -> str | None:
    """A digest of everything the policy is rendered from, read with secrets as digests (no key is decrypted):
    equal fingerprints render equal policies. None when the policy is gone."""
    spec = policy_spec(policy_id, decrypt=False)
    if spec is None:
        return None
    document = {
        "spec": dataclasses.asdict(dataclasses.replace(spec, generation=0)),
        "collector": gateway_conf.otel_collector(),
        "max_rate_limit_rules": gateway_conf.max_rate_limit_rules(),
    }
    encoded = json.dumps(document, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(encoded).hexdigest()


def _inputs_key(policy_id: int) -> str:
    return f"portal:gateway-inputs:{policy_id}"


def _keep_inputs(policy_id: int, inputs: str | None, applied: str) -> None:
    """What the policy's applied content was rendered from, for the resync to skip it while nothing changed."""
    if inputs is not None and applied:
        redis_client().set(_inputs_key(policy_id), f"{inputs} {applied}", ex=FULL_CHECK_SECONDS)


def _inputs_unchanged(policy_id: int, applied: str) -> bool:
    kept = redis_client().get(_inputs_key(policy_id))
    return isinstance(kept, bytes) and kept.decode() == f"{inputs_fingerprint(policy_id)} {applied}"


def _owned(cluster: Cluster, spec: GatewayPolicySpec) -> list[ListedObject]:
    found: list[ListedObject] = []
    for api_version, kind in POLICY_OWNED_KINDS:
        found.extend(
            cluster.list(api_version, kind, label_selector=policy_selector(), namespace=spec.cluster.gateway_namespace)
        )
    return found


def _record(
    spec: GatewayPolicySpec,
    digest: str,
    phase: str,
    message: str,
    applied: list[dict[str, Any]] | None,
    *,
    observed: bool = True,
) -> None:
    gateway_services.gateway_policy_status_record(
        policy_id=spec.policy_id,
        generation=spec.generation,
        fingerprint=digest,
        phase=phase,
        message=message,
        reconciled_at=timezone.now(),
        applied_manifests=applied,
        observed=observed,
    )


def reconcile_gateway_policy(policy_id: int) -> GatewayReconcileResult:
    with policy_lock(policy_id):
        inputs = inputs_fingerprint(policy_id)  # read first: a change made meanwhile is never taken as applied
        spec = policy_spec(policy_id)
        if spec is None:
            return GatewayReconcileResult(policy_id, "gone", 0)
        rendered = render(spec)
        desired = rendered.objects
        digest = fingerprint(rendered)
        cluster = connect(cluster_selectors.cluster_connection(cluster_id=spec.cluster.cluster_id))
        writes = 0
        try:
            for manifest in desired:  # one at a time, so a refusal part-way reports the writes already made
                try:
                    applied, _ = converge(cluster, [manifest])
                except TerminalClusterError as error:
                    if manifest["kind"] != "BackendTrafficPolicy":
                        raise
                    # The blocks did not reach the cluster: the keys still converge (revocation, expiry), but no
                    # blocked team's key may go live without its block, so they are rendered without those.
                    writes += _converge_keys_without_blocks(cluster, spec)
                    raise error from None
                writes += applied
            # A withheld object keeps its live copy: listed as wanted, so prune leaves it alone.
            kept = [{"kind": kind, "metadata": {"name": name}} for kind, name in rendered.withheld]
            writes += prune(cluster, _owned(cluster, spec), desired + kept)
        except TerminalClusterError as error:
            message = f"the cluster refused the gateway policy: {error.message}"
            if rendered.problems:
                message += "; withheld: " + "; ".join(rendered.problems)
            _record(spec, "", "Failed", message, None, observed=False)
            return GatewayReconcileResult(policy_id, "failed", writes, error.message)
        applied_manifests = redacted([with_hash(item) for item in desired])
        if rendered.problems:
            held = "withheld, the rest applied: " if rendered.withheld else ""
            message = held + "the gateway policy breaks an upstream limit: " + "; ".join(rendered.problems)
            _record(spec, digest, "Degraded", message, applied_manifests)
            _keep_inputs(policy_id, inputs, digest)
            return GatewayReconcileResult(policy_id, "degraded", writes, message)
        _record(spec, digest, "Ready", "", applied_manifests)
        _keep_inputs(policy_id, inputs, digest)
        return GatewayReconcileResult(policy_id, "applied" if writes else "unchanged", writes)


def _converge_keys_without_blocks(cluster: Cluster, spec: GatewayPolicySpec) -> int:
    """The key Secrets and their SecurityPolicy with every blocked team's keys left out (used when the cluster
    refused the token-limit policy that carries the blocks)."""
    rendered = render_gateway_policy(
        spec,
        collector=gateway_conf.otel_collector(),
        max_rate_limit_rules=gateway_conf.max_rate_limit_rules(),
        without_blocked_teams_keys=True,
    )
    keys = [item for item in rendered.objects if item["kind"] in ("Secret", "SecurityPolicy")]
    writes, _ = converge(cluster, keys)
    wanted = {item["metadata"]["name"] for item in keys if item["kind"] == "Secret"}
    namespace = spec.cluster.gateway_namespace
    for live in cluster.list("v1", "Secret", label_selector=policy_selector(), namespace=namespace):
        if live.name not in wanted and cluster.delete("v1", "Secret", live.name, namespace):
            writes += 1
    return writes


def policies_needing_reconcile() -> list[int]:
    """Policies whose generation is ahead of what was observed, and those whose desired content differs from the one
    applied (quota edits, suspension, expired keys, catalog changes made elsewhere); the latter get their generation
    bumped here, so the pending change shows as observed_generation < generation. A policy whose inputs fingerprint
    is the one kept by its last apply costs a few queries: nothing is decrypted, rendered or hashed but metadata."""
    gateway_services.gateway_policies_ensure()
    behind = set(gateway_selectors.gateway_policy_ids(behind_only=True))
    drifted: set[int] = set()
    for policy_id, applied in gateway_selectors.gateway_policy_fingerprints().items():
        if policy_id in behind or (applied and _inputs_unchanged(policy_id, applied)):
            continue
        inputs = inputs_fingerprint(policy_id)
        desired = desired_fingerprint(policy_id)
        if desired != applied:
            drifted.add(policy_id)
        elif desired is not None:
            _keep_inputs(policy_id, inputs, applied)
    if drifted:
        gateway_services.gateway_policies_bump_drifted(policy_ids=drifted)
    return sorted(behind | drifted)
