"""Everything one self-hosted deployment needs on its cluster, in apply order.

Facts from shared/reference/serving-and-gateway.md: the deployment mode annotation is always explicit
(section 2.1: without it KServe applies Knative rules); Standard+HPA floors minReplicas at 1, so scale to
zero needs KEDA (Standard) or Knative; KEDA forbids scaleMetric; the Hugging Face runtime serves OpenAI
under /openai/v1 at <isvc>-predictor.<ns>.svc.cluster.local:80; an AIServiceBackend must point at an Envoy
Gateway Backend, never a Service (section 3.2); model routing matches the x-ai-eg-model header (3.1).
"""

from __future__ import annotations

from typing import Any

from catalog.sizing import flag_name
from portal.deployments.contracts import DeploymentSpec
from workers.provisioning.manifests.kueue import queue_labels
from workers.provisioning.manifests.labels import deployment_labels, team_labels, team_namespace
from workers.provisioning.manifests.upstream import (
    AIGW_API_VERSION,
    CACHE_API_VERSION,
    CLIENT_ID_HEADER,
    EG_API_VERSION,
    GPU_RESOURCE,
    ISVC_API_VERSION,
    MODEL_HEADER,
    REQUEST_TIMEOUT,
    ROUTE_TOKEN_COSTS,
)

Manifest = dict[str, Any]


def gateway_object_name(spec: DeploymentSpec) -> str:
    """Name of the deployment's objects in the gateway namespace (and of its cluster-scoped cache): its served
    model name, which the portal makes unique across teams and a DNS label (portal/deployments/names.py)."""
    return spec.served_model_name


def namespace_of(spec: DeploymentSpec) -> str:
    return team_namespace(spec.cluster.namespace_prefix, spec.team_slug)


def predictor_host(spec: DeploymentSpec) -> str:
    return f"{spec.name}-predictor.{namespace_of(spec)}.svc.cluster.local"


def cache_name(spec: DeploymentSpec) -> str:
    """One cache per deployment (cluster-scoped, so named like its gateway objects): deleting one deployment never
    removes a cache another deployment relies on."""
    return gateway_object_name(spec)


def cache_model_size(spec: DeploymentSpec) -> str:
    """Disk reserved on each node for the weights: they fit in the GPU memory of one replica, so that bounds them."""
    return f"{max(spec.gpus_per_replica * spec.model.hardware.min_gpu_memory_gb, 1)}Gi"


def cache_node_group(spec: DeploymentSpec) -> str:
    """Convention: the platform team creates one LocalModelNodeGroup per accelerator pool, named after its type."""
    return spec.pool.accelerator_type


def build_namespace(spec: DeploymentSpec) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": namespace_of(spec), "labels": team_labels(spec.team_slug)},
    }


GPU_QUOTA_NAME = "genai-portal-gpus"  # the team namespace's ResourceQuota (the reconciler finds and drops it by name)


def build_gpu_quota(spec: DeploymentSpec, team_gpu_limit: int) -> Manifest:
    """Caps the team's GPU requests in its namespace on this cluster at the team's GPU quota."""
    return {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {
            "name": GPU_QUOTA_NAME,
            "namespace": namespace_of(spec),
            "labels": team_labels(spec.team_slug),
        },
        "spec": {"hard": {f"requests.{GPU_RESOURCE}": str(team_gpu_limit)}},
    }


def _runtime_args(spec: DeploymentSpec) -> list[str]:
    """The catalog's defaults, replaced by the sizing plan's flags, replaced by the team's own."""
    by_team = {flag_name(argument) for argument in spec.runtime_args}
    planned = [argument for argument in spec.plan_runtime_args if flag_name(argument) not in by_team]
    overridden = by_team | {flag_name(argument) for argument in planned}
    defaults = [argument for argument in spec.model.runtime_args if flag_name(argument) not in overridden]
    args = [f"--model_name={spec.served_model_name}"]
    if spec.model.revision and spec.model.revision != "main":
        args.append(f"--model_revision={spec.model.revision}")
    return [*args, *defaults, *planned, *spec.runtime_args]


def _scaling(spec: DeploymentSpec) -> tuple[dict[str, str], dict[str, Any]]:
    """Annotations and predictor fields for replicas and autoscaling that are valid for the cluster's mode."""
    mode = spec.cluster.deployment_mode
    annotations = {"serving.kserve.io/deploymentMode": mode}
    min_replicas = 0 if spec.scale_to_zero else max(spec.min_replicas, 1 if mode == "Standard" else 0)
    predictor: dict[str, Any] = {"maxReplicas": spec.max_replicas}
    if mode == "Knative":
        predictor.update({"minReplicas": min_replicas, "scaleMetric": "concurrency", "scaleTarget": 8, "timeout": 600})
        return annotations, predictor
    autoscaler = spec.cluster.autoscaler_class
    if spec.scale_to_zero and autoscaler == "hpa":
        # Standard+HPA silently floors minReplicas at 1: scale to zero needs KEDA here.
        autoscaler = "keda"
    annotations["serving.kserve.io/autoscalerClass"] = autoscaler
    predictor["minReplicas"] = min_replicas
    if autoscaler == "keda":
        predictor["autoScaling"] = {
            "metrics": [
                {
                    "type": "External",
                    "external": {
                        "metric": {
                            "backend": "prometheus",
                            "serverAddress": "http://prometheus.monitoring.svc:9090",
                            "query": f'sum(vllm:num_requests_waiting{{namespace="{namespace_of(spec)}",model_name="{spec.served_model_name}"}})',
                        },
                        "target": {"type": "Value", "value": "4"},
                    },
                }
            ]
        }
    elif autoscaler == "hpa":
        predictor.update({"scaleMetric": "cpu", "scaleTarget": 80})
    return annotations, predictor


def build_inference_service(spec: DeploymentSpec) -> Manifest:
    annotations, scaling = _scaling(spec)
    gpus = str(spec.gpus_per_replica)
    requests: dict[str, str] = {GPU_RESOURCE: gpus}
    limits: dict[str, str] = {GPU_RESOURCE: gpus}
    if spec.model.hardware.cpu:
        requests["cpu"] = spec.model.hardware.cpu
    if spec.model.hardware.memory:
        requests["memory"] = spec.model.hardware.memory
        limits["memory"] = spec.model.hardware.memory
    model: dict[str, Any] = {
        "modelFormat": {"name": spec.model.format or "huggingface"},
        "storageUri": spec.model.artifact_uri,
        "args": _runtime_args(spec),
        "resources": {"requests": requests, "limits": limits},
    }
    if spec.model.runtime:
        model["runtime"] = spec.model.runtime
    predictor: dict[str, Any] = {**scaling, "model": model}
    if spec.pool.node_selector:
        predictor["nodeSelector"] = dict(sorted(spec.pool.node_selector.items()))
    if spec.pool.tolerations:
        predictor["tolerations"] = [dict(toleration) for toleration in spec.pool.tolerations]
    if not spec.model_cache:
        annotations["serving.kserve.io/disable-localmodel"] = "true"
    return {
        "apiVersion": ISVC_API_VERSION,
        "kind": "InferenceService",
        "metadata": {
            "name": spec.name,
            "namespace": namespace_of(spec),
            # On a Kueue cluster the queue-name label puts the predictor's pods in the team's LocalQueue. KServe
            # copies the InferenceService's labels onto the predictor's Deployment and its pod template
            # (kserve/kserve pkg/controller/v1beta1/inferenceservice/components/predictor.go buildObjectMeta:
            # Union(runtime labels, isvc.Labels, predictor labels, ...)); Kueue then holds those pods (its deployment
            # webhook and pod integration read the label, manifests/kueue.py). On a live deployment whose cluster moved
            # onto or off Kueue, Kueue's webhook refuses KServe's relabel of the Deployment; the reconciler
            # re-creates it (reconciler._move_model_server_queue).
            "labels": {
                **deployment_labels(spec.team_slug, spec.name, spec.deployment_id),
                **queue_labels(spec.cluster),
            },
            "annotations": annotations,
        },
        "spec": {"predictor": predictor},
    }


def build_local_model_cache(spec: DeploymentSpec) -> Manifest:
    """A cluster-wide cache of the model artifact; the ISVC uses it because storageUri equals sourceModelUri."""
    return {
        "apiVersion": CACHE_API_VERSION,
        "kind": "LocalModelCache",
        "metadata": {
            "name": cache_name(spec),
            "labels": deployment_labels(spec.team_slug, spec.name, spec.deployment_id),
        },
        "spec": {
            "sourceModelUri": spec.model.artifact_uri,
            "modelSize": cache_model_size(spec),
            "nodeGroups": [cache_node_group(spec)],
        },
    }


def build_backend(spec: DeploymentSpec) -> Manifest:
    return {
        "apiVersion": EG_API_VERSION,
        "kind": "Backend",
        "metadata": {
            "name": gateway_object_name(spec),
            "namespace": spec.cluster.gateway_namespace,
            "labels": deployment_labels(spec.team_slug, spec.name, spec.deployment_id),
        },
        "spec": {"endpoints": [{"fqdn": {"hostname": predictor_host(spec), "port": 80}}]},
    }


def build_ai_service_backend(spec: DeploymentSpec) -> Manifest:
    return {
        "apiVersion": AIGW_API_VERSION,
        "kind": "AIServiceBackend",
        "metadata": {
            "name": gateway_object_name(spec),
            "namespace": spec.cluster.gateway_namespace,
            "labels": deployment_labels(spec.team_slug, spec.name, spec.deployment_id),
        },
        "spec": {
            "schema": {"name": "OpenAI", "prefix": "/openai/v1"},
            "backendRef": {"group": "gateway.envoyproxy.io", "kind": "Backend", "name": gateway_object_name(spec)},
        },
    }


def team_client_id_pattern(team_slug: str) -> str:
    """Client ids forwarded by the gateway's apiKeyAuth are '<team>.<credential>'; team slugs have no dots."""
    return f"^{team_slug}\\..+$"


def route_client_id_pattern(spec: DeploymentSpec) -> str:
    """The team's client ids, narrowed to the keys whose allow-list includes this model when any key is
    restricted; with no such key, a pattern no client id matches (key ids are never empty)."""
    if spec.allowed_key_ids is None:
        return team_client_id_pattern(spec.team_slug)
    return f"^{spec.team_slug}\\.({'|'.join(spec.allowed_key_ids)})$"


def build_route(spec: DeploymentSpec) -> Manifest:
    """One AIGatewayRoute per deployment: its served model name, for the team's credentials only."""
    name = gateway_object_name(spec)
    return {
        "apiVersion": AIGW_API_VERSION,
        "kind": "AIGatewayRoute",
        "metadata": {
            "name": name,
            "namespace": spec.cluster.gateway_namespace,
            "labels": deployment_labels(spec.team_slug, spec.name, spec.deployment_id),
        },
        "spec": {
            "parentRefs": [
                {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": spec.cluster.gateway_name}
            ],
            "rules": [
                {
                    "name": spec.name,
                    # Matches are ORed: the served name, then any earlier name kept for callers; each only for the
                    # team's own keys, so a name another team also uses can never reach this model.
                    "matches": [
                        {
                            "headers": [
                                {"type": "Exact", "name": MODEL_HEADER, "value": model_name},
                                {
                                    "type": "RegularExpression",
                                    "name": CLIENT_ID_HEADER,
                                    "value": route_client_id_pattern(spec),
                                },
                            ]
                        }
                        for model_name in (spec.served_model_name, *spec.served_model_aliases)
                    ],
                    "backendRefs": [{"name": name, "weight": 1, "modelNameOverride": spec.served_model_name}],
                    "timeouts": {"request": REQUEST_TIMEOUT},
                    "modelsOwnedBy": spec.team_slug,
                }
            ],
            "llmRequestCosts": [{"metadataKey": key, "type": kind} for key, kind in ROUTE_TOKEN_COSTS],
        },
    }


def build_team_objects(spec: DeploymentSpec, team_gpu_limit: int) -> list[Manifest]:
    """Shared by every deployment of the team on this cluster: never pruned with one deployment."""
    return [build_namespace(spec), build_gpu_quota(spec, team_gpu_limit)]


def build_deployment_objects(spec: DeploymentSpec) -> list[Manifest]:
    """The objects one deployment owns, in apply order (cache, serving, then the gateway's view of it)."""
    objects: list[Manifest] = []
    if spec.model_cache:
        objects.append(build_local_model_cache(spec))
    objects.extend(
        [build_inference_service(spec), build_backend(spec), build_ai_service_backend(spec), build_route(spec)]
    )
    return objects
