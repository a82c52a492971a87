from django.db import models

from apps.core.statemachine import machine


class JobKind(models.TextChoices):
    """What a ticket asks to run."""

    PSI = "psi", "PSI join"
    PSI_VERTICAL_NN = "psi_vertical_nn", "PSI join, then vertical NN training"
    VERTICAL_NN = "vertical_nn", "Vertical NN training on aligned data"
    PSI_VERTICAL_TREE = "psi_vertical_tree", "PSI join, then vertical boosted trees (SecureBoost)"
    VERTICAL_TREE = "vertical_tree", "Vertical boosted trees (SecureBoost) on aligned data"
    STREAM_JOIN = "stream_join", "Real-time join of two event streams into data blocks"
    STREAM_JOIN_TRAIN = "stream_join_train", "Real-time join, then continual vertical NN training"
    SERVE = "serve", "Online serving of a production model version"
    SCORE = "score", "Batch scoring of aligned data with a model version"
    PSI_SCORE = "psi_score", "PSI join, then batch scoring with a model version"


TREE_KINDS = (JobKind.PSI_VERTICAL_TREE, JobKind.VERTICAL_TREE)
TRAINING_KINDS = (JobKind.PSI_VERTICAL_NN, JobKind.VERTICAL_NN, *TREE_KINDS)
PSI_KINDS = (JobKind.PSI, JobKind.PSI_VERTICAL_NN, JobKind.PSI_VERTICAL_TREE, JobKind.PSI_SCORE)
# Score a dataset with a model version both sides hold (params.score.model_version); the leader gets scores.csv.
SCORE_KINDS: tuple[str, ...] = (JobKind.SCORE, JobKind.PSI_SCORE)
# Kinds naming a model version, and the parameter group that names it.
MODEL_GROUP: dict[str, str] = {JobKind.SERVE: "serve", JobKind.SCORE: "score", JobKind.PSI_SCORE: "score"}
# Each side names a stream source (where its live events arrive) besides its dataset.
STREAM_KINDS = (JobKind.STREAM_JOIN, JobKind.STREAM_JOIN_TRAIN)
# Run until either side stops them: no job deadline, and a runtime that is up is "running", not late.
LONG_RUNNING_KINDS: tuple[str, ...] = (*STREAM_KINDS, JobKind.SERVE)
# Long-running kinds that are services: a runtime that dies is restarted (Kubernetes: a Deployment
# plus a Service rather than a Job), and it never "completes".
SERVICE_KINDS: tuple[str, ...] = (JobKind.SERVE,)


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
        # failed: the job failed before it ran (launch failure, or the partner's failed first).
        S.APPROVED: (S.RUNNING, S.FAILED, S.CANCELLED, S.WITHDRAWN),
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
# Negotiation ended without approval: no job may run for such a ticket.
NOT_APPROVED_OUTCOMES = (S.REJECTED, S.WITHDRAWN, S.EXPIRED)
# Moves no user makes, only the peer protocol's rule (docs/peer.md, "Races"): a copy adopts the
# outcome the rule gives when the two sides' events crossed.
TICKET_RECONCILE = machine(
    "ticket",
    {
        **{src: tuple(dsts) for src, dsts in TICKET_MACHINE.transitions.items()},
        # The proposer adopts the receiver's decision, which the receiver took before our withdrawal reached it.
        S.WITHDRAWN: (S.REJECTED, S.EXPIRED),
        # The proposer's own expiry yields to the receiver's decision.
        S.EXPIRED: (S.APPROVED, S.REJECTED),
        # The receiver applies a withdrawal that wins; a job outcome merged with the partner's.
        S.RUNNING: (S.SUCCEEDED, S.FAILED, S.CANCELLED, S.WITHDRAWN),
        S.FAILED: (S.RUNNING, S.CANCELLED, S.WITHDRAWN),
        S.CANCELLED: (S.RUNNING, S.WITHDRAWN),
        S.SUCCEEDED: (S.FAILED, S.CANCELLED, S.WITHDRAWN),
    },
)
