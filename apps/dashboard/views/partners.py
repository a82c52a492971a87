"""Partners: invitations (create, list, revoke, accept), status, health, approval policies."""

from __future__ import annotations

import uuid

from django.contrib import messages
from django.shortcuts import redirect
from django.urls import reverse
from django.views.decorators.http import require_POST

from apps.core.errors import ServiceError
from apps.dashboard import peering
from apps.dashboard.access import workspace_page
from apps.dashboard.forms import AcceptForm, PolicyForm
from apps.dashboard.presenters import partner_health, with_health
from apps.dashboard.views.common import act, form_error, get_in_workspace, page
from apps.datasets.models import DatasetGrant, RemoteDataset
from apps.partners.choices import PartnerStatus
from apps.partners.models import Partner
from apps.partners.services import set_partner_status, set_policies
from apps.peer.models import Invitation
from apps.peer.reachability import delivery_state
from apps.workspaces.choices import Role


def _list(request, *, accept_form=None, invitation=None, status=200):
    partners = Partner.objects.filter(workspace=request.workspace)
    response = page(
        request,
        "dashboard/partners/list.html",
        "partners",
        partners=with_health(partners),
        pending_invitations=Invitation.objects.filter(workspace=request.workspace)
        .pending()
        .select_related("created_by"),
        peering_available=peering.available(),
        accept_form=accept_form or AcceptForm(),
        invitation=invitation,
        # A page answering a POST (the one-time code, a form's errors) must not refresh itself.
        no_watch=request.method == "POST",
    )
    response.status_code = status
    return response


@workspace_page
def partner_list(request):
    return _list(request)


@require_POST
@workspace_page(role=Role.ADMIN)
def invite(request):
    """Create an invitation code."""
    if not peering.available():
        messages.error(request, "Invitations need the peer service, which is not installed on this installation yet.")
        return redirect("dashboard:partners", slug=request.workspace.slug)
    try:
        invitation, code = peering.create_invitation(request.workspace, acting_user=request.user)
    except ServiceError as exc:
        messages.error(request, exc.message)
        return redirect("dashboard:partners", slug=request.workspace.slug)
    messages.success(request, "Invitation created. Send the code to your partner's admin; it works once.")
    return _list(request, invitation={"code": code, "expires_at": invitation.expires_at})


@require_POST
@workspace_page(role=Role.ADMIN)
def revoke_invitation(request):
    """Revoke a pending invitation (`invitation=<id>`): its code can no longer be accepted."""
    try:
        pk = uuid.UUID(request.POST.get("invitation", ""))
    except ValueError:
        pk = None
    invitation = Invitation.objects.filter(workspace=request.workspace, pk=pk).first() if pk else None
    if invitation is None:
        messages.error(request, "No such invitation in this workspace.")
        return redirect("dashboard:partners", slug=request.workspace.slug)
    return act(
        request,
        lambda: peering.revoke_invitation(invitation, acting_user=request.user),
        success="Invitation revoked. Its code can no longer be accepted.",
        then=reverse("dashboard:partners", kwargs={"slug": request.workspace.slug}),
    )


@require_POST
@workspace_page(role=Role.ADMIN)
def accept(request):
    form = AcceptForm(request.POST)
    if not peering.available():
        messages.error(request, "Accepting invitations needs the peer service, which is not installed here yet.")
        return redirect("dashboard:partners", slug=request.workspace.slug)
    if form.is_valid():
        try:
            partner = peering.accept_invitation(
                request.workspace,
                code=form.cleaned_data["code"].strip(),
                name=form.cleaned_data["name"],
                acting_user=request.user,
            )
        except ServiceError as exc:
            form_error(form, exc, {"invitation": "code", "secret": "code"})
        else:
            messages.success(request, f"Connected to {partner}.")
            if isinstance(partner, Partner):
                return redirect("dashboard:partner", slug=request.workspace.slug, pk=partner.pk)
            return redirect("dashboard:partners", slug=request.workspace.slug)
    return _list(request, accept_form=form, status=400)


@workspace_page
def partner_detail(request, pk):
    partner = get_in_workspace(request, Partner, pk)
    delivery = delivery_state(partner)
    return page(
        request,
        "dashboard/partners/detail.html",
        "partners",
        partner=partner,
        health=partner_health(partner, delivery),
        delivery=delivery,
        policy_form=PolicyForm(partner=partner),
        grants=DatasetGrant.objects.filter(partner=partner).select_related("dataset"),
        shared_with_us=RemoteDataset.objects.filter(partner=partner, revoked=False),
    )


@require_POST
@workspace_page(role=Role.ADMIN)
def policies(request, pk):
    partner = get_in_workspace(request, Partner, pk)
    form = PolicyForm(request.POST, partner=partner)
    if not form.is_valid():
        messages.error(request, "Choose a policy for every job kind.")
        return redirect("dashboard:partner", slug=request.workspace.slug, pk=pk)
    return act(
        request,
        lambda: set_policies(partner, dict(form.cleaned_data), acting_user=request.user, source="ui"),
        success="Approval policies saved.",
        then=request.path.rsplit("/", 1)[0] + "/",
    )


@require_POST
@workspace_page(role=Role.ADMIN)
def status(request, pk):
    partner = get_in_workspace(request, Partner, pk)
    target = request.POST.get("status", "")
    if target not in (PartnerStatus.SUSPENDED, PartnerStatus.CONNECTED):
        messages.error(request, "Unknown status.")
        return redirect("dashboard:partner", slug=request.workspace.slug, pk=pk)
    verb = "suspended" if target == PartnerStatus.SUSPENDED else "resumed"
    return act(
        request,
        lambda: set_partner_status(partner, target, acting_user=request.user, source="ui"),
        success=f"Partnership with {partner.name} {verb}.",
        then=request.path.rsplit("/", 1)[0] + "/",
    )
