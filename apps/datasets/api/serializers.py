from rest_framework import serializers

from apps.core.schema import DATASET_SCHEMA, DATASET_STATS, typed_json
from apps.datasets.choices import Visibility
from apps.datasets.models import Dataset, DatasetGrant, RemoteDataset


class DatasetSerializer(serializers.ModelSerializer):
    granted_to = serializers.SerializerMethodField()
    schema = typed_json(DATASET_SCHEMA)
    stats = typed_json(DATASET_STATS)

    class Meta:
        model = Dataset
        fields = [
            "id", "name", "description", "uri", "format", "id_column", "label_column", "schema", "row_count",
            "stats", "checksum", "size_bytes", "visibility", "granted_to", "created_at",
        ]  # fmt: skip
        read_only_fields = fields

    def get_granted_to(self, obj: Dataset) -> list[str]:
        return [str(g.partner_id) for g in obj.grants.all()]


class DatasetCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=120)
    uri = serializers.CharField(
        max_length=1024,
        help_text="path (or file:// URI) in the workspace's data folder <root>/<slug>/; a relative path is looked up there",
    )
    id_column = serializers.CharField(max_length=120)
    label_column = serializers.CharField(max_length=120, required=False, allow_blank=True, default="")
    description = serializers.CharField(required=False, allow_blank=True, default="")
    visibility = serializers.ChoiceField(choices=Visibility.choices, default=Visibility.SCHEMA)


class GrantSerializer(serializers.ModelSerializer):
    partner = serializers.UUIDField(source="partner_id")

    class Meta:
        model = DatasetGrant
        fields = ["id", "partner", "created_at"]
        read_only_fields = ["id", "created_at"]


class RemoteDatasetSerializer(serializers.ModelSerializer):
    partner = serializers.UUIDField(source="partner_id", read_only=True)
    schema = typed_json(DATASET_SCHEMA)

    class Meta:
        model = RemoteDataset
        fields = ["id", "partner", "remote_id", "name", "schema", "row_count", "has_label", "revoked", "updated_at"]
        read_only_fields = fields
