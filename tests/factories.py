"""factory_boy factories for the portal's models."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import factory
from django.conf import settings

from catalog.models import CatalogModel, Hosting, Lifecycle, ModelPrice, ModelVersion
from portal.tenancy.models import Membership, Role, Team, TeamQuota, User


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        django_get_or_create = ("username",)

    backstage_ref = factory.Sequence(lambda n: f"user:default/person-{n}")
    username = factory.LazyAttribute(lambda user: user.backstage_ref)
    kind = User.Kind.PERSON


class ServicePrincipalFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User

    username = factory.Sequence(lambda n: f"service:robot-{n}")
    backstage_ref = None
    kind = User.Kind.SERVICE


class TeamFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Team
        skip_postgeneration_save = True

    slug = factory.Sequence(lambda n: f"team-{n}")
    display_name = factory.LazyAttribute(lambda team: team.slug.replace("-", " ").title())

    @factory.post_generation
    def quota(team: Team, create: bool, extracted: object, **kwargs: object) -> None:
        if create:
            defaults = settings.QUOTA_DEFAULTS
            TeamQuota.objects.create(
                team=team,
                max_deployments=defaults["max_deployments"],
                tokens_per_minute=defaults["tokens_per_minute"],
                tokens_per_day=defaults["tokens_per_day"],
                monthly_budget=defaults["monthly_budget"],
                budget_policy=defaults["budget_policy"],
            )


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    team = factory.SubFactory(TeamFactory)
    user = factory.SubFactory(UserFactory)
    role = Role.DEVELOPER


class CatalogModelFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = CatalogModel

    slug = factory.Sequence(lambda n: f"model-{n}")
    display_name = factory.LazyAttribute(lambda model: model.slug.title())
    publisher = "Example Labs"
    description = "A test model"
    license = "apache-2.0"
    capabilities = factory.LazyFunction(lambda: ["chat"])
    context_window = 32768
    lifecycle = Lifecycle.APPROVED
    hosting = Hosting.SELF_HOSTED


class SelfHostedVersionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ModelVersion

    model = factory.SubFactory(CatalogModelFactory)
    version = factory.Sequence(lambda n: f"v{n}")
    lifecycle = Lifecycle.APPROVED
    served_model_name = factory.LazyAttribute(lambda version: f"{version.model.slug}-{version.version}")
    artifact_uri = "hf://example/model"
    revision = "main"
    format = "huggingface"
    runtime = "kserve-huggingfaceserver"
    gpus_per_replica = 1
    min_gpu_memory_gb = 24
    cpu = "4"
    memory = "16Gi"
    runtime_args = factory.LazyFunction(lambda: ["--max-model-len=8192"])


class ManagedVersionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ModelVersion

    model = factory.SubFactory(CatalogModelFactory, hosting=Hosting.MANAGED, license="proprietary")
    version = factory.Sequence(lambda n: f"2025-0{n % 9 + 1}-01")
    lifecycle = Lifecycle.APPROVED
    served_model_name = factory.LazyAttribute(lambda version: version.model.slug)
    provider = "openai"
    provider_model_id = factory.LazyAttribute(lambda version: f"{version.model.slug}-{version.version}")


class PriceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ModelPrice

    model = factory.SubFactory(CatalogModelFactory, hosting=Hosting.MANAGED)
    usage_type = "input"
    price_per_million = Decimal("2.500000")
    currency = "USD"
    effective_from = datetime(2026, 1, 1, tzinfo=UTC)


class ClusterFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "clusters.Cluster"

    name = factory.Sequence(lambda n: f"cluster-{n}")
    api_server = "http://127.0.0.1:9"
    auth_kind = "token"
    credentials_ciphertext = factory.LazyFunction(
        lambda: __import__("portal.core.encryption", fromlist=["encrypt_secret"]).encrypt_secret(
            '{"token": "sandbox", "ca_bundle": null}'
        )
    )
    region = "eu-west"
    gateway_namespace = "genai-gateway"
    gateway_name = "ai-gateway"
    deployment_mode = "Standard"
    autoscaler_class = "keda"


class AcceleratorPoolFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "clusters.AcceleratorPool"

    cluster = factory.SubFactory(ClusterFactory)
    accelerator_type = "nvidia-l4"
    gpu_product = "NVIDIA-L4"
    node_selector = factory.LazyFunction(lambda: {"nvidia.com/gpu.product": "NVIDIA-L4"})
    tolerations = factory.LazyFunction(
        lambda: [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    )
    gpu_count = 8
    gpu_memory_gb = 24
    hourly_price_per_gpu = Decimal("0.8000")
