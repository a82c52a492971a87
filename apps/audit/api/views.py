import datetime as dt

import django_filters
from rest_framework import mixins
from rest_framework.exceptions import ValidationError

from apps.audit.api.serializers import AuditEventSerializer
from apps.audit.models import AuditEvent
from apps.core.api import TenantViewSet


class UTCDateTimeFilter(django_filters.IsoDateTimeFilter):
    """An ISO 8601 datetime, normalised to UTC (PostgreSQL refuses odd offsets such as -22:29)."""

    def filter(self, qs, value):
        if value is not None:
            try:
                value = value.astimezone(dt.UTC)
            except (OverflowError, ValueError):
                raise ValidationError({self.field_name: ["datetime out of range"]}) from None
        return super().filter(qs, value)


class AuditEventFilter(django_filters.FilterSet):
    since = UTCDateTimeFilter(field_name="created_at", lookup_expr="gte")
    until = UTCDateTimeFilter(field_name="created_at", lookup_expr="lt")
    verb = django_filters.CharFilter(field_name="verb", lookup_expr="startswith")

    class Meta:
        model = AuditEvent
        fields = ["source", "verb", "object_type", "object_id", "actor_label"]


class AuditEventViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantViewSet):
    """The workspace's append-only audit log."""

    serializer_class = AuditEventSerializer
    queryset = AuditEvent.objects.all()
    filterset_class = AuditEventFilter
