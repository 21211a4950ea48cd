"""The kinds the portal manages: API paths by apiVersion and kind, so no discovery round trips are needed.

From shared/reference/serving-and-gateway.md section 1 (group / version / plural / scope).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ResourceType:
    api_version: str
    kind: str
    plural: str
    namespaced: bool

    def collection_path(self, namespace: str | None, *, all_namespaces: bool = False) -> str:
        prefix = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        if self.namespaced and not all_namespaces:
            if namespace is None:
                raise ValueError(f"{self.kind} is namespaced: a namespace is required")
            return f"{prefix}/namespaces/{namespace}/{self.plural}"
        return f"{prefix}/{self.plural}"

    def object_path(self, name: str, namespace: str | None) -> str:
        return f"{self.collection_path(namespace)}/{name}"


_TYPES = [
    ResourceType("v1", "Namespace", "namespaces", namespaced=False),
    ResourceType("v1", "ResourceQuota", "resourcequotas", namespaced=True),
    ResourceType("v1", "Secret", "secrets", namespaced=True),
    ResourceType("v1", "Node", "nodes", namespaced=False),
    ResourceType("v1", "Pod", "pods", namespaced=True),
    # KServe's model server Deployments (the predictor; llm-d's decode and prefill): read, and re-created by an
    # orphaning delete when Kueue's webhook refuses their relabel (reconciler._move_model_server_queue); never applied.
    ResourceType("apps/v1", "Deployment", "deployments", namespaced=True),
    ResourceType("gateway.networking.k8s.io/v1", "Gateway", "gateways", namespaced=True),
    ResourceType("serving.kserve.io/v1beta1", "InferenceService", "inferenceservices", namespaced=True),
    ResourceType("serving.kserve.io/v1alpha1", "LocalModelCache", "localmodelcaches", namespaced=False),
    ResourceType("gateway.envoyproxy.io/v1alpha1", "Backend", "backends", namespaced=True),
    ResourceType("gateway.envoyproxy.io/v1alpha1", "SecurityPolicy", "securitypolicies", namespaced=True),
    ResourceType("gateway.envoyproxy.io/v1alpha1", "BackendTrafficPolicy", "backendtrafficpolicies", namespaced=True),
    ResourceType("gateway.envoyproxy.io/v1alpha1", "ClientTrafficPolicy", "clienttrafficpolicies", namespaced=True),
    ResourceType("gateway.envoyproxy.io/v1alpha1", "EnvoyProxy", "envoyproxies", namespaced=True),
    ResourceType("aigateway.envoyproxy.io/v1beta1", "AIServiceBackend", "aiservicebackends", namespaced=True),
    ResourceType("aigateway.envoyproxy.io/v1beta1", "AIGatewayRoute", "aigatewayroutes", namespaced=True),
    ResourceType(
        "aigateway.envoyproxy.io/v1beta1", "BackendSecurityPolicy", "backendsecuritypolicies", namespaced=True
    ),
    ResourceType("aigateway.envoyproxy.io/v1beta1", "GatewayConfig", "gatewayconfigs", namespaced=True),
    # The llm-d serving mode (section 2.3, 6; shared/crds/kserve, gateway-api-inference-extension, llm-d-router).
    ResourceType("serving.kserve.io/v1alpha2", "LLMInferenceService", "llminferenceservices", namespaced=True),
    ResourceType("inference.networking.k8s.io/v1", "InferencePool", "inferencepools", namespaced=True),
    ResourceType("llm-d.ai/v1alpha2", "InferenceObjective", "inferenceobjectives", namespaced=True),
    ResourceType("llm-d.ai/v1alpha2", "InferenceModelRewrite", "inferencemodelrewrites", namespaced=True),
    ResourceType("gateway.networking.k8s.io/v1beta1", "ReferenceGrant", "referencegrants", namespaced=True),
    # Kueue GPU quotas (section 8; shared/crds/kueue). Workloads are Kueue's, read for their conditions.
    ResourceType("kueue.x-k8s.io/v1beta2", "Cohort", "cohorts", namespaced=False),
    ResourceType("kueue.x-k8s.io/v1beta2", "ResourceFlavor", "resourceflavors", namespaced=False),
    ResourceType("kueue.x-k8s.io/v1beta2", "ClusterQueue", "clusterqueues", namespaced=False),
    ResourceType("kueue.x-k8s.io/v1beta2", "LocalQueue", "localqueues", namespaced=True),
    ResourceType("kueue.x-k8s.io/v1beta2", "Workload", "workloads", namespaced=True),
]
RESOURCE_TYPES = {(item.api_version, item.kind): item for item in _TYPES}


def resource_type(api_version: str, kind: str) -> ResourceType:
    try:
        return RESOURCE_TYPES[(api_version, kind)]
    except KeyError:
        raise ValueError(f"the portal does not manage {api_version} {kind}") from None
