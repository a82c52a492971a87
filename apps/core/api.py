"""The tenant base viewset every workspace resource uses."""

from __future__ import annotations

from django.http import Http404
from rest_framework import exceptions, permissions, viewsets
from rest_framework.filters import OrderingFilter

from apps.core.filters import TenantFilterBackend
from apps.workspaces.choices import Role, role_at_least
from apps.workspaces.models import Membership, Workspace


class TenantViewSet(viewsets.GenericViewSet):
    """Resolves `{workspace_slug}` to a workspace the user belongs to (else 404),
    scopes the queryset to it, and checks the role the action needs (else 403).

    Subclasses declare `action_roles = {"approve": Role.APPROVER, …}`; reads need
    viewer and other writes need member unless said otherwise.
    """

    filter_backends = [TenantFilterBackend, OrderingFilter]
    read_role: str = Role.VIEWER
    write_role: str = Role.MEMBER
    action_roles: dict[str, str] = {}
    permission_classes = [permissions.IsAuthenticated]
    workspace: Workspace
    membership: Membership

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        slug = kwargs.get("workspace_slug")
        membership = (
            Membership.objects.select_related("workspace").filter(workspace__slug=slug, user=request.user).first()
        )
        if membership is None:
            raise Http404("No such workspace.")
        self.workspace = membership.workspace
        self.membership = membership
        required = self.action_roles.get(self.action or "") or (
            self.read_role if request.method in permissions.SAFE_METHODS else self.write_role
        )
        if not role_at_least(membership.role, required):
            raise exceptions.PermissionDenied(
                f"your role in {slug} is {membership.role}; this needs {required} or above"
            )
        # Resolve the object before any body is parsed, so another workspace's id is a 404, never a 400.
        if (self.lookup_url_kwarg or self.lookup_field) in kwargs:
            self.get_object()

    def get_object(self):
        if not hasattr(self, "_object"):
            self._object = super().get_object()
        return self._object

    def get_queryset(self):
        qs = super().get_queryset()
        if getattr(self, "swagger_fake_view", False):
            return qs.none()
        return qs.filter(workspace=self.workspace)

    def get_serializer_context(self):
        ctx = dict(super().get_serializer_context())  # typed as a read-only Mapping; DRF returns a fresh dict
        if hasattr(self, "workspace"):
            ctx["workspace"] = self.workspace
        return ctx

    @property
    def source(self) -> str:
        """Where an action came from, for the audit log."""
        return "api" if self.request.auth is not None or self.request.path.startswith("/api/") else "ui"
