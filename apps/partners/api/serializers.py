from rest_framework import serializers

from apps.partners.models import Partner


class PartnerSerializer(serializers.ModelSerializer):
    pending_messages = serializers.SerializerMethodField(help_text="messages waiting to be delivered to this partner")

    class Meta:
        model = Partner
        fields = [
            "id", "name", "status", "remote_installation", "remote_workspace_id", "remote_workspace_slug", "endpoint",
            "ca_fingerprint", "policies", "last_contact_at", "last_rtt_ms", "cert_expires_at", "clock_skew_s", "last_error", "pending_messages", "created_at",
        ]  # fmt: skip
        read_only_fields = [f for f in fields if f != "policies"]

    def get_pending_messages(self, obj: Partner) -> int:
        annotated = getattr(obj, "pending_messages", None)
        if annotated is not None:
            return annotated
        from apps.peer.models import OutboxStatus

        return obj.outbox.filter(status=OutboxStatus.PENDING).count()


class PartnerPolicySerializer(serializers.Serializer):
    policies = serializers.DictField(
        child=serializers.CharField(), help_text="job kind → always_allow | manual | always_refuse"
    )


class InvitationSerializer(serializers.Serializer):
    id = serializers.UUIDField(read_only=True)
    code = serializers.CharField(read_only=True, help_text="give this to the partner's admin; it works once")
    expires_at = serializers.DateTimeField(read_only=True)


class AcceptInvitationSerializer(serializers.Serializer):
    code = serializers.CharField(help_text="the invitation code the partner's admin gave you")
    name = serializers.CharField(required=False, allow_blank=True, max_length=120, default="")
