from django.db import models

from apps.core.statemachine import machine


class Stage(models.TextChoices):
    CANDIDATE = "candidate", "Candidate"
    PRODUCTION = "production", "Production"
    ARCHIVED = "archived", "Archived"


class Promotion(models.TextChoices):
    """Two-party promotion of a version, alongside its stage."""

    NONE = "", "None"
    REQUESTED = "requested", "Requested (pending at partner)"
    REFUSED = "refused", "Refused by partner"
    AWAITING = "awaiting", "Asked by the partner: waiting for an approver here"


STAGE_MACHINE = machine(
    "model version",
    {
        Stage.CANDIDATE: (Stage.PRODUCTION, Stage.ARCHIVED),
        Stage.PRODUCTION: (Stage.ARCHIVED,),
        Stage.ARCHIVED: (Stage.CANDIDATE,),
    },
)
