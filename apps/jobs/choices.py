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
# When both sides' runs of one attempt ended differently, both keep the higher of the two:
# a run succeeds only if it succeeded on both sides; a cancel (a person's decision, which
# makes the partner's runtime fail) outranks the failure it causes.
OUTCOME_RANK: dict[str, int] = {J.SUCCEEDED: 1, J.FAILED: 2, J.CANCELLED: 3}
JOB_RECONCILE = machine(
    "job",
    {
        **{src: tuple(dsts) for src, dsts in JOB_MACHINE.transitions.items()},
        J.SUCCEEDED: (J.FAILED, J.CANCELLED),
        J.FAILED: (J.CANCELLED,),
    },
)
