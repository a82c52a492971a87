import uuid

from django.db import models


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
    received_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-received_at"]

    def __str__(self) -> str:
        return f"{self.kind} from {self.partner}"
