from django.contrib.auth.models import User
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, viewsets
from rest_framework.response import Response

from apps.core.api import TenantViewSet
from apps.workspaces.api.serializers import MembershipRoleSerializer, MembershipSerializer, WorkspaceSerializer
from apps.workspaces.choices import Role
from apps.workspaces.models import Membership, Workspace
from apps.workspaces.services import add_member, change_role, create_workspace, remove_member


class WorkspaceViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, viewsets.GenericViewSet
):
    """Workspaces you belong to. Creating one makes you its owner."""

    serializer_class = WorkspaceSerializer
    lookup_field = "slug"
    queryset = Workspace.objects.all()

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Workspace.objects.none()
        user = self.request.user
        assert isinstance(user, User)  # IsAuthenticated: never the anonymous user here
        return Workspace.objects.filter(memberships__user=user).distinct()

    def create(self, request, *args, **kwargs):
        ser = self.get_serializer(data=request.data)
        ser.is_valid(raise_exception=True)
        ws = create_workspace(
            slug=ser.validated_data["slug"], name=ser.validated_data["name"], owner=request.user, source="api"
        )
        return Response(self.get_serializer(ws).data, status=201)


class MembershipViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, mixins.DestroyModelMixin, TenantViewSet
):
    """Members of a workspace; only admins and owners manage them, and only owners manage owners."""

    serializer_class = MembershipSerializer
    queryset = Membership.objects.select_related("user")
    write_role = Role.ADMIN

    @extend_schema(request=MembershipSerializer, responses=MembershipSerializer)
    def create(self, request, *args, **kwargs):
        ser = self.get_serializer(data=request.data)
        ser.is_valid(raise_exception=True)
        m = add_member(
            self.workspace,
            username=ser.validated_data["user"]["username"],
            role=ser.validated_data["role"],
            acting_user=request.user,
            source=self.source,
        )
        return Response(self.get_serializer(m).data, status=201)

    @extend_schema(request=MembershipRoleSerializer, responses=MembershipSerializer)
    def partial_update(self, request, *args, **kwargs):
        ser = MembershipRoleSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        m = change_role(self.get_object(), ser.validated_data["role"], acting_user=request.user, source=self.source)
        return Response(self.get_serializer(m).data)

    def perform_destroy(self, instance):
        user = self.request.user
        assert isinstance(user, User)  # IsAuthenticated: never the anonymous user here
        remove_member(instance, acting_user=user, source=self.source)
