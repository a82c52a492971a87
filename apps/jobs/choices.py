from django.db import models

from apps.core.statemachine import machine


class JobStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    STARTING = "starting", "Starting"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


J = JobStatus
JOB_MACHINE = machine(
    "job",
    {
        J.PENDING: (J.STARTING, J.FAILED, J.CANCELLED),
        J.STARTING: (J.RUNNING, J.SUCCEEDED, J.FAILED, J.CANCELLED),
        J.RUNNING: (J.SUCCEEDED, J.FAILED, J.CANCELLED),
        J.SUCCEEDED: (),
        J.FAILED: (),
        J.CANCELLED: (),
    },
)
ACTIVE = (J.PENDING, J.STARTING, J.RUNNING)
