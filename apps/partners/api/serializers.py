import datetime as dt

from rest_framework import serializers

from apps.core.schema import ref, typed_json
from apps.partners.choices import PartnerStatus
from apps.partners.models import Partner
from apps.peer.models import Invitation, InvitationStatus
from apps.peer.reachability import DeliveryState, delivery_state


class PartnerSerializer(serializers.ModelSerializer):
    pending_messages = serializers.SerializerMethodField(help_text="messages waiting to be delivered to this partner")
    failing_messages = serializers.SerializerMethodField(
        help_text="of the pending messages, how many were tried and did not get through"
    )
    undelivered_since = serializers.SerializerMethodField(
        help_text="when the oldest message not yet delivered to this partner was written (null: none waits)"
    )
    last_delivered_at = serializers.SerializerMethodField(help_text="when a message of ours last reached this partner")
    policies = typed_json(ref("PartnerPolicies"))
    reachable = serializers.SerializerMethodField(
        help_text="our messages and heartbeats get through to this partner (false: see last_error)"
    )

    class Meta:
        model = Partner
        fields = [
            "id", "name", "status", "remote_installation", "remote_workspace_id", "remote_workspace_slug", "endpoint",
            "ca_fingerprint", "policies", "last_contact_at", "last_rtt_ms", "cert_expires_at", "clock_skew_s", "last_error", "pending_messages",
            "failing_messages", "undelivered_since", "last_delivered_at", "reachable", "created_at",
        ]  # fmt: skip
        read_only_fields = [f for f in fields if f != "policies"]

    def get_pending_messages(self, obj: Partner) -> int:
        annotated = getattr(obj, "pending_messages", None)
        if annotated is not None:
            return annotated
        from apps.peer.models import OutboxStatus

        return obj.outbox.filter(status=OutboxStatus.PENDING).count()

    def _delivery(self, obj: Partner) -> DeliveryState:
        state = getattr(obj, "_delivery_state", None)
        if state is None:
            state = delivery_state(obj)
            obj._delivery_state = state  # type: ignore[attr-defined]  # asked once per partner, not per field
        return state

    def get_failing_messages(self, obj: Partner) -> int:
        return self._delivery(obj).failing

    def get_undelivered_since(self, obj: Partner) -> dt.datetime | None:
        return self._delivery(obj).waiting_since

    def get_last_delivered_at(self, obj: Partner) -> dt.datetime | None:
        return self._delivery(obj).last_delivered_at

    def get_reachable(self, obj: Partner) -> bool:
        return obj.status == PartnerStatus.CONNECTED and self._delivery(obj).reaches


class PartnerPolicySerializer(serializers.Serializer):
    policies = typed_json(ref("PartnerPolicies"), read_only=False, help_text="job kind → policy")


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
