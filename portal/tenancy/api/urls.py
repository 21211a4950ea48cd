"""Routes of the tenancy API."""

from django.urls import path

from portal.tenancy.api import views

urlpatterns = [
    path("me", views.MeView.as_view(), name="me"),
    path("teams", views.TeamListView.as_view(), name="team-list"),
    path("teams/<str:team>", views.TeamDetailView.as_view(), name="team-detail"),
    path("teams/<str:team>/members", views.MemberListView.as_view(), name="team-members"),
    path("teams/<str:team>/members/<path:user>", views.MemberDetailView.as_view(), name="team-member"),
    path("teams/<str:team>/quota", views.QuotaView.as_view(), name="team-quota"),
    path("teams/<str:team>/quota-requests", views.QuotaRequestListView.as_view(), name="team-quota-requests"),
    path(
        "teams/<str:team>/quota-requests/<int:request_id>",
        views.QuotaRequestDetailView.as_view(),
        name="team-quota-request",
    ),
    *(
        path(
            f"teams/<str:team>/quota-requests/<int:request_id>/{decision}",
            views.QuotaRequestDecisionView.as_view(decision=decision),
            name=f"team-quota-request-{decision}",
        )
        for decision in ("approve", "reject", "withdraw")
    ),
    path("quota-requests", views.PendingQuotaRequestListView.as_view(), name="quota-requests"),
]
