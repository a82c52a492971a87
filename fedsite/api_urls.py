"""/api/v1/: workspaces, and each workspace's resources under /workspaces/{slug}/."""

from django.urls import include, path
from rest_framework.routers import DefaultRouter

from apps.audit.api.views import AuditEventViewSet
from apps.datasets.api.views import DatasetViewSet, RemoteDatasetViewSet
from apps.jobs.api.views import JobViewSet, RuntimeReportView
from apps.partners.api.views import PartnerViewSet
from apps.registry.api.views import ModelVersionViewSet
from apps.tickets.api.views import TicketViewSet
from apps.workspaces.api.views import MembershipViewSet, WorkspaceViewSet

root = DefaultRouter()
root.register("workspaces", WorkspaceViewSet, basename="workspace")

tenant = DefaultRouter()
tenant.include_root_view = False
tenant.register("members", MembershipViewSet, basename="member")
tenant.register("partners", PartnerViewSet, basename="partner")
tenant.register("datasets", DatasetViewSet, basename="dataset")
tenant.register("partner-datasets", RemoteDatasetViewSet, basename="partner-dataset")
tenant.register("tickets", TicketViewSet, basename="ticket")
tenant.register("jobs", JobViewSet, basename="job")
tenant.register("model-versions", ModelVersionViewSet, basename="model-version")
tenant.register("audit-events", AuditEventViewSet, basename="audit-event")

urlpatterns = [
    path("", include(root.urls)),
    # The predict call as documented (an action outside the router: no trailing slash).
    path(
        "workspaces/<slug:workspace_slug>/model-versions/<uuid:pk>/predict",
        ModelVersionViewSet.as_view({"post": "predict"}),
        name="model-version-predict",
    ),
    path("workspaces/<slug:workspace_slug>/", include(tenant.urls)),
    path("runtime/jobs/<uuid:job_id>/report", RuntimeReportView.as_view(), name="runtime-report"),
]
