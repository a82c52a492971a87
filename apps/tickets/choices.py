from django.db import models

from apps.core.statemachine import machine


class JobKind(models.TextChoices):
    """What a ticket asks to run."""

    PSI = "psi", "PSI join"
    PSI_VERTICAL_NN = "psi_vertical_nn", "PSI join, then vertical NN training"
    VERTICAL_NN = "vertical_nn", "Vertical NN training on aligned data"
    PSI_VERTICAL_TREE = "psi_vertical_tree", "PSI join, then vertical boosted trees (SecureBoost)"
    VERTICAL_TREE = "vertical_tree", "Vertical boosted trees (SecureBoost) on aligned data"


TREE_KINDS = (JobKind.PSI_VERTICAL_TREE, JobKind.VERTICAL_TREE)
TRAINING_KINDS = (JobKind.PSI_VERTICAL_NN, JobKind.VERTICAL_NN, *TREE_KINDS)
PSI_KINDS = (JobKind.PSI, JobKind.PSI_VERTICAL_NN, JobKind.PSI_VERTICAL_TREE)


class PartyRole(models.TextChoices):
    """Leader holds the labels; follower holds other features of the same ids."""

    LEADER = "leader", "Leader (labels)"
    FOLLOWER = "follower", "Follower (features)"


class TicketStatus(models.TextChoices):
    DRAFT = "draft", "Draft"
    PROPOSED = "proposed", "Proposed"
    PENDING = "pending", "Pending my decision"
    APPROVED = "approved", "Approved"
    REJECTED = "rejected", "Rejected"
    WITHDRAWN = "withdrawn", "Withdrawn"
    EXPIRED = "expired", "Expired"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


S = TicketStatus
TICKET_MACHINE = machine(
    "ticket",
    {
        S.DRAFT: (S.PROPOSED, S.WITHDRAWN),
        S.PROPOSED: (S.APPROVED, S.REJECTED, S.WITHDRAWN, S.EXPIRED),
        S.PENDING: (S.APPROVED, S.REJECTED, S.WITHDRAWN, S.EXPIRED),
        S.APPROVED: (S.RUNNING, S.CANCELLED, S.WITHDRAWN),
        # A failed or cancelled run can be retried as a new attempt both sides agree to.
        S.RUNNING: (S.SUCCEEDED, S.FAILED, S.CANCELLED),
        S.FAILED: (S.RUNNING,),
        S.CANCELLED: (S.RUNNING,),
        S.SUCCEEDED: (),
        S.REJECTED: (),
        S.WITHDRAWN: (),
        S.EXPIRED: (),
    },
)
OPEN_STATUSES = (S.DRAFT, S.PROPOSED, S.PENDING)
