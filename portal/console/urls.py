"""Routes of the platform console (namespace `console`; other apps and Backstage link to these paths)."""

from django.contrib.auth import views as auth_views
from django.urls import path

from portal.console import views

app_name = "console"

urlpatterns = [
    path("", views.overview, name="overview"),
    path(
        "login/",
        auth_views.LoginView.as_view(template_name="console/login.html", redirect_authenticated_user=True),
        name="login",
    ),
    path("logout/", auth_views.LogoutView.as_view(next_page="console:login"), name="logout"),
    path("teams/<slug:team_slug>/", views.team, name="team"),
    path("teams/<slug:team_slug>/costs.csv", views.team_costs_csv, name="team-costs-csv"),
    path("teams/<slug:team_slug>/deployments/<slug:deployment_name>/", views.deployment, name="deployment"),
    path("models/<slug:model_slug>/", views.model, name="model"),
    path("fleet/", views.fleet, name="fleet"),
    path("requests/", views.requests, name="requests"),
]
