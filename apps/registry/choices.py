from django.db import models

from apps.core.statemachine import machine


class Stage(models.TextChoices):
    CANDIDATE = "candidate", "Candidate"
    PRODUCTION = "production", "Production"
    ARCHIVED = "archived", "Archived"


STAGE_MACHINE = machine(
    "model version",
    {
        Stage.CANDIDATE: (Stage.PRODUCTION, Stage.ARCHIVED),
        Stage.PRODUCTION: (Stage.ARCHIVED,),
        Stage.ARCHIVED: (Stage.CANDIDATE,),
    },
)
