"""k8s/portal: the base and the production overlay render with kustomize, every object validates strictly
against the Kubernetes schemas (custom resources against their CRDs where ../shared/crds has them), and the
deployment's rules hold: one worker per Celery queue, one beat, web autoscaled and disruption-budgeted, the
migration before the rollout, pods that run as the image's non-root user, measured requests and limits, and
network policies that let each component reach only what it needs."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from django.conf import settings

from tests.k8s import dockerfile
from tests.k8s.manifests import (
    K8S,
    KUBERNETES_VERSIONS,
    crd_causes,
    find,
    is_builtin,
    one,
    pod_specs,
    render,
    schema_problems,
)

BASE = K8S / "portal" / "base"
PRODUCTION = K8S / "portal" / "overlays" / "production"
KUSTOMIZATIONS = {"base": BASE, "production": PRODUCTION}
COMPONENT = "app.kubernetes.io/component"


@pytest.fixture(scope="module")
def production() -> list[dict[str, Any]]:
    return render(PRODUCTION)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("kustomization", sorted(KUSTOMIZATIONS))
def test_every_builtin_object_validates_strictly(kustomization: str, version: str) -> None:
    manifests = render(KUSTOMIZATIONS[kustomization])
    builtin = [manifest for manifest in manifests if is_builtin(manifest, version)]
    assert [m["kind"] for m in manifests if m not in builtin] == ["ServiceMonitor", "ServiceMonitor"]
    assert [problem for problem in (schema_problems(m, version) for m in builtin) if problem] == []


def test_a_schema_violation_is_caught(production: list[dict[str, Any]]) -> None:
    web = one(production, "Deployment", "genai-portal-web")
    broken = {**web, "spec": {**web["spec"], "replica": 3}}
    assert schema_problems(broken, KUBERNETES_VERSIONS[-1]) is not None


@pytest.mark.parametrize("name", ["genai-portal-web", "genai-portal-worker"])
def test_the_service_monitors_validate_against_their_crd(production: list[dict[str, Any]], name: str) -> None:
    causes = crd_causes(one(production, "ServiceMonitor", name))
    if causes is None:
        pytest.skip(
            "no monitoring.coreos.com ServiceMonitor CRD in ../shared/crds (or PORTAL_CRD_DIR): "
            "Prometheus Operator's CRD is not among the reference CRDs yet"
        )
    assert causes == []


def test_one_worker_deployment_per_celery_queue(production: list[dict[str, Any]]) -> None:
    routes = getattr(settings, "CELERY_TASK_ROUTES", None) or {}
    queues = {getattr(settings, "CELERY_TASK_DEFAULT_QUEUE", "celery")} | {
        route["queue"] for route in routes.values() if "queue" in route
    }
    workers = [d for d in find(production, "Deployment") if d["metadata"]["labels"][COMPONENT] == "worker"]
    served = {}
    for worker in workers:
        command = worker["spec"]["template"]["spec"]["containers"][0]["command"]
        queue_arguments = [
            argument.removeprefix("--queues=") for argument in command if argument.startswith("--queues=")
        ]
        assert len(queue_arguments) == 1, f"{worker['metadata']['name']} must name exactly one queue"
        served[queue_arguments[0]] = worker["metadata"]["name"]
    assert set(served) == queues == {"celery", "reconcile", "usage", "rerate"}
    assert served == {queue: f"genai-portal-worker-{queue}" for queue in queues}
    replicas = {queue: one(production, "Deployment", name)["spec"]["replicas"] for queue, name in served.items()}
    assert replicas == {"reconcile": 3, "usage": 2, "rerate": 1, "celery": 1}


def test_beat_is_exactly_one_replica_replaced_not_rolled(production: list[dict[str, Any]]) -> None:
    beat = one(production, "Deployment", "genai-portal-beat")
    assert beat["spec"]["replicas"] == 1
    assert beat["spec"]["strategy"] == {"type": "Recreate"}
    assert [
        h
        for h in find(production, "HorizontalPodAutoscaler")
        if h["spec"]["scaleTargetRef"]["name"] == "genai-portal-beat"
    ] == []


def test_web_is_autoscaled_and_disruption_budgeted(production: list[dict[str, Any]]) -> None:
    web = one(production, "Deployment", "genai-portal-web")
    assert "replicas" not in web["spec"]  # the autoscaler owns it; an apply must not reset it
    autoscaler = one(production, "HorizontalPodAutoscaler", "genai-portal-web")
    assert autoscaler["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "genai-portal-web",
    }
    assert (autoscaler["spec"]["minReplicas"], autoscaler["spec"]["maxReplicas"]) == (3, 10)
    budget = one(production, "PodDisruptionBudget", "genai-portal-web")
    assert budget["spec"]["selector"]["matchLabels"] == web["spec"]["template"]["metadata"]["labels"]
    assert budget["spec"]["maxUnavailable"] == 1
    assert web["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_the_migration_runs_before_the_new_pods_start(production: list[dict[str, Any]]) -> None:
    job = one(production, "Job", "genai-portal-migrate")
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["python", "manage.py", "migrate", "--noinput"]
    assert job["metadata"]["annotations"]["argocd.argoproj.io/hook"] == "PreSync"
    for name, spec in pod_specs(production).items():
        if name.startswith("Deployment/"):
            init = [container["name"] for container in spec.get("initContainers", [])]
            assert init == ["wait-for-migrations"], name
            assert "manage.py migrate --check" in " ".join(spec["initContainers"][0]["command"])


def test_every_pod_runs_the_image_as_its_non_root_user(production: list[dict[str, Any]]) -> None:
    runtime = next(stage for stage in dockerfile.stages() if stage.name == "runtime")
    user, _, group = runtime.of("USER")[0].partition(":")
    for name, spec in pod_specs(production).items():
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert (spec["securityContext"]["runAsUser"], spec["securityContext"]["runAsGroup"]) == (int(user), int(group))
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert spec["automountServiceAccountToken"] is False
        for container in spec.get("initContainers", []) + spec["containers"]:
            assert container["image"] == "registry.example.com/platform/genai-portal:0.1.0", name
            assert container["securityContext"] == {
                "allowPrivilegeEscalation": False,
                "readOnlyRootFilesystem": True,
                "capabilities": {"drop": ["ALL"]},
            }, name
            resources = container["resources"]
            assert set(resources["requests"]) == set(resources["limits"]) == {"cpu", "memory"}, name
            assert container["envFrom"] == [
                {"configMapRef": {"name": _config_map_name(production)}},
                {"secretRef": {"name": "genai-portal"}},
            ]


def _config_map_name(manifests: list[dict[str, Any]]) -> str:
    names = [manifest["metadata"]["name"] for manifest in find(manifests, "ConfigMap")]
    assert len(names) == 1
    assert names[0].startswith("genai-portal-")  # the generator's hashed name
    return names[0]


def _selected(policy: dict[str, Any], labels: dict[str, str]) -> bool:
    selector = policy["spec"]["podSelector"]
    if any(labels.get(key) != value for key, value in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        assert expression["operator"] == "In"
        if labels.get(expression["key"]) not in expression["values"]:
            return False
    return True


def _egress(manifests: list[dict[str, Any]], labels: dict[str, str]) -> set[tuple[str, int]]:
    """(destination, port) pairs the pods with these labels may reach."""
    reachable = set()
    for policy in find(manifests, "NetworkPolicy"):
        if not _selected(policy, labels):
            continue
        for rule in policy["spec"].get("egress", []):
            for peer in rule["to"]:
                if "ipBlock" in peer:
                    destination = peer["ipBlock"]["cidr"]
                else:
                    destination = peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
                for port in rule["ports"]:
                    reachable.add((destination, port["port"]))
    return reachable


def test_network_policies_deny_by_default_and_allow_each_component_only_its_peers(
    production: list[dict[str, Any]],
) -> None:
    deny = one(production, "NetworkPolicy", "default-deny")
    assert deny["spec"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    dns = {("kube-system", 53), ("monitoring", 4318)}  # name resolution; traces, when configured
    database, broker, clusters = ("10.40.0.0/24", 5432), ("10.40.1.0/24", 6379), "10.80.0.0/16"
    backstage = ("backstage", 7007)
    labels = {
        component: one(production, kind, name)["spec"]["template"]["metadata"]["labels"]
        for component, kind, name in [
            ("web", "Deployment", "genai-portal-web"),
            ("worker", "Deployment", "genai-portal-worker-celery"),
            ("beat", "Deployment", "genai-portal-beat"),
            ("migrate", "Job", "genai-portal-migrate"),
        ]
    }
    assert _egress(production, labels["worker"]) == dns | {
        database,
        broker,
        (clusters, 443),
        (clusters, 6443),
        backstage,
    }
    assert _egress(production, labels["web"]) == dns | {database, broker, backstage}
    assert _egress(production, labels["beat"]) == dns | {database, broker}
    assert _egress(production, labels["migrate"]) == dns | {database}
    for policy in find(production, "NetworkPolicy"):
        for rule in policy["spec"].get("egress", []):
            for peer in rule["to"]:
                if "ipBlock" in peer:
                    assert ipaddress.ip_network(peer["ipBlock"]["cidr"]).is_private  # the overlay's, not RFC 5737
    web_ingress = one(production, "NetworkPolicy", "web-ingress")
    assert _selected(web_ingress, labels["web"])
    assert not any(_selected(web_ingress, labels[other]) for other in ("worker", "beat", "migrate"))
    sources = [
        peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
        for peer in web_ingress["spec"]["ingress"][0]["from"]
    ]
    assert sources == ["ingress-nginx", "backstage", "monitoring"]
    assert web_ingress["spec"]["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 8000}]


def test_the_worker_pods_serve_their_metrics_for_their_service_monitor(production: list[dict[str, Any]]) -> None:
    worker = one(production, "Deployment", "genai-portal-worker-celery")["spec"]["template"]["spec"]
    container = worker["containers"][0]
    environment = {variable["name"]: variable["value"] for variable in container["env"]}
    assert environment["PORTAL_WORKER_METRICS_PORT"] == "9808"
    assert {"name": "metrics", "containerPort": 9808, "protocol": "TCP"} in container["ports"]
    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    assert mounts[environment["PROMETHEUS_MULTIPROC_DIR"]] == "prometheus"
    service = one(production, "Service", "genai-portal-worker-metrics")
    pod_labels = one(production, "Deployment", "genai-portal-worker-celery")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()  # every queue's workers
    monitor = one(production, "ServiceMonitor", "genai-portal-worker")
    assert all(service["metadata"]["labels"].get(k) == v for k, v in monitor["spec"]["selector"]["matchLabels"].items())
    web_service = one(production, "Service", "genai-portal-web")
    assert not all(
        web_service["metadata"]["labels"].get(k) == v for k, v in monitor["spec"]["selector"]["matchLabels"].items()
    )
    scraped = one(production, "NetworkPolicy", "worker-metrics-ingress")
    assert scraped["spec"]["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 9808}]


def test_every_component_names_itself_in_its_traces_and_logs_json(production: list[dict[str, Any]]) -> None:
    names = {}
    for name, spec in pod_specs(production).items():
        environment = {variable["name"]: variable.get("value") for variable in spec["containers"][0]["env"]}
        names[name] = environment["PORTAL_SERVICE_NAME"]
    assert names == {
        "Deployment/genai-portal-web": "genai-portal-web",
        "Deployment/genai-portal-worker-celery": "genai-portal-worker",
        "Deployment/genai-portal-worker-reconcile": "genai-portal-worker",
        "Deployment/genai-portal-worker-usage": "genai-portal-worker",
        "Deployment/genai-portal-worker-rerate": "genai-portal-worker",
        "Deployment/genai-portal-beat": "genai-portal-beat",
        "Job/genai-portal-migrate": "genai-portal-migrate",
    }
    assert one(production, "ConfigMap", _config_map_name(production))["data"]["PORTAL_LOG_FORMAT"] == "json"


def test_the_service_monitor_scrapes_the_web_service_metrics(production: list[dict[str, Any]]) -> None:
    monitor = one(production, "ServiceMonitor", "genai-portal-web")
    service = one(production, "Service", "genai-portal-web")
    assert monitor["metadata"]["namespace"] == service["metadata"]["namespace"] == "genai-portal"
    assert all(service["metadata"]["labels"].get(k) == v for k, v in monitor["spec"]["selector"]["matchLabels"].items())
    assert monitor["spec"]["endpoints"] == [
        {"port": "http", "path": "/metrics", "interval": "30s", "scrapeTimeout": "10s"}
    ]
    assert [port["name"] for port in service["spec"]["ports"]] == ["http"]


def test_everything_lands_in_the_portal_namespace(production: list[dict[str, Any]]) -> None:
    for manifest in production:
        if manifest["kind"] != "Namespace":
            assert manifest["metadata"]["namespace"] == "genai-portal", manifest["metadata"]["name"]
        assert manifest["metadata"]["labels"]["app.kubernetes.io/part-of"] == "genai-portal"


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_the_target_cluster_rbac_validates_strictly(version: str) -> None:
    manifests = render(K8S / "target-cluster")
    assert sorted(manifest["kind"] for manifest in manifests) == [
        "ClusterRole",
        "ClusterRoleBinding",
        "Namespace",
        "ServiceAccount",
    ]
    assert [problem for problem in (schema_problems(m, version) for m in manifests) if problem] == []
