from rest_framework import serializers

from apps.core.schema import ref, typed_json
from apps.registry.models import ModelVersion


class ModelVersionSerializer(serializers.ModelSerializer):
    ticket = serializers.UUIDField(source="ticket_id", read_only=True)
    job = serializers.UUIDField(source="job_id", read_only=True)
    metrics = typed_json(ref("TrainingSummary"))
    lineage = typed_json(ref("ModelLineage"))

    class Meta:
        model = ModelVersion
        fields = [
            "id",
            "name",
            "role",
            "ticket",
            "job",
            "artifact_uri",
            "metrics",
            "lineage",
            "parent",
            "sequence",
            "stage",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields
