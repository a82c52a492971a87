"""Which workspace a page belongs to, and what the signed-in user may do there.

Every dashboard page goes through `workspace_page`: the workspace comes from the
URL and must be one the user belongs to (else 404, as in the API); the page's
minimum role is checked (else a 403 page). Service functions enforce their own
rules as well; this only keeps the UI from offering what would be refused.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render

from apps.workspaces.choices import Role, role_at_least
from apps.workspaces.models import Membership, Workspace


@dataclass(frozen=True)
class Abilities:
    """What the current member may do, for templates (`can.admin`, `can.approve`, …)."""

    role: str

    @property
    def write(self) -> bool:
        """Register datasets, propose tickets, cancel and retry jobs."""
        return role_at_least(self.role, Role.MEMBER)

    @property
    def approve(self) -> bool:
        """Decide tickets, promote and archive model versions."""
        return role_at_least(self.role, Role.APPROVER)

    @property
    def admin(self) -> bool:
        """Manage partners, invitations, policies and dataset grants."""
        return role_at_least(self.role, Role.ADMIN)


def forbidden(request: HttpRequest, needed: str) -> HttpResponse:
    role = request.membership.role if hasattr(request, "membership") else "none"
    return render(
        request,
        "403.html",
        {"needed": Role(needed).label, "role": Role(role).label if role in Role.values else role},
        status=403,
    )


def workspace_page(view: Callable | None = None, *, role: str = Role.VIEWER, post_role: str | None = None):
    """Resolve `slug` to the user's workspace and check the role this page needs.

    `role` is needed for any request; `post_role` (if given) for POST.
    """

    def decorate(fn: Callable) -> Callable:
        @login_required
        @functools.wraps(fn)
        def wrapper(request: HttpRequest, slug: str, *args, **kwargs) -> HttpResponse:
            user = request.user
            assert isinstance(user, User)  # login_required: never the anonymous user here
            membership = Membership.objects.select_related("workspace").filter(workspace__slug=slug, user=user).first()
            if membership is None:
                raise Http404("No such workspace.")
            request.workspace = membership.workspace  # type: ignore[attr-defined]
            request.membership = membership  # type: ignore[attr-defined]
            request.can = Abilities(membership.role)  # type: ignore[attr-defined]
            needed = post_role if (request.method == "POST" and post_role) else role
            if not role_at_least(membership.role, needed):
                return forbidden(request, needed)
            request.session["workspace"] = slug
            return fn(request, *args, **kwargs)

        return wrapper

    return decorate(view) if view is not None else decorate


def user_workspaces(user) -> list[tuple[Workspace, str]]:
    """(workspace, role) for every workspace the user belongs to."""
    if not user.is_authenticated:
        return []
    return [
        (m.workspace, m.role)
        for m in Membership.objects.select_related("workspace").filter(user=user).order_by("workspace__name")
    ]
