from django.db.models import Count, Q
from django.http import Http404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins
from rest_framework.decorators import action
from rest_framework.response import Response

from apps.core.api import TenantViewSet
from apps.core.errors import ServiceError
from apps.partners.api.serializers import (
    AcceptInvitationSerializer,
    InvitationDetailSerializer,
    InvitationSerializer,
    PartnerPolicySerializer,
    PartnerSerializer,
)
from apps.partners.choices import PartnerStatus
from apps.partners.models import Partner
from apps.partners.services import set_partner_status, set_policies
from apps.peer.models import Invitation, InvitationStatus, OutboxStatus
from apps.workspaces.choices import Role

UUID_PATTERN = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"


class PartnerViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantViewSet):
    """Partners of this workspace. Only admins and owners manage them."""

    serializer_class = PartnerSerializer
    queryset = Partner.objects.annotate(
        pending_messages=Count("outbox", filter=Q(outbox__status=OutboxStatus.PENDING))
    ).order_by("name", "id")
    write_role = Role.ADMIN
    filterset_fields = ["status"]

    @extend_schema(request=PartnerPolicySerializer, responses=PartnerSerializer)
    def partial_update(self, request, *args, **kwargs):
        ser = PartnerPolicySerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        partner = set_policies(
            self.get_object(), ser.validated_data["policies"], acting_user=request.user, source=self.source
        )
        return Response(PartnerSerializer(partner).data)

    @extend_schema(request=None, responses=PartnerSerializer)
    @action(detail=True, methods=["post"])
    def suspend(self, request, *args, **kwargs):
        partner = set_partner_status(
            self.get_object(), PartnerStatus.SUSPENDED, acting_user=request.user, source=self.source
        )
        return Response(PartnerSerializer(partner).data)

    @extend_schema(request=None, responses=PartnerSerializer)
    @action(detail=True, methods=["post"])
    def resume(self, request, *args, **kwargs):
        partner = set_partner_status(
            self.get_object(), PartnerStatus.CONNECTED, acting_user=request.user, source=self.source
        )
        return Response(PartnerSerializer(partner).data)

    @extend_schema(
        methods=["GET"],
        description="This workspace's invitations, newest first, with their status (never their codes).",
        responses=InvitationDetailSerializer(many=True),
        filters=False,
        parameters=[
            OpenApiParameter("status", enum=InvitationStatus.values, description="only invitations in this status")
        ],
    )
    @extend_schema(
        methods=["POST"],
        description="A one-time invitation code for a partner's admin to accept.",
        request=None,
        responses={201: InvitationSerializer},
    )
    @action(detail=False, methods=["get", "post"])
    def invitations(self, request, *args, **kwargs):
        """List invitations (the roles that read partners) or create one (admins, like every partner write)."""
        if request.method == "GET":
            return self._list_invitations(request)
        from apps.peer.handshake import create_invitation

        invitation, code = create_invitation(self.workspace, acting_user=request.user, source=self.source)
        return Response({"id": invitation.id, "code": code, "expires_at": invitation.expires_at}, status=201)

    def _list_invitations(self, request):
        invitations = Invitation.objects.filter(workspace=self.workspace).select_related(
            "created_by", "revoked_by", "partner"
        )
        wanted = request.query_params.get("status")
        if wanted:
            if wanted not in InvitationStatus.values:
                raise ServiceError(f"status must be one of {', '.join(InvitationStatus.values)}", field="status")
            invitations = invitations.with_status(wanted)
        page = self.paginate_queryset(invitations.order_by("-created_at", "-id"))
        return self.get_paginated_response(InvitationDetailSerializer(page, many=True).data)

    @extend_schema(
        request=None,
        responses=InvitationDetailSerializer,
        parameters=[OpenApiParameter("invitation_id", OpenApiTypes.UUID, OpenApiParameter.PATH)],
    )
    @action(
        detail=False,
        methods=["post"],
        url_path=rf"invitations/(?P<invitation_id>{UUID_PATTERN})/revoke",
        url_name="invitation-revoke",
    )
    def revoke_invitation(self, request, invitation_id, *args, **kwargs):
        """Revoke a pending invitation: its code can no longer be accepted. Admins and owners only."""
        from apps.peer.handshake import revoke_invitation

        invitation = Invitation.objects.filter(workspace=self.workspace, pk=invitation_id).first()
        if invitation is None:
            raise Http404("No such invitation.")
        invitation = revoke_invitation(invitation, acting_user=request.user, source=self.source)
        return Response(InvitationDetailSerializer(invitation).data)

    @extend_schema(request=AcceptInvitationSerializer, responses={201: PartnerSerializer})
    @action(detail=False, methods=["post"])
    def accept(self, request, *args, **kwargs):
        """Accept a partner's invitation: connect to it and pin each other."""
        from apps.peer.handshake import accept_invitation

        ser = AcceptInvitationSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        partner = accept_invitation(
            self.workspace,
            ser.validated_data["code"],
            name=ser.validated_data["name"],
            acting_user=request.user,
            source=self.source,
        )
        return Response(PartnerSerializer(partner).data, status=201)
