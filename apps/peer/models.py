from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone


class OutboxStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    DELIVERED = "delivered", "Delivered"
    REFUSED = "refused", "Refused by the partner"


class OutboxMessage(models.Model):
    """A control message to a partner, written in the transaction of the change that causes it."""

    id = models.UUIDField(
        primary_key=True, default=uuid.uuid4, editable=False, help_text="the message id the receiver dedupes on"
    )
    seq = models.BigIntegerField(db_index=True, help_text="send order within the partner")
    workspace = models.ForeignKey("workspaces.Workspace", on_delete=models.CASCADE, related_name="outbox")
    partner = models.ForeignKey("partners.Partner", on_delete=models.CASCADE, related_name="outbox")
    kind = models.CharField(max_length=64)
    ticket_id = models.UUIDField(
        null=True, blank=True, db_index=True, help_text="messages of one ticket are delivered in order"
    )
    payload = models.JSONField(default=dict)
    status = models.CharField(max_length=16, choices=OutboxStatus.choices, default=OutboxStatus.PENDING, db_index=True)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(db_index=True)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["seq"]

    def __str__(self) -> str:
        return f"{self.kind} → {self.partner} ({self.status})"


class InboxMessage(models.Model):
    """A partner's message we applied; the unique message id makes applying exactly-once."""

    message_id = models.UUIDField(primary_key=True)
    workspace = models.ForeignKey("workspaces.Workspace", on_delete=models.CASCADE, related_name="inbox")
    partner = models.ForeignKey("partners.Partner", on_delete=models.CASCADE, related_name="inbox")
    kind = models.CharField(max_length=64)
    ticket_id = models.UUIDField(null=True, blank=True)
    seq = models.BigIntegerField(default=0)
    payload = models.JSONField(default=dict)
    sent_at_ms = models.BigIntegerField(default=0, help_text="the sender's signed timestamp (replay detection)")
    received_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-received_at"]

    def __str__(self) -> str:
        return f"{self.kind} from {self.partner}"


class WorkspaceSigningKey(models.Model):
    """A workspace's Ed25519 key: it signs every message the workspace sends to partners."""

    workspace = models.OneToOneField(
        "workspaces.Workspace", primary_key=True, on_delete=models.CASCADE, related_name="signing_key"
    )
    private_key = models.TextField(help_text="PKCS#8 PEM; never leaves this installation")
    public_key = models.CharField(max_length=64, help_text="base64 of the raw 32-byte public key, pinned by partners")
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"signing key of {self.workspace_id}"


class InvitationStatus(models.TextChoices):
    """Where an invitation stands; only a pending one can be accepted or revoked."""

    PENDING = "pending", "Pending"
    USED = "used", "Used"
    EXPIRED = "expired", "Expired"
    REVOKED = "revoked", "Revoked"


class InvitationQuerySet(models.QuerySet):
    def with_status(self, status: str) -> InvitationQuerySet:
        """Invitations in this status, judged as `Invitation.status` judges one (used, then revoked, then expiry)."""
        now = timezone.now()
        used, revoked = Q(used_at__isnull=False), Q(revoked_at__isnull=False)
        match status:
            case InvitationStatus.USED:
                return self.filter(used)
            case InvitationStatus.REVOKED:
                return self.filter(revoked).exclude(used)
            case InvitationStatus.EXPIRED:
                return self.filter(expires_at__lte=now).exclude(used | revoked)
            case InvitationStatus.PENDING:
                return self.filter(expires_at__gt=now).exclude(used | revoked)
        raise ValueError(f"unknown invitation status {status!r}")

    def pending(self) -> InvitationQuerySet:
        return self.with_status(InvitationStatus.PENDING)


class Invitation(models.Model):
    """A one-time partnership invitation; only a hash of its secret is stored."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    workspace = models.ForeignKey("workspaces.Workspace", on_delete=models.CASCADE, related_name="invitations")
    secret_hash = models.CharField(max_length=64)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)
    partner = models.ForeignKey(
        "partners.Partner", null=True, blank=True, on_delete=models.SET_NULL, related_name="invitations"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True, help_text="an admin withdrew it before it was used")
    revoked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    objects = InvitationQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"invitation {self.id} of {self.workspace_id}"

    @property
    def status(self) -> str:
        """Used wins over revoked (a handshake and a revocation cannot both succeed), revoked over expired."""
        if self.used_at is not None:
            return InvitationStatus.USED
        if self.revoked_at is not None:
            return InvitationStatus.REVOKED
        if self.expires_at <= timezone.now():
            return InvitationStatus.EXPIRED
        return InvitationStatus.PENDING
