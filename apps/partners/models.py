import uuid

from django.conf import settings
from django.db import models

from apps.partners.choices import PROMOTION_POLICY, PartnerStatus, Policy
from apps.tickets.choices import JobKind


def default_policies() -> dict[str, str]:
    return {kind: Policy.MANUAL.value for kind in JobKind.values}


class Partner(models.Model):
    """A remote workspace at a remote installation, with what we pinned of it."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    workspace = models.ForeignKey("workspaces.Workspace", on_delete=models.CASCADE, related_name="partners")
    name = models.CharField(max_length=120)
    remote_installation = models.CharField(max_length=120, blank=True)
    remote_workspace_id = models.UUIDField(null=True, blank=True)
    remote_workspace_slug = models.CharField(max_length=50, blank=True)
    endpoint = models.CharField(max_length=255, blank=True, help_text="host:port of the partner's peer service")
    ca_pem = models.TextField(blank=True, help_text="the partner installation's CA certificate, pinned at handshake")
    ca_fingerprint = models.CharField(max_length=95, blank=True)
    workspace_public_key = models.TextField(
        blank=True, help_text="the partner workspace's signing key, pinned at handshake"
    )
    status = models.CharField(max_length=16, choices=PartnerStatus.choices, default=PartnerStatus.INVITED)
    policies = models.JSONField(default=default_policies, blank=True)
    last_contact_at = models.DateTimeField(null=True, blank=True)
    last_rtt_ms = models.FloatField(null=True, blank=True)
    cert_expires_at = models.DateTimeField(null=True, blank=True)
    clock_skew_s = models.FloatField(null=True, blank=True)
    last_error = models.TextField(blank=True, help_text="the last failed call to the partner, if any")
    delivery_lease_until = models.DateTimeField(
        null=True, blank=True, help_text="a worker is delivering this partner's outbox until then"
    )
    delivery_lease_holder = models.CharField(
        max_length=255, blank=True, help_text="host:pid:start of the worker holding the lease (freed if it died)"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["workspace", "name"],
                name="unique_partner_name",
                violation_error_message="A partner with this name exists.",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def policy_for(self, kind: str) -> str:
        default = Policy.ALWAYS_ALLOW if kind == PROMOTION_POLICY else Policy.MANUAL
        return (self.policies or {}).get(kind, default)
