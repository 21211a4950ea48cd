"""Routes of the usage API (included at the site root: OTLP's path is fixed by the protocol)."""

from django.urls import path

from portal.usage.api import views

urlpatterns = [
    path("api/v1/usage/events", views.UsageEventsView.as_view(), name="usage-events"),
    path("otlp/v1/logs", views.OtlpLogsView.as_view(), name="otlp-logs"),
    path("api/v1/usage/rerate", views.RerateView.as_view(), name="usage-rerate"),
    path("api/v1/usage/quarantine", views.QuarantineView.as_view(), name="usage-quarantine"),
    path("api/v1/usage/quarantine/release", views.QuarantineReleaseView.as_view(), name="usage-quarantine-release"),
    path("api/v1/costs", views.PlatformCostsView.as_view(), name="costs"),
    path("api/v1/teams/<str:team>/costs", views.TeamCostsView.as_view(), name="team-costs"),
    path("api/v1/request-health", views.RequestHealthView.as_view(), name="request-health"),
    path("api/v1/budgets", views.BudgetListView.as_view(), name="budgets"),
    path("api/v1/teams/<str:team>/budget", views.BudgetView.as_view(), name="team-budget"),
    path("api/v1/teams/<str:team>/budget/lift", views.BudgetLiftView.as_view(), name="team-budget-lift"),
]
