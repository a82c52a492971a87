from rest_framework import serializers

from apps.core.schema import params_any_of, typed_json
from apps.peer.reachability import undelivered
from apps.tickets.choices import JobKind
from apps.tickets.models import Ticket, TicketEvent


class TicketEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = TicketEvent
        fields = ["side", "from_status", "to_status", "actor_label", "comment", "created_at"]


class TicketSerializer(serializers.ModelSerializer):
    partner = serializers.UUIDField(source="partner_id", read_only=True)
    local_dataset = serializers.UUIDField(source="local_dataset_id", read_only=True, allow_null=True)
    events = TicketEventSerializer(many=True, read_only=True)
    params = typed_json(params_any_of())
    undelivered_messages = serializers.SerializerMethodField(
        help_text="messages about this ticket the partner has not received yet (0: it has everything)"
    )

    class Meta:
        model = Ticket
        fields = [
            "id", "name", "kind", "role", "is_proposer", "partner", "local_dataset", "remote_dataset_id", "remote_dataset_name",
            "params", "stream_source", "status", "comment", "decision_comment", "expires_at", "created_at", "updated_at", "decided_at", "events",
            "undelivered_messages",
        ]  # fmt: skip
        read_only_fields = fields

    def get_undelivered_messages(self, obj: Ticket) -> int:
        return undelivered(obj.workspace_id, obj.pk).count


STREAM_SOURCE_HELP = (
    "stream kinds only: where your live events arrive, kept on your side: "
    '{"kind": "folder", "location": "<folder inside your data folder>"} or {"kind": "nats", "location": "<subject>"}'
)


class TicketCreateSerializer(serializers.Serializer):
    partner = serializers.UUIDField()
    kind = serializers.ChoiceField(choices=JobKind.choices)
    local_dataset = serializers.UUIDField(help_text="your dataset")
    remote_dataset = serializers.UUIDField(help_text="id of a partner dataset shared with you (partner-datasets/)")
    name = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    params = serializers.JSONField(required=False, default=dict)
    comment = serializers.CharField(required=False, allow_blank=True, default="")
    stream_source = serializers.JSONField(required=False, allow_null=True, default=None, help_text=STREAM_SOURCE_HELP)


class ApproveSerializer(serializers.Serializer):
    comment = serializers.CharField(required=False, allow_blank=True, default="")
    dataset = serializers.UUIDField(
        required=False, allow_null=True, default=None, help_text="bind one of your datasets"
    )
    stream_source = serializers.JSONField(required=False, allow_null=True, default=None, help_text=STREAM_SOURCE_HELP)


class ReasonSerializer(serializers.Serializer):
    reason = serializers.CharField(required=False, allow_blank=True, default="")


class RejectSerializer(serializers.Serializer):
    reason = serializers.CharField(help_text="why you reject it (the partner reads it)")
