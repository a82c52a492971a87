"""Workspaces and their members: the only code that creates or changes them."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from apps.audit.services import record
from apps.core.errors import Forbidden, ServiceError
from apps.datasets.folders import ensure_workspace_folders
from apps.workspaces.choices import Role, role_at_least
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
    transaction.on_commit(lambda: ensure_workspace_folders(workspace))
    return workspace


def _lock_members(workspace: Workspace) -> None:
    """Serialize member changes of one workspace, so two owners cannot demote each other at once."""
    Workspace.objects.select_for_update().filter(pk=workspace.pk).first()


def _check_manager(workspace: Workspace, acting_user: AbstractBaseUser | None) -> str | None:
    """The acting user's role if it may manage members (None for the command line), else Forbidden."""
    if acting_user is None:
        return None
    actor = membership_for(acting_user, workspace)
    if actor is None or not role_at_least(actor.role, Role.ADMIN):
        raise Forbidden("only owners and admins manage members")
    return actor.role


def _check_owner_rules(membership: Membership, new_role: str | None, actor_role: str | None) -> None:
    """Admins neither grant the owner role nor touch an owner; the last owner stays (`new_role` None: removal)."""
    if actor_role == Role.ADMIN:
        if new_role == Role.OWNER:
            raise Forbidden("only an owner can make someone an owner")
        if membership.role == Role.OWNER:
            raise Forbidden("only an owner can change or remove an owner")
    if (
        membership.role == Role.OWNER
        and new_role != Role.OWNER
        and not Membership.objects.filter(workspace_id=membership.workspace_id, role=Role.OWNER)
        .exclude(pk=membership.pk)
        .exists()
    ):
        raise ServiceError(
            "a workspace keeps at least one owner: make another member owner first",
            field="role" if new_role is not None else None,
        )


def _check_role(role: str) -> None:
    if role not in Role.values:
        raise ServiceError(f"unknown role {role!r}: choose one of {', '.join(Role.values)}", field="role")


@transaction.atomic
def add_member(
    workspace: Workspace, *, username: str, role: str, acting_user: AbstractBaseUser | None, source: str = "api"
) -> Membership:
    """Give a user a role here; for an existing member this sets the role (as `change_role` would).

    `acting_user` None is the command line, which the operator runs: no role check.
    """
    _check_role(role)
    _lock_members(workspace)
    actor_role = _check_manager(workspace, acting_user)
    user = get_user_model().objects.filter(username=username).first()
    if user is None:
        raise ServiceError(f"no user named {username!r}", field="username")
    membership = Membership.objects.filter(workspace=workspace, user=user).first()
    if membership is None:
        if actor_role == Role.ADMIN and role == Role.OWNER:
            raise Forbidden("only an owner can make someone an owner")
        membership = Membership.objects.create(workspace=workspace, user=user, role=role)
    else:
        _check_owner_rules(membership, role, actor_role)
        if membership.role == role:
            return membership
        membership.role = role
        membership.save(update_fields=["role"])
    record(
        workspace, "member.set", membership, actor=acting_user, source=source, data={"username": username, "role": role}
    )
    return membership


@transaction.atomic
def change_role(
    membership: Membership, role: str, *, acting_user: AbstractBaseUser | None, source: str = "api"
) -> Membership:
    """Give an existing member another role."""
    _check_role(role)
    _lock_members(membership.workspace)
    actor_role = _check_manager(membership.workspace, acting_user)
    current = Membership.objects.select_related("user", "workspace").filter(pk=membership.pk).first()
    if current is None:
        raise ServiceError("this user is no longer a member")
    _check_owner_rules(current, role, actor_role)
    if current.role == role:
        return current
    previous = current.role
    current.role = role
    current.save(update_fields=["role"])
    record(
        current.workspace,
        "member.role_changed",
        current,
        actor=acting_user,
        source=source,
        data={"username": current.user.get_username(), "from": previous, "role": role},
    )
    return current


@transaction.atomic
def remove_member(membership: Membership, *, acting_user: AbstractBaseUser | None, source: str = "api") -> None:
    """Take a member out of the workspace (the user account stays)."""
    workspace = membership.workspace
    _lock_members(workspace)
    actor_role = _check_manager(workspace, acting_user)
    current = Membership.objects.select_related("user").filter(pk=membership.pk).first()
    if current is None:
        raise ServiceError("this user is no longer a member")
    _check_owner_rules(current, None, actor_role)
    record(
        workspace,
        "member.removed",
        current,
        actor=acting_user,
        source=source,
        data={"username": current.user.get_username(), "role": current.role},
    )
    current.delete()


def membership_for(user: AbstractBaseUser, workspace: Workspace) -> Membership | None:
    if not user.is_authenticated:
        return None
    return Membership.objects.filter(workspace=workspace, user=user).first()
