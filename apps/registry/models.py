import uuid

from django.db import models

from apps.registry.choices import Promotion, Stage
from apps.tickets.choices import PartyRole


class ModelVersion(models.Model):
    """This side's half of a trained model; the same id on both installations."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    workspace = models.ForeignKey("workspaces.Workspace", on_delete=models.CASCADE, related_name="model_versions")
    ticket = models.ForeignKey("tickets.Ticket", on_delete=models.PROTECT, related_name="model_versions")
    job = models.ForeignKey("jobs.Job", on_delete=models.PROTECT, related_name="model_versions")
    name = models.CharField(max_length=200)
    role = models.CharField(max_length=16, choices=PartyRole.choices)
    artifact_uri = models.CharField(max_length=1024, help_text="TensorFlow SavedModel directory")
    metrics = models.JSONField(default=dict, blank=True)
    lineage = models.JSONField(default=dict, blank=True, help_text="ticket, job, datasets, parameters")
    parent = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="children",
        help_text="the version this one continued training from (continual training)",
    )
    sequence = models.PositiveIntegerField(
        null=True, blank=True, help_text="continual training: the version's number within its job (1, 2, …)"
    )
    stage = models.CharField(max_length=16, choices=Stage.choices, default=Stage.CANDIDATE)
    promotion = models.CharField(
        max_length=16,
        choices=Promotion.choices,
        default=Promotion.NONE,
        blank=True,
        help_text="two-party promotion: requested (waiting for the partner) or refused (see promotion_reason)",
    )
    promotion_reason = models.CharField(max_length=300, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.name
