import uuid

from django.conf import settings
from django.db import models

from apps.datasets.choices import DatasetFormat, Visibility


class Dataset(models.Model):
    """A local table in its workspace's data folders, inspected at registration."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    workspace = models.ForeignKey("workspaces.Workspace", on_delete=models.CASCADE, related_name="datasets")
    name = models.CharField(max_length=120)
    description = models.TextField(blank=True)
    uri = models.CharField(max_length=1024, help_text="absolute path under one of the configured data roots")
    format = models.CharField(max_length=16, choices=DatasetFormat.choices)
    id_column = models.CharField(max_length=120)
    label_column = models.CharField(max_length=120, blank=True)
    schema = models.JSONField(default=list, help_text="[{name, type}]")
    row_count = models.BigIntegerField()
    stats = models.JSONField(default=dict, help_text="per column: type, nulls, min, max, mean, distinct")
    checksum = models.CharField(max_length=80, help_text="sha256 of the file's bytes")
    size_bytes = models.BigIntegerField()
    visibility = models.CharField(max_length=16, choices=Visibility.choices, default=Visibility.SCHEMA)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["workspace", "name"],
                name="unique_dataset_name",
                violation_error_message="A dataset with this name exists.",
            )
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def columns(self) -> list[str]:
        return [c["name"] for c in self.schema]


class DatasetGrant(models.Model):
    """Which partner may name this dataset in a ticket."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="grants")
    partner = models.ForeignKey("partners.Partner", on_delete=models.CASCADE, related_name="grants")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["dataset", "partner"],
                name="unique_grant",
                violation_error_message="This partner already has this dataset.",
            )
        ]

    def __str__(self) -> str:
        return f"{self.dataset} → {self.partner}"


class RemoteDataset(models.Model):
    """What a partner shared with us of one of its datasets (never rows)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    workspace = models.ForeignKey("workspaces.Workspace", on_delete=models.CASCADE, related_name="remote_datasets")
    partner = models.ForeignKey("partners.Partner", on_delete=models.CASCADE, related_name="remote_datasets")
    remote_id = models.UUIDField(help_text="the dataset's id at the partner")
    name = models.CharField(max_length=120)
    schema = models.JSONField(default=list, blank=True)
    row_count = models.BigIntegerField(null=True, blank=True)
    has_label = models.BooleanField(default=False)
    revoked = models.BooleanField(default=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["partner", "name"]
        constraints = [models.UniqueConstraint(fields=["partner", "remote_id"], name="unique_remote_dataset")]

    def __str__(self) -> str:
        return f"{self.partner}:{self.name}"
