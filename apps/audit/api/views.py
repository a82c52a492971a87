import django_filters
from rest_framework import mixins

from apps.audit.api.serializers import AuditEventSerializer
from apps.audit.models import AuditEvent
from apps.core.api import TenantViewSet


class AuditEventFilter(django_filters.FilterSet):
    since = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    until = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="lt")
    verb = django_filters.CharFilter(field_name="verb", lookup_expr="startswith")

    class Meta:
        model = AuditEvent
        fields = ["source", "verb", "object_type", "object_id", "actor_label"]


class AuditEventViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantViewSet):
    """The workspace's append-only audit log."""

    serializer_class = AuditEventSerializer
    queryset = AuditEvent.objects.all()
    filterset_class = AuditEventFilter
