from rest_framework import serializers

from apps.partners.models import Partner


class PartnerSerializer(serializers.ModelSerializer):
    class Meta:
        model = Partner
        fields = [
            "id", "name", "status", "remote_installation", "remote_workspace_id", "remote_workspace_slug", "endpoint",
            "ca_fingerprint", "policies", "last_contact_at", "last_rtt_ms", "cert_expires_at", "clock_skew_s", "created_at",
        ]  # fmt: skip
        read_only_fields = [f for f in fields if f != "policies"]


class PartnerPolicySerializer(serializers.Serializer):
    policies = serializers.DictField(
        child=serializers.CharField(), help_text="job kind → always_allow | manual | always_refuse"
    )
