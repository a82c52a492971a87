from pathlib import Path

from django.http import FileResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import mixins
from rest_framework.decorators import action
from rest_framework.response import Response

from apps.core.api import TenantViewSet
from apps.core.errors import NotFound, ServiceError
from apps.datasets.api.serializers import (
    DatasetCreateSerializer,
    DatasetSerializer,
    GrantSerializer,
    RemoteDatasetSerializer,
)
from apps.datasets.folders import lies_in_workspace
from apps.datasets.models import Dataset, DatasetGrant, RemoteDataset
from apps.datasets.services import grant_dataset, register_dataset, revoke_grant
from apps.partners.models import Partner
from apps.workspaces.choices import Role


class DatasetViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, mixins.DestroyModelMixin, TenantViewSet
):
    """Local datasets: register a file under the data roots, grant it to partners."""

    serializer_class = DatasetSerializer
    queryset = Dataset.objects.prefetch_related("grants")
    filterset_fields = ["format", "visibility"]
    search_fields = ["name"]
    action_roles = {"grants": Role.ADMIN, "revoke": Role.ADMIN, "destroy": Role.ADMIN}

    @extend_schema(request=DatasetCreateSerializer, responses={201: DatasetSerializer})
    def create(self, request, *args, **kwargs):
        ser = DatasetCreateSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        ds = register_dataset(self.workspace, acting_user=request.user, source=self.source, **ser.validated_data)
        return Response(DatasetSerializer(ds).data, status=201)

    def _partner(self, request) -> Partner:
        ser = GrantSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        partner = Partner.objects.filter(workspace=self.workspace, pk=ser.validated_data["partner_id"]).first()
        if partner is None:
            raise ServiceError("unknown partner", field="partner")
        return partner

    @extend_schema(request=GrantSerializer, responses={201: GrantSerializer})
    @action(detail=True, methods=["post"])
    def grants(self, request, *args, **kwargs):
        """Let a partner name this dataset in tickets (and see what its visibility allows)."""
        grant = grant_dataset(self.get_object(), self._partner(request), acting_user=request.user, source=self.source)
        return Response(GrantSerializer(grant).data, status=201)

    @extend_schema(request=GrantSerializer, responses={204: None})
    @action(detail=True, methods=["post"])
    def revoke(self, request, *args, **kwargs):
        grant = DatasetGrant.objects.filter(dataset=self.get_object(), partner=self._partner(request)).first()
        if grant is None:
            raise ServiceError("this partner has no grant on this dataset", field="partner")
        revoke_grant(grant, acting_user=request.user, source=self.source)
        return Response(status=204)

    @extend_schema(
        responses={(200, "text/csv"): OpenApiTypes.BINARY, (200, "application/vnd.apache.parquet"): OpenApiTypes.BINARY}
    )
    @action(detail=True, methods=["get"])
    def download(self, request, *args, **kwargs):
        """The dataset's file, while it still lies in this workspace's data folders."""
        ds = self.get_object()
        path = Path(ds.uri)
        if not lies_in_workspace(self.workspace, path) or not path.is_file():
            raise NotFound(f"dataset {ds.name}: its file is no longer in this workspace's data folders")
        content_type = "application/vnd.apache.parquet" if ds.format == "parquet" else "text/csv"
        return FileResponse(path.open("rb"), as_attachment=True, filename=path.name, content_type=content_type)


class RemoteDatasetViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantViewSet):
    """Datasets partners have shared with this workspace (name, schema, row count; never rows)."""

    serializer_class = RemoteDatasetSerializer
    queryset = RemoteDataset.objects.filter(revoked=False)
    filterset_fields = ["partner"]
