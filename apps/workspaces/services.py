"""Workspaces and their members: the only code that creates or changes them."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from apps.audit.services import record
from apps.core.errors import ServiceError
from apps.workspaces.choices import Role
from apps.workspaces.models import Membership, Workspace, slug_validator


@transaction.atomic
def create_workspace(*, slug: str, name: str, owner: AbstractBaseUser, source: str = "system") -> Workspace:
    from django.core.exceptions import ValidationError

    try:
        slug_validator(slug)
    except ValidationError:
        raise ServiceError("slug must be 3–50 lowercase letters, digits or dashes", field="slug") from None
    if Workspace.objects.filter(slug=slug).exists():
        raise ServiceError(f"a workspace with slug {slug!r} already exists", field="slug")
    workspace = Workspace.objects.create(slug=slug, name=name)
    Membership.objects.create(workspace=workspace, user=owner, role=Role.OWNER)
    record(workspace, "workspace.created", workspace, actor=owner, source=source, data={"slug": slug})
    return workspace


@transaction.atomic
def add_member(
    workspace: Workspace, *, username: str, role: str, acting_user: AbstractBaseUser | None, source: str = "api"
) -> Membership:
    if role not in Role.values:
        raise ServiceError(f"unknown role {role!r}", field="role")
    user = get_user_model().objects.filter(username=username).first()
    if user is None:
        raise ServiceError(f"no user named {username!r}", field="username")
    membership, created = Membership.objects.get_or_create(workspace=workspace, user=user, defaults={"role": role})
    if not created and membership.role != role:
        if (
            membership.role == Role.OWNER
            and not Membership.objects.filter(workspace=workspace, role=Role.OWNER).exclude(pk=membership.pk).exists()
        ):
            raise ServiceError("a workspace keeps at least one owner", field="role")
        membership.role = role
        membership.save(update_fields=["role"])
    record(
        workspace, "member.set", membership, actor=acting_user, source=source, data={"username": username, "role": role}
    )
    return membership


@transaction.atomic
def remove_member(membership: Membership, *, acting_user: AbstractBaseUser | None, source: str = "api") -> None:
    workspace = membership.workspace
    if (
        membership.role == Role.OWNER
        and not Membership.objects.filter(workspace=workspace, role=Role.OWNER).exclude(pk=membership.pk).exists()
    ):
        raise ServiceError("a workspace keeps at least one owner")
    record(
        workspace,
        "member.removed",
        membership,
        actor=acting_user,
        source=source,
        data={"username": membership.user.get_username()},
    )
    membership.delete()


def membership_for(user: AbstractBaseUser, workspace: Workspace) -> Membership | None:
    if not user.is_authenticated:
        return None
    return Membership.objects.filter(workspace=workspace, user=user).first()
