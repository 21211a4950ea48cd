"""Routes of API access: tokens and the audit log."""

from django.urls import path

from portal.api import endpoints

urlpatterns = [
    path("tokens", endpoints.TokenListView.as_view(), name="token-list"),
    path("tokens/<int:token_id>", endpoints.TokenDetailView.as_view(), name="token-detail"),
    path("audit-events", endpoints.AuditEventListView.as_view(), name="audit-events"),
]
