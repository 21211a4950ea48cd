"""The audit log endpoint for platform admins (the log itself is the shared kernel's, portal.core.audit)."""

from __future__ import annotations

from rest_framework.request import Request
from rest_framework.response import Response

from portal.api import serializers
from portal.api.permissions import IsPlatformAdmin
from portal.api.renderers import LIST_RENDERERS, csv_list_schema
from portal.api.views import PortalGenericView, validated
from portal.core.audit import audit_event_list
from portal.core.models import AuditEvent


class AuditEventListView(PortalGenericView):
    queryset = AuditEvent.objects.none()  # for the schema generator; views query through selectors
    permission_classes = [IsPlatformAdmin]
    serializer_class = serializers.AuditEventOutput
    renderer_classes = LIST_RENDERERS

    @csv_list_schema(
        serializers.AuditEventOutput,
        summary="The audit log (platform admins), JSON or CSV",
        parameters=[serializers.AuditEventQuery],
    )
    def get(self, request: Request) -> Response:
        query = validated(serializers.AuditEventQuery, request.query_params)
        events = audit_event_list(
            action=query.get("action") or None,
            target_type=query.get("target_type") or None,
            team_slug=query.get("team") or None,
            actor_label=query.get("actor") or None,
            since=query.get("since"),
            until=query.get("until"),
        )
        page = self.paginate_queryset(events)
        return self.get_paginated_response(serializers.AuditEventOutput(page, many=True).data)
