"""Tenancy endpoints: me, teams, members, quota."""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response

from portal.api.authentication import acting_user, caller_of, is_platform_admin, reads_every_team
from portal.api.renderers import LIST_RENDERERS, csv_list_schema
from portal.api.team_access import team_for_request
from portal.api.views import PortalGenericView, PortalView, validated
from portal.core.errors import PermissionDenied
from portal.tenancy import selectors, services
from portal.tenancy.api import serializers
from portal.tenancy.models import Membership, QuotaRequest, Role, Team, User


class MeView(PortalView):
    @extend_schema(responses=serializers.MeOutput, summary="The caller, its teams and roles")
    def get(self, request: Request) -> Response:
        caller = caller_of(request)
        memberships = selectors.user_memberships(user=acting_user(request))
        body = {
            "user": serializers.UserOutput(acting_user(request)).data,
            "platform_admin": is_platform_admin(request),
            "acting_through": str(caller.principal) if caller is not None and caller.on_behalf_of is not None else None,
            "scopes": sorted(caller.scopes) if caller is not None else [],
            # Backstage's plugin reads this at startup: with a JWKS URL set, every call acting for a user must carry
            # the user's Backstage token (genaiPortal.forwardUserToken: true), or it is refused.
            "backstage_user_token_required": bool(settings.BACKSTAGE_JWKS_URL),
            "teams": [{"team": m.team.slug, "display_name": m.team.display_name, "role": m.role} for m in memberships],
        }
        return Response(body)


class TeamListView(PortalGenericView):
    queryset = Team.objects.none()  # for the schema generator; views query through selectors
    serializer_class = serializers.TeamOutput

    @extend_schema(
        parameters=[serializers.TeamListQuery],
        responses=serializers.TeamOutput(many=True),
        summary="Teams the caller belongs to (platform admins: all teams)",
    )
    def get(self, request: Request) -> Response:
        query = validated(serializers.TeamListQuery, request.query_params)
        teams = selectors.team_list_visible(user=acting_user(request), platform_admin=reads_every_team(request))
        if query.get("status"):
            teams = teams.filter(status=query["status"])
        search = query.get("search")
        if search:
            teams = teams.filter(slug__icontains=search) | teams.filter(display_name__icontains=search)
        page = self.paginate_queryset(teams.distinct().order_by("slug"))
        return self.get_paginated_response(serializers.TeamOutput(page, many=True).data)

    @extend_schema(
        request=serializers.TeamCreateInput,
        responses={201: serializers.TeamOutput},
        summary="Create a team; the calling person becomes its admin",
    )
    def post(self, request: Request) -> Response:
        if settings.TEAM_CREATION == "admins" and not is_platform_admin(request):
            raise PermissionDenied("Only platform admins create teams here", code="team_creation_restricted")
        if acting_user(request).kind != User.Kind.PERSON and not is_platform_admin(request):
            raise PermissionDenied(
                "A team is created on behalf of a person: send X-Backstage-User", code="person_required"
            )
        data = validated(serializers.TeamCreateInput, request.data)
        team = services.team_create(actor=acting_user(request), **data)
        return Response(
            serializers.TeamOutput(team).data,
            status=status.HTTP_201_CREATED,
            headers={"Location": f"/api/v1/teams/{team.slug}"},
        )


class TeamDetailView(PortalView):
    @extend_schema(responses=serializers.TeamOutput, summary="A team")
    def get(self, request: Request, team: str) -> Response:
        return Response(serializers.TeamOutput(team_for_request(request, team, catalog_read=True)).data)

    @extend_schema(
        request=serializers.TeamUpdateInput,
        responses=serializers.TeamOutput,
        summary="Change a team (team admins; status by platform admins)",
    )
    def patch(self, request: Request, team: str) -> Response:
        team_object = team_for_request(request, team, required_role=Role.ADMIN)
        data = validated(serializers.TeamUpdateInput, request.data, partial=True)
        new_status = data.pop("status", None)
        if new_status is not None and new_status != team_object.status and not is_platform_admin(request):
            raise PermissionDenied("Only platform admins suspend or reactivate teams", code="platform_admin_required")
        if data:
            team_object = services.team_update(actor=acting_user(request), team=team_object, changes=data)
        if new_status is not None:
            team_object = services.team_set_status(actor=acting_user(request), team=team_object, status=new_status)
        return Response(serializers.TeamOutput(team_object).data)


class MemberListView(PortalGenericView):
    renderer_classes = LIST_RENDERERS
    queryset = Membership.objects.none()  # for the schema generator; views query through selectors
    serializer_class = serializers.MembershipOutput

    @csv_list_schema(
        serializers.MembershipOutput, summary="Members of a team, JSON or CSV", parameters=[serializers.MemberListQuery]
    )
    def get(self, request: Request, team: str) -> Response:
        members = selectors.team_member_list(team=team_for_request(request, team))
        query = validated(serializers.MemberListQuery, request.query_params)
        if query.get("role"):
            members = members.filter(role=query["role"])
        page = self.paginate_queryset(members)
        return self.get_paginated_response(serializers.MembershipOutput(page, many=True).data)

    @extend_schema(
        request=serializers.MembershipCreateInput,
        responses={201: serializers.MembershipOutput},
        summary="Add a member (team admins)",
    )
    def post(self, request: Request, team: str) -> Response:
        team_object = team_for_request(request, team, required_role=Role.ADMIN)
        data = validated(serializers.MembershipCreateInput, request.data)
        membership = services.membership_add(
            actor=acting_user(request), team=team_object, user_ref=data["user"], role=data["role"]
        )
        return Response(serializers.MembershipOutput(membership).data, status=status.HTTP_201_CREATED)


class MemberDetailView(PortalView):
    @extend_schema(responses=serializers.MembershipOutput, summary="One member of a team")
    def get(self, request: Request, team: str, user: str) -> Response:
        membership = selectors.team_membership_get(team=team_for_request(request, team), user_ref=user)
        return Response(serializers.MembershipOutput(membership).data)

    @extend_schema(
        request=serializers.MembershipUpdateInput,
        responses=serializers.MembershipOutput,
        summary="Change a member's role (team admins)",
    )
    def patch(self, request: Request, team: str, user: str) -> Response:
        team_object = team_for_request(request, team, required_role=Role.ADMIN)
        membership = selectors.team_membership_get(team=team_object, user_ref=user)
        data = validated(serializers.MembershipUpdateInput, request.data)
        membership = services.membership_change_role(
            actor=acting_user(request), membership=membership, role=data["role"]
        )
        return Response(serializers.MembershipOutput(membership).data)

    @extend_schema(responses={204: None}, summary="Remove a member (team admins)")
    def delete(self, request: Request, team: str, user: str) -> Response:
        team_object = team_for_request(request, team, required_role=Role.ADMIN)
        membership = selectors.team_membership_get(team=team_object, user_ref=user)
        services.membership_remove(actor=acting_user(request), membership=membership)
        return Response(status=status.HTTP_204_NO_CONTENT)


class QuotaView(PortalView):
    @extend_schema(responses=serializers.QuotaOutput, summary="A team's quota (members read)")
    def get(self, request: Request, team: str) -> Response:
        quota = selectors.team_quota_get(team=team_for_request(request, team))
        return Response(serializers.QuotaOutput(quota).data)

    @extend_schema(
        request=serializers.QuotaUpdateInput,
        responses=serializers.QuotaOutput,
        summary="Change a team's quota (platform admins)",
    )
    def patch(self, request: Request, team: str) -> Response:
        return self._update(request, team, partial=True)

    def _update(self, request: Request, team: str, *, partial: bool) -> Response:
        team_object = team_for_request(request, team)
        if not is_platform_admin(request):
            raise PermissionDenied("Only platform admins change quotas", code="platform_admin_required")
        data = validated(serializers.QuotaUpdateInput, request.data, partial=partial)
        services.team_quota_update(actor=acting_user(request), team=team_object, changes=data)
        return Response(serializers.QuotaOutput(selectors.team_quota_get(team=team_object)).data)

    @extend_schema(
        request=serializers.QuotaUpdateInput,
        responses=serializers.QuotaOutput,
        summary="Replace a team's quota (platform admins)",
    )
    def put(self, request: Request, team: str) -> Response:
        return self._update(request, team, partial=False)


class QuotaRequestListView(PortalGenericView):
    queryset = QuotaRequest.objects.none()  # for the schema generator; views query through selectors
    serializer_class = serializers.QuotaRequestOutput

    @extend_schema(
        parameters=[serializers.QuotaRequestListQuery],
        responses=serializers.QuotaRequestOutput(many=True),
        summary="A team's quota requests, newest first (members read)",
    )
    def get(self, request: Request, team: str) -> Response:
        status_filter = validated(serializers.QuotaRequestListQuery, request.query_params).get("status") or None
        requests = selectors.quota_request_list(team=team_for_request(request, team), status=status_filter)
        page = self.paginate_queryset(requests)
        return self.get_paginated_response(serializers.QuotaRequestOutput(page, many=True).data)

    @extend_schema(
        request=serializers.QuotaRequestCreateInput,
        responses={201: serializers.QuotaRequestOutput},
        summary="Ask for more quota: GPUs per accelerator type and/or deployments (developers); a platform admin decides",
    )
    def post(self, request: Request, team: str) -> Response:
        team_object = team_for_request(request, team, required_role=Role.DEVELOPER)
        data = validated(serializers.QuotaRequestCreateInput, request.data)
        created = services.quota_request_create(actor=acting_user(request), team=team_object, **data)
        return Response(
            serializers.QuotaRequestOutput(created).data,
            status=status.HTTP_201_CREATED,
            headers={"Location": f"/api/v1/teams/{team_object.slug}/quota-requests/{created.pk}"},
        )


class QuotaRequestDetailView(PortalView):
    @extend_schema(responses=serializers.QuotaRequestOutput, summary="One quota request (members read)")
    def get(self, request: Request, team: str, request_id: int) -> Response:
        found = selectors.quota_request_get(team=team_for_request(request, team), request_id=request_id)
        return Response(serializers.QuotaRequestOutput(found).data)


class QuotaRequestDecisionView(PortalView):
    """approve and reject: platform admins; withdraw: the requester or a team admin, while it is pending."""

    decision = ""

    @extend_schema(
        request=serializers.QuotaRequestDecisionInput,
        responses=serializers.QuotaRequestOutput,
        summary="Decide a pending quota request: approve applies it to the team's quota (platform admins; "
        "withdraw: its requester or a team admin)",
    )
    def post(self, request: Request, team: str, request_id: int) -> Response:
        actor = acting_user(request)
        if self.decision == "withdraw":
            team_object = team_for_request(request, team, required_role=Role.DEVELOPER)
            found = selectors.quota_request_get(team=team_object, request_id=request_id)
            role = selectors.membership_role(team=team_object, user=actor)
            if found.requested_by_id != actor.pk and role != Role.ADMIN and not is_platform_admin(request):
                raise PermissionDenied(
                    "Only the requester or a team admin withdraws a quota request", code="insufficient_role"
                )
            validated(serializers.QuotaRequestDecisionInput, request.data or {})
            return Response(
                serializers.QuotaRequestOutput(services.quota_request_withdraw(actor=actor, request=found)).data
            )
        found = selectors.quota_request_get(team=team_for_request(request, team), request_id=request_id)
        if not is_platform_admin(request):
            raise PermissionDenied("Only platform admins decide quota requests", code="platform_admin_required")
        note = validated(serializers.QuotaRequestDecisionInput, request.data or {})["note"]
        if self.decision == "approve":
            decided = services.quota_request_approve(actor=actor, request=found, note=note)
        else:
            decided = services.quota_request_reject(actor=actor, request=found, note=note)
        return Response(serializers.QuotaRequestOutput(decided).data)


class PendingQuotaRequestListView(PortalGenericView):
    """The platform admins' queue: every team's requests, pending first by default."""

    queryset = QuotaRequest.objects.none()  # for the schema generator; views query through selectors
    serializer_class = serializers.QuotaRequestOutput

    @extend_schema(
        parameters=[serializers.QuotaRequestQueueQuery],
        responses=serializers.QuotaRequestOutput(many=True),
        summary="Every team's quota requests (platform admins)",
    )
    def get(self, request: Request) -> Response:
        if not is_platform_admin(request):
            raise PermissionDenied(
                "Only platform admins see every team's quota requests", code="platform_admin_required"
            )
        query = validated(serializers.QuotaRequestQueueQuery, request.query_params)
        status_filter = query.get("status") or QuotaRequest.Status.PENDING
        page = self.paginate_queryset(selectors.quota_request_list(status=status_filter))
        return self.get_paginated_response(serializers.QuotaRequestOutput(page, many=True).data)
