from rest_framework import serializers

from apps.partners.models import Partner
from apps.peer.models import Invitation, InvitationStatus


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


class InvitationDetailSerializer(serializers.ModelSerializer):
    """An invitation as its workspace's members see it: never the code or its secret."""

    status = serializers.ChoiceField(
        choices=InvitationStatus.choices, read_only=True, help_text="pending | used | expired | revoked"
    )
    created_by = serializers.SerializerMethodField(help_text="username of the admin who created it")
    revoked_by = serializers.SerializerMethodField(help_text="username of the admin who revoked it")
    partner_id = serializers.UUIDField(read_only=True, allow_null=True, help_text="the partner it connected, if used")
    partner_name = serializers.SerializerMethodField()

    class Meta:
        model = Invitation
        fields = [
            "id", "status", "created_at", "expires_at", "used_at", "revoked_at", "created_by", "revoked_by",
            "partner_id", "partner_name",
        ]  # fmt: skip
        read_only_fields = fields

    def get_created_by(self, obj: Invitation) -> str | None:
        return obj.created_by.get_username() if obj.created_by else None

    def get_revoked_by(self, obj: Invitation) -> str | None:
        return obj.revoked_by.get_username() if obj.revoked_by else None

    def get_partner_name(self, obj: Invitation) -> str | None:
        return obj.partner.name if obj.partner else None


class AcceptInvitationSerializer(serializers.Serializer):
    code = serializers.CharField(help_text="the invitation code the partner's admin gave you")
    name = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=120,
        default="",
        help_text="how the partner appears here; defaults to the name the partner gave its workspace",
    )
