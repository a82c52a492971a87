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


# Not a job kind: how the partner's request to promote a model version both sides hold is decided here.
# Its default is always_allow (the versions exist because our approvers approved the training ticket);
# `manual` makes it wait for an approver here, `always_refuse` refuses every promotion.
PROMOTION_POLICY = "model_promotion"
PROMOTION_POLICY_LABEL = "Model promotion to production"
