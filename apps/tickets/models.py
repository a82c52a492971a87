import uuid

from django.conf import settings
from django.db import models

from apps.tickets.choices import JobKind, PartyRole, TicketStatus


class Ticket(models.Model):
    """A proposal for a joint job. Both installations hold a copy with the same id."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    workspace = models.ForeignKey("workspaces.Workspace", on_delete=models.CASCADE, related_name="tickets")
    partner = models.ForeignKey("partners.Partner", on_delete=models.PROTECT, related_name="tickets")
    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=32, choices=JobKind.choices)
    role = models.CharField(max_length=16, choices=PartyRole.choices, help_text="this side's role")
    is_proposer = models.BooleanField(help_text="true on the installation that proposed it")
    local_dataset = models.ForeignKey(
        "datasets.Dataset", null=True, blank=True, on_delete=models.PROTECT, related_name="tickets"
    )
    remote_dataset_id = models.UUIDField(null=True, blank=True, help_text="the partner's dataset id")
    remote_dataset_name = models.CharField(max_length=120, blank=True)
    params = models.JSONField(default=dict, blank=True)
    stream_source = models.JSONField(
        default=dict,
        blank=True,
        help_text="stream kinds: where this side's live events arrive ({kind: folder|nats, location}); never sent",
    )
    status = models.CharField(max_length=16, choices=TicketStatus.choices, default=TicketStatus.DRAFT, db_index=True)
    comment = models.TextField(blank=True, help_text="the proposal's note")
    decision_comment = models.TextField(blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    decided_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.name


class TicketEvent(models.Model):
    """One step of a ticket's timeline, on this side or reported by the partner."""

    class Side(models.TextChoices):
        LOCAL = "local", "This installation"
        REMOTE = "remote", "Partner"

    ticket = models.ForeignKey(Ticket, on_delete=models.CASCADE, related_name="events")
    side = models.CharField(max_length=8, choices=Side.choices, default=Side.LOCAL)
    from_status = models.CharField(max_length=16, blank=True)
    to_status = models.CharField(max_length=16)
    actor_label = models.CharField(max_length=200, blank=True)
    comment = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"{self.ticket_id}: {self.from_status} → {self.to_status}"
