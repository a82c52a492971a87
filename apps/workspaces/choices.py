from django.db import models


class Role(models.TextChoices):
    """What a member may do, from most to least (each includes those below it)."""

    OWNER = "owner", "Owner"
    ADMIN = "admin", "Admin"
    APPROVER = "approver", "Approver"
    MEMBER = "member", "Member"
    VIEWER = "viewer", "Viewer"


RANK = {Role.VIEWER: 0, Role.MEMBER: 1, Role.APPROVER: 2, Role.ADMIN: 3, Role.OWNER: 4}


def role_at_least(role: str, minimum: str) -> bool:
    return RANK[Role(role)] >= RANK[Role(minimum)]
