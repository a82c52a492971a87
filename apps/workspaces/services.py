"""Workspaces and their members: the only code that creates or changes them."""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.db import IntegrityError, transaction

from apps.audit.services import record
from apps.core.errors import Forbidden, ServiceError
from apps.core.throttle import minutes, name_throttle
from apps.datasets.folders import ensure_workspace_folders
from apps.workspaces.choices import Role, role_at_least
from apps.workspaces.models import Membership, Workspace, slug_validator


class TooManyRefusals(ServiceError):
    """Too many names refused to one user in the window: asking about names is throttled."""

    status_code = 429
    code = "throttled"


def _ask_about_names(user: User | None, refused: Callable[[], str | None], *, field: str) -> None:
    """Run a name check for `user`; count it if refused (message returned), refuse past the limit.

    The operator (command line: None, or staff) is not counted: it may see every workspace anyway.
    """
    counted = user is not None and not getattr(user, "is_staff", False)
    throttle = name_throttle()
    ident = ("user", str(getattr(user, "pk", "")))
    if counted and (wait := throttle.retry_after(ident)):
        raise TooManyRefusals(f"too many refused names; try again in {minutes(wait)}")
    message = refused()
    if message is not None:
        if counted:
            throttle.fail(ident)
        raise ServiceError(message, field=field)


def _slug_taken(existing: Workspace, owner: User, source: str) -> str:
    """Say that a slug is taken without telling someone who may not see that workspace that it exists.

    The operator (command line, staff) and the workspace's own members are told plainly; anyone else
    hears the same "not available" as for any name they may not have (one bit a slug namespace cannot
    avoid, and the API throttles how often it is asked).
    """
    if source == "cli" or getattr(owner, "is_staff", False):
        return f"a workspace with slug {existing.slug!r} already exists"
    if Membership.objects.filter(workspace=existing, user=owner).exists():
        return f"a workspace with slug {existing.slug!r} already exists (you are a member)"
    return f"slug {existing.slug!r} is not available: choose another"


@transaction.atomic
def create_workspace(*, slug: str, name: str, owner: User, source: str = "system") -> Workspace:
    from django.core.exceptions import ValidationError

    if source != "cli" and not getattr(owner, "is_staff", False) and not settings.FEDSITE_SELF_SERVICE_WORKSPACES:
        # Decided before the slug is looked at: the answer says nothing of which slugs exist.
        raise Forbidden("workspaces are created by the installation's operator here (manage.py create_workspace)")
    try:
        slug_validator(slug)
    except ValidationError:
        raise ServiceError("slug must be 3–50 lowercase letters, digits or dashes", field="slug") from None

    def refused() -> str | None:
        existing = Workspace.objects.filter(slug=slug).first()
        return None if existing is None else _slug_taken(existing, owner, source)

    _ask_about_names(None if source == "cli" else owner, refused, field="slug")
    try:
        with transaction.atomic():  # a savepoint: the race below leaves the outer transaction usable
            workspace = Workspace.objects.create(slug=slug, name=name)
    except IntegrityError:
        # Someone created this slug between our check and our insert: the same answer as the check's.
        existing = Workspace.objects.filter(slug=slug).first()
        if existing is None:
            raise
        raise ServiceError(_slug_taken(existing, owner, source), field="slug") from None
    Membership.objects.create(workspace=workspace, user=owner, role=Role.OWNER)
    record(workspace, "workspace.created", workspace, actor=owner, source=source, data={"slug": slug})
    transaction.on_commit(lambda: ensure_workspace_folders(workspace))
    return workspace


def _lock_members(workspace: Workspace) -> None:
    """Serialize member changes of one workspace, so two owners cannot demote each other at once."""
    Workspace.objects.select_for_update().filter(pk=workspace.pk).first()


def _check_manager(workspace: Workspace, acting_user: User | None) -> str | None:
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


def _addable_user(username: str, acting_user: User | None) -> User | None:
    """The account an owner or admin may add by name, else None — the same for "no such account".

    Accounts are installation-wide, but another tenant's people are that tenant's business: an
    account that belongs only to workspaces the actor is not in is answered as unknown, so adding
    members never tells whether a name is someone's elsewhere. The operator (command line, staff)
    may add anyone.
    """
    user = get_user_model().objects.filter(username=username).first()
    if user is None or acting_user is None or getattr(acting_user, "is_staff", False):
        return user
    theirs = Membership.objects.filter(user=user).values_list("workspace_id", flat=True)
    if not theirs.exists() or Membership.objects.filter(user=acting_user, workspace_id__in=theirs).exists():
        return user
    return None


@transaction.atomic
def add_member(
    workspace: Workspace, *, username: str, role: str, acting_user: User | None, source: str = "api"
) -> Membership:
    """Give a user a role here; for an existing member this sets the role (as `change_role` would).

    `acting_user` None is the command line, which the operator runs: no role check.
    """
    _check_role(role)
    _lock_members(workspace)
    actor_role = _check_manager(workspace, acting_user)
    found: list[User] = []

    def refused() -> str | None:
        user = _addable_user(username, acting_user)
        if user is None:
            return (
                f"no user named {username!r} that you can add: someone with no workspace yet, or in one of "
                "yours (the installation's operator adds anyone else: manage.py add_member)"
            )
        found.append(user)
        return None

    _ask_about_names(acting_user, refused, field="username")
    user = found[0]
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
def change_role(membership: Membership, role: str, *, acting_user: User | None, source: str = "api") -> Membership:
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
def remove_member(membership: Membership, *, acting_user: User | None, source: str = "api") -> None:
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


def membership_for(user: User, workspace: Workspace) -> Membership | None:
    if not user.is_authenticated:
        return None
    return Membership.objects.filter(workspace=workspace, user=user).first()
