"""Routes of the API plumbing's own endpoint: the audit log."""

from django.urls import path

from portal.api import audit

urlpatterns = [
    path("audit-events", audit.AuditEventListView.as_view(), name="audit-events"),
]
