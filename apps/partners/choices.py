from django.db import models


class PartnerStatus(models.TextChoices):
    INVITED = "invited", "Invited"
    CONNECTED = "connected", "Connected"
    SUSPENDED = "suspended", "Suspended"


class Policy(models.TextChoices):
    """How the receiving side decides a partner's proposal of one job kind."""

    ALWAYS_ALLOW = "always_allow", "Always allow"
    MANUAL = "manual", "Decide by hand"
    ALWAYS_REFUSE = "always_refuse", "Always refuse"
