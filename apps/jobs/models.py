import uuid

from django.db import models

from apps.jobs.choices import JobStatus
from apps.tickets.choices import PartyRole


class Job(models.Model):
    """One run (attempt) of a ticket on this side; the same id on both installations."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    workspace = models.ForeignKey("workspaces.Workspace", on_delete=models.CASCADE, related_name="jobs")
    ticket = models.ForeignKey("tickets.Ticket", on_delete=models.CASCADE, related_name="jobs")
    attempt = models.PositiveIntegerField(default=1)
    role = models.CharField(max_length=16, choices=PartyRole.choices)
    status = models.CharField(max_length=16, choices=JobStatus.choices, default=JobStatus.PENDING, db_index=True)
    stage = models.CharField(max_length=32, blank=True)
    progress = models.FloatField(default=0.0)
    launcher = models.CharField(max_length=16, blank=True)
    handle = models.JSONField(default=dict, blank=True, help_text="launcher's handle: pid, or Kubernetes names")
    runtime_address = models.CharField(max_length=255, blank=True, help_text="leader runtime's host:port")
    token_hash = models.CharField(max_length=128, blank=True, help_text="sha256 of the runtime's per-job report token")
    log_tail = models.TextField(blank=True)
    error = models.TextField(blank=True)
    result = models.JSONField(default=dict, blank=True)
    remote_status = models.CharField(max_length=16, blank=True)
    remote_progress = models.FloatField(null=True, blank=True)
    remote_error = models.TextField(blank=True)
    remote_updated_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [models.UniqueConstraint(fields=["ticket", "attempt"], name="unique_job_attempt")]

    def __str__(self) -> str:
        return f"{self.ticket} #{self.attempt}"


class JobMetric(models.Model):
    """A metric point of a job: loss every N steps, and per-epoch loss/AUC/KS/accuracy."""

    class Side(models.TextChoices):
        LOCAL = "local", "This side"
        REMOTE = "remote", "Partner"

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="metrics")
    side = models.CharField(max_length=8, choices=Side.choices, default=Side.LOCAL)
    name = models.CharField(max_length=64)
    split = models.CharField(max_length=16, default="train")
    step = models.IntegerField(null=True, blank=True)
    epoch = models.IntegerField(null=True, blank=True)
    value = models.FloatField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["job", "name", "split"])]

    def __str__(self) -> str:
        return f"{self.name}[{self.split}]={self.value}"
