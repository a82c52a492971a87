"""Members: who belongs to the workspace with which role; owners and admins add, change and remove them."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.shortcuts import redirect
from django.urls import reverse
from django.views.decorators.http import require_POST

from apps.core.errors import ServiceError
from apps.dashboard.access import workspace_page
from apps.dashboard.views.common import act, form_error, get_in_workspace, page
from apps.workspaces.choices import RANK, Role
from apps.workspaces.models import Membership
from apps.workspaces.services import add_member, change_role, remove_member


class MemberForm(forms.Form):
    """Add an existing user. The role is free text here: the service names an unknown one."""

    username = forms.CharField(max_length=150, help_text="The user must already have an account on this installation.")
    role = forms.CharField(max_length=16, widget=forms.Select, initial=Role.MEMBER)

    def __init__(self, *args, roles=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["role"].widget.choices = list(roles)


def grantable_roles(role: str) -> list[tuple[str, str]]:
    """The roles this member may give: everything for an owner, all but owner for an admin."""
    if role == Role.OWNER:
        return list(Role.choices)
    return [(value, label) for value, label in Role.choices if value != Role.OWNER]


def _list(request, *, form=None, status=200):
    memberships = sorted(
        Membership.objects.filter(workspace=request.workspace).select_related("user"),
        key=lambda m: (-RANK[Role(m.role)], m.user.get_username()),
    )
    owners = sum(1 for m in memberships if m.role == Role.OWNER)
    mine = request.membership
    roles = grantable_roles(mine.role)
    rows = [
        {
            "m": m,
            "is_me": m.pk == mine.pk,
            # What the UI offers; the service enforces the same rules whatever is posted.
            "manageable": request.can.admin
            and (mine.role == Role.OWNER or m.role != Role.OWNER)
            and not (m.role == Role.OWNER and owners == 1),
            "last_owner": m.role == Role.OWNER and owners == 1,
        }
        for m in memberships
    ]
    response = page(
        request,
        "dashboard/members/list.html",
        "members",
        rows=rows,
        roles=roles,
        form=form or MemberForm(roles=roles),
        no_watch=request.method == "POST",
    )
    response.status_code = status
    return response


@workspace_page
def member_list(request):
    return _list(request)


@require_POST
@workspace_page(role=Role.ADMIN)
def add(request):
    form = MemberForm(request.POST, roles=grantable_roles(request.membership.role))
    if form.is_valid():
        try:
            m = add_member(
                request.workspace,
                username=form.cleaned_data["username"],
                role=form.cleaned_data["role"],
                acting_user=request.user,
                source="ui",
            )
        except ServiceError as exc:
            form_error(form, exc)
        else:
            messages.success(request, f"{m.user.get_username()} is now {m.get_role_display().lower()} here.")
            return redirect("dashboard:members", slug=request.workspace.slug)
    return _list(request, form=form, status=400)


@require_POST
@workspace_page(role=Role.ADMIN)
def role(request, pk):
    membership = get_in_workspace(request, Membership, pk)
    new_role = request.POST.get("role", "")
    label = Role(new_role).label.lower() if new_role in Role.values else new_role
    return act(
        request,
        lambda: change_role(membership, new_role, acting_user=request.user, source="ui"),
        success=f"{membership.user.get_username()}'s role is now {label}.",
        then=reverse("dashboard:members", args=[request.workspace.slug]),
    )


@require_POST
@workspace_page(role=Role.ADMIN)
def remove(request, pk):
    membership = get_in_workspace(request, Membership, pk)
    username = membership.user.get_username()
    leaving = membership.pk == request.membership.pk
    try:
        remove_member(membership, acting_user=request.user, source="ui")
    except ServiceError as exc:
        messages.error(request, exc.message)
    else:
        if leaving:
            # This page would now be a 404 for them.
            messages.success(request, f"You left {request.workspace.name}.")
            return redirect("dashboard:home")
        messages.success(request, f"Removed {username} from the workspace.")
    return redirect("dashboard:members", slug=request.workspace.slug)
