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
            "promotion",
            "promotion_reason",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class PredictRequestSerializer(serializers.Serializer):
    """A predict call (schema only: apps.registry.serving checks the body and names what is wrong)."""

    ids = serializers.ListField(
        child=serializers.CharField(max_length=256),
        help_text="ids to score (max_ids of the serve ticket, default 1000)",
    )
    features = serializers.DictField(
        child=serializers.DictField(),
        required=False,
        help_text="optional: this side's feature values (column -> value) for ids it has not registered; they win over stored ones",
    )


class PredictionSerializer(serializers.Serializer):
    id = serializers.CharField()
    score = serializers.FloatField(allow_null=True, help_text="null when there is no score for this id (see reason)")
    reason = serializers.ChoiceField(
        choices=["unknown_to_partner", "unknown_to_leader", "bad_features"], required=False
    )
    error = serializers.CharField(required=False, help_text="why there is no score, for a person")


class PredictResponseSerializer(serializers.Serializer):
    model_version = serializers.UUIDField()
    job = serializers.UUIDField(help_text="the serve job that answered")
    predictions = PredictionSerializer(many=True)
    elapsed_ms = serializers.FloatField(help_text="time the leader's serving runtime took")


class DecisionSerializer(serializers.Serializer):
    reason = serializers.CharField(required=False, allow_blank=True, max_length=250, help_text="the partner sees it")
