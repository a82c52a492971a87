from drf_spectacular.utils import extend_schema
from rest_framework import mixins
from rest_framework.decorators import action
from rest_framework.response import Response

from apps.core.api import TenantViewSet
from apps.core.errors import ServiceError
from apps.datasets.models import Dataset, RemoteDataset
from apps.partners.models import Partner
from apps.tickets.api.serializers import (
    ApproveSerializer,
    ReasonSerializer,
    RejectSerializer,
    TicketCreateSerializer,
    TicketSerializer,
)
from apps.tickets.models import Ticket
from apps.tickets.services import approve_ticket, propose_ticket, reject_ticket, withdraw_ticket
from apps.workspaces.choices import Role


class TicketViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, TenantViewSet):
    """Proposals for joint jobs. Approvers decide; the proposer may withdraw."""

    serializer_class = TicketSerializer
    queryset = Ticket.objects.select_related("partner").prefetch_related("events")
    filterset_fields = ["status", "kind", "partner", "is_proposer"]
    action_roles = {"approve": Role.APPROVER, "reject": Role.APPROVER}

    def _get(self, model, pk, field: str, **extra):
        obj = model.objects.filter(workspace=self.workspace, pk=pk, **extra).first()
        if obj is None:
            raise ServiceError(f"unknown {field.replace('_', ' ')}", field=field)
        return obj

    @extend_schema(request=TicketCreateSerializer, responses={201: TicketSerializer})
    def create(self, request, *args, **kwargs):
        ser = TicketCreateSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        d = ser.validated_data
        partner = self._get(Partner, d["partner"], "partner")
        ticket = propose_ticket(
            self.workspace,
            partner=partner,
            kind=d["kind"],
            local_dataset=self._get(Dataset, d["local_dataset"], "local_dataset"),
            remote_dataset=self._get(RemoteDataset, d["remote_dataset"], "remote_dataset", partner=partner),
            name=d["name"],
            params=d["params"],
            comment=d["comment"],
            stream_source=d["stream_source"],
            acting_user=request.user,
            source=self.source,
        )
        return Response(TicketSerializer(ticket).data, status=201)

    @extend_schema(request=ApproveSerializer, responses=TicketSerializer)
    @action(detail=True, methods=["post"])
    def approve(self, request, *args, **kwargs):
        ser = ApproveSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        ds = self._get(Dataset, ser.validated_data["dataset"], "dataset") if ser.validated_data["dataset"] else None
        ticket = approve_ticket(
            self.get_object(),
            comment=ser.validated_data["comment"],
            dataset=ds,
            stream_source=ser.validated_data["stream_source"],
            acting_user=request.user,
            source=self.source,
        )
        return Response(TicketSerializer(ticket).data)

    @extend_schema(request=RejectSerializer, responses=TicketSerializer)
    @action(detail=True, methods=["post"])
    def reject(self, request, *args, **kwargs):
        ser = RejectSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        ticket = reject_ticket(
            self.get_object(), reason=ser.validated_data["reason"], acting_user=request.user, source=self.source
        )
        return Response(TicketSerializer(ticket).data)

    @extend_schema(request=ReasonSerializer, responses=TicketSerializer)
    @action(detail=True, methods=["post"])
    def withdraw(self, request, *args, **kwargs):
        ser = ReasonSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        ticket = withdraw_ticket(
            self.get_object(), reason=ser.validated_data["reason"], acting_user=request.user, source=self.source
        )
        return Response(TicketSerializer(ticket).data)
