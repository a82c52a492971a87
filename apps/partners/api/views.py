from django.db.models import Count, Q
from drf_spectacular.utils import extend_schema
from rest_framework import mixins
from rest_framework.decorators import action
from rest_framework.response import Response

from apps.core.api import TenantViewSet
from apps.partners.api.serializers import (
    AcceptInvitationSerializer,
    InvitationSerializer,
    PartnerPolicySerializer,
    PartnerSerializer,
)
from apps.partners.choices import PartnerStatus
from apps.partners.models import Partner
from apps.partners.services import set_partner_status, set_policies
from apps.peer.models import OutboxStatus
from apps.workspaces.choices import Role


class PartnerViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantViewSet):
    """Partners of this workspace. Only admins and owners manage them."""

    serializer_class = PartnerSerializer
    queryset = Partner.objects.annotate(pending_messages=Count("outbox", filter=Q(outbox__status=OutboxStatus.PENDING)))
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

    @extend_schema(request=None, responses={201: InvitationSerializer})
    @action(detail=False, methods=["post"])
    def invitations(self, request, *args, **kwargs):
        """A one-time invitation code for a partner's admin to accept."""
        from apps.peer.handshake import create_invitation

        invitation, code = create_invitation(self.workspace, acting_user=request.user, source=self.source)
        return Response({"id": invitation.id, "code": code, "expires_at": invitation.expires_at}, status=201)

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
