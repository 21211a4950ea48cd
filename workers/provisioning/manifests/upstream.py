"""What the builders share of the upstream APIs they write, defined here once: the API version of every kind the
portal creates, the AI gateway's token-cost keys and dynamic-metadata namespace, the headers the gateway routes and
authenticates by, and the GPU resource name. tests/workers/test_one_definition.py keeps each defined nowhere else.

Versions and fields: shared/reference/serving-and-gateway.md, validated against the CRDs in shared/crds/.
"""

from __future__ import annotations

# API versions (group/version) of the kinds the portal applies.
ISVC_API_VERSION = "serving.kserve.io/v1beta1"  # InferenceService
CACHE_API_VERSION = "serving.kserve.io/v1alpha1"  # LocalModelCache
LLMISVC_API_VERSION = "serving.kserve.io/v1alpha2"  # LLMInferenceService
LLMD_API_VERSION = "llm-d.ai/v1alpha2"  # InferenceObjective
EG_API_VERSION = "gateway.envoyproxy.io/v1alpha1"  # Envoy Gateway: Backend, policies, EnvoyProxy
AIGW_API_VERSION = "aigateway.envoyproxy.io/v1beta1"  # Envoy AI Gateway: routes, backends, GatewayConfig
GATEWAY_API_VERSION = "gateway.networking.k8s.io/v1"  # Gateway API: Gateway
REFERENCE_GRANT_API_VERSION = "gateway.networking.k8s.io/v1beta1"  # Gateway API: ReferenceGrant
KUEUE_API_VERSION = "kueue.x-k8s.io/v1beta2"  # ResourceFlavor, ClusterQueue, LocalQueue

GPU_RESOURCE = "nvidia.com/gpu"  # the NVIDIA device plugin's extended resource

# Headers at the gateway: the client id Envoy writes after an API-key check (never the caller's own), and the model
# the AI Gateway reads from the request body and routes by.
CLIENT_ID_HEADER = "x-portal-client-id"
MODEL_HEADER = "x-ai-eg-model"

# The AI Gateway writes token counts into Envoy dynamic metadata under this namespace, one key per declared cost.
METADATA_NAMESPACE = "io.envoy.ai_gateway"
# (metadata key, AI Gateway cost type): every usage type the portal rates, declared once for every route of a gateway
# (GatewayConfig.spec.globalLLMRequestCosts).
TOKEN_COSTS = (
    ("llm_input_token", "InputToken"),
    ("llm_cached_input_token", "CachedInputToken"),
    ("llm_cache_creation_input_token", "CacheCreationInputToken"),
    ("llm_output_token", "OutputToken"),
    ("llm_reasoning_token", "ReasoningToken"),
    ("llm_total_token", "TotalToken"),
)
# The costs each AIGatewayRoute declares itself (llmRequestCosts), so that its token limits (charged from
# llm_total_token) and usage hold on a gateway whose GatewayConfig is not applied; route-level costs override the
# global ones for the same key (serving-and-gateway.md 3.1).
ROUTE_TOKEN_COSTS = tuple(
    (key, kind)
    for key, kind in TOKEN_COSTS
    if key in {"llm_input_token", "llm_cached_input_token", "llm_output_token", "llm_total_token"}
)

# Every route's request timeout (AIGatewayRoute rules' timeouts.request): long generations outlive the 60s default.
REQUEST_TIMEOUT = "300s"
