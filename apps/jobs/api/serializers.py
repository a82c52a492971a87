from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from apps.core.schema import ref, typed_json
from apps.jobs.models import Job, JobMetric
from apps.jobs.services import partition_status, stream_status


class JobSerializer(serializers.ModelSerializer):
    ticket = serializers.UUIDField(source="ticket_id", read_only=True)
    result = typed_json(ref("JobResult"))
    stream = serializers.SerializerMethodField()
    partitions = serializers.SerializerMethodField()

    class Meta:
        model = Job
        fields = [
            "id", "ticket", "attempt", "role", "status", "stage", "progress", "launcher", "log_tail", "error", "result",
            "remote_status", "remote_progress", "remote_error", "remote_updated_at", "started_at", "finished_at", "created_at", "updated_at", "stream",
            "partitions",
        ]  # fmt: skip
        read_only_fields = fields

    @extend_schema_field(ref("StreamStatus"))
    def get_stream(self, obj: Job) -> dict[str, Any] | None:
        return stream_status(obj)

    @extend_schema_field(ref("PsiPartitions"))
    def get_partitions(self, obj: Job) -> list[dict[str, Any]] | None:
        return partition_status(obj)


class JobMetricSerializer(serializers.ModelSerializer):
    class Meta:
        model = JobMetric
        fields = ["side", "name", "split", "step", "epoch", "value", "created_at"]


class JobOutputSerializer(serializers.Serializer):
    name = serializers.CharField(help_text="`aligned` (PSI) or `scores` (the leader's scores)")
    kind = serializers.CharField(help_text="`psi_aligned` or `scores`")
    path = serializers.CharField(help_text="where the file lives on this installation")
    size_bytes = serializers.IntegerField()
    description = serializers.CharField()
    content_type = serializers.CharField()


class RegisterOutputSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=120, help_text="the new dataset's name")
    description = serializers.CharField(required=False, allow_blank=True, default="", max_length=2000)


class CancelSerializer(serializers.Serializer):
    reason = serializers.CharField(required=False, allow_blank=True, default="")


class RuntimeEventSerializer(serializers.Serializer):
    type = serializers.ChoiceField(choices=["progress", "metric", "log", "result", "failed"])
    value = serializers.FloatField(required=False)
    stage = serializers.CharField(required=False, allow_blank=True, max_length=32)
    name = serializers.CharField(required=False, max_length=64)
    step = serializers.IntegerField(required=False, allow_null=True)
    epoch = serializers.IntegerField(required=False, allow_null=True)
    split = serializers.CharField(required=False, max_length=16)
    line = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False)
    level = serializers.CharField(required=False)
    data = serializers.JSONField(required=False)  # type: ignore[assignment]  # a field named `data`: DRF's metaclass moves it off the class
    error = serializers.CharField(required=False, allow_blank=True, max_length=10_000, trim_whitespace=False)
    ts = serializers.FloatField(required=False)

    def validate(self, attrs):
        if attrs["type"] == "metric" and ("name" not in attrs or "value" not in attrs):
            raise serializers.ValidationError("a metric needs name and value")
        if attrs["type"] == "progress" and "value" not in attrs:
            raise serializers.ValidationError("progress needs value")
        if attrs["type"] == "failed" and not attrs.get("error", "").strip():
            raise serializers.ValidationError("failed needs error")
        return attrs


class RuntimeReportSerializer(serializers.Serializer):
    events = RuntimeEventSerializer(many=True)
