"""The admin names every model in English: no "Usage dailys" or "Cluster gateway policys"."""

from __future__ import annotations

from django.apps import apps

PORTAL_APPS = {"core", "tenancy", "api", "tokens", "clusters", "deployments", "gateway", "usage", "catalog"}


def test_every_plural_reads_as_english() -> None:
    plurals = {
        model._meta.label: str(model._meta.verbose_name_plural)
        for model in apps.get_models()
        if model._meta.app_label in PORTAL_APPS
    }
    wrong = {label: plural for label, plural in plurals.items() if plural.endswith(("ys", "lys", "ss", "usages"))}
    assert wrong == {}
    assert plurals["usage.UsageDaily"] == "daily usage"
    assert plurals["gateway.ClusterGatewayPolicy"] == "cluster gateway policies"
