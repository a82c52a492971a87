"""Tickets: propose a joint job, read its timeline, approve, reject or withdraw it."""

from __future__ import annotations

import uuid

from django.contrib import messages
from django.shortcuts import redirect
from django.views.decorators.http import require_POST

from apps.core.errors import ServiceError
from apps.dashboard.access import workspace_page
from apps.dashboard.forms import DecisionForm, TicketForm, source_from_post
from apps.dashboard.views.common import act, get_in_workspace, page
from apps.datasets.models import Dataset, RemoteDataset
from apps.partners.choices import PartnerStatus
from apps.partners.models import Partner
from apps.peer.reachability import undelivered
from apps.tickets.choices import STREAM_KINDS, JobKind, TicketStatus
from apps.tickets.models import Ticket
from apps.tickets.services import approve_ticket, propose_ticket, reject_ticket, withdraw_ticket
from apps.tickets.sources import describe
from apps.workspaces.choices import Role

DECIDABLE = (TicketStatus.PENDING,)
WITHDRAWABLE = (TicketStatus.DRAFT, TicketStatus.PROPOSED, TicketStatus.PENDING, TicketStatus.APPROVED)


@workspace_page
def ticket_list(request):
    tickets = Ticket.objects.filter(workspace=request.workspace).select_related("partner")
    status = request.GET.get("status", "")
    if status in TicketStatus.values:
        tickets = tickets.filter(status=status)
    direction = request.GET.get("direction", "")
    if direction in ("sent", "received"):
        tickets = tickets.filter(is_proposer=direction == "sent")
    return page(
        request,
        "dashboard/tickets/list.html",
        "tickets",
        tickets=tickets[:200],
        statuses=TicketStatus.choices,
        status=status,
        direction=direction,
    )


@workspace_page(role=Role.MEMBER)
def propose(request):
    ws = request.workspace
    partners = Partner.objects.filter(workspace=ws, status=PartnerStatus.CONNECTED)
    local = Dataset.objects.filter(workspace=ws)
    remote = RemoteDataset.objects.filter(workspace=ws, revoked=False, partner__in=partners).select_related("partner")
    form = TicketForm(request.POST or None, partners=partners, local_datasets=local, remote_datasets=remote)
    status = 200
    if request.method == "POST":
        if form.is_valid():
            d = form.cleaned_data
            partner = partners.get(pk=d["partner"])
            try:
                ticket = propose_ticket(
                    ws,
                    partner=partner,
                    kind=d["kind"],
                    local_dataset=local.get(pk=d["local_dataset"]),
                    remote_dataset=remote.get(pk=d["remote_dataset"]),
                    name=d["name"],
                    params=form.params(),
                    comment=d["comment"],
                    stream_source=form.stream_source(),
                    acting_user=request.user,
                    source="ui",
                )
            except ServiceError as exc:
                field = TicketForm.field_for(exc.field)
                form.add_error(field if field in form.fields else None, exc.message)
            else:
                messages.success(request, f"Proposed to {partner.name}. It is waiting for their decision.")
                return redirect("dashboard:ticket", slug=ws.slug, pk=ticket.pk)
        status = 400
    response = page(
        request,
        "dashboard/tickets/new.html",
        "tickets",
        form=form,
        has_partners=partners.exists(),
        has_local=local.exists(),
        has_remote=remote.exists(),
        training_kinds=[JobKind.PSI_VERTICAL_NN.value, JobKind.VERTICAL_NN.value, JobKind.STREAM_JOIN_TRAIN.value],
        stream_kinds=[k.value for k in STREAM_KINDS],
        tree_kinds=[JobKind.PSI_VERTICAL_TREE.value, JobKind.VERTICAL_TREE.value],
    )
    response.status_code = status
    return response


@workspace_page
def ticket_detail(request, pk):
    ticket = get_in_workspace(request, Ticket, pk)
    can_decide = not ticket.is_proposer and ticket.status in DECIDABLE and request.can.approve
    bindable = (
        Dataset.objects.filter(workspace=request.workspace, grants__partner=ticket.partner).distinct()
        if can_decide
        else Dataset.objects.none()
    )
    return page(
        request,
        "dashboard/tickets/detail.html",
        "tickets",
        ticket=ticket,
        undelivered=undelivered(ticket.workspace_id, ticket.pk),
        events=ticket.events.all(),
        jobs=ticket.jobs.order_by("-attempt"),
        models=ticket.model_versions.all(),
        can_decide=can_decide,
        can_withdraw=ticket.is_proposer and ticket.status in WITHDRAWABLE and request.can.write,
        needs_dataset=can_decide and ticket.local_dataset_id is None,
        is_stream=ticket.kind in STREAM_KINDS,
        stream_source_label=describe(ticket.stream_source),
        bindable=bindable,
        decision_form=DecisionForm(),
    )


def _back(request) -> str:
    return request.path.rsplit("/", 1)[0] + "/"


@require_POST
@workspace_page(role=Role.APPROVER)
def approve(request, pk):
    ticket = get_in_workspace(request, Ticket, pk)
    form = DecisionForm(request.POST)
    form.is_valid()
    dataset = _dataset(request, request.POST.get("dataset", ""))
    source = source_from_post(request.POST) if ticket.kind in STREAM_KINDS else None
    return act(
        request,
        lambda: approve_ticket(
            ticket,
            comment=form.cleaned_data.get("comment", ""),
            dataset=dataset,
            stream_source=source,
            acting_user=request.user,
            source="ui",
        ),
        success="Approved. Both sides are starting the job.",
        then=_back(request),
    )


def _dataset(request, value: str) -> Dataset | None:
    """The dataset the approver binds (approve_ticket checks it is granted to the partner)."""
    try:
        return Dataset.objects.filter(workspace=request.workspace, pk=uuid.UUID(value)).first() if value else None
    except ValueError:
        return None


@require_POST
@workspace_page(role=Role.APPROVER)
def reject(request, pk):
    ticket = get_in_workspace(request, Ticket, pk)
    form = DecisionForm(request.POST)
    form.is_valid()
    return act(
        request,
        lambda: reject_ticket(
            ticket, reason=form.cleaned_data.get("comment", ""), acting_user=request.user, source="ui"
        ),
        success="Rejected. The partner sees your reason.",
        then=_back(request),
    )


@require_POST
@workspace_page(role=Role.MEMBER)
def withdraw(request, pk):
    ticket = get_in_workspace(request, Ticket, pk)
    form = DecisionForm(request.POST)
    form.is_valid()
    return act(
        request,
        lambda: withdraw_ticket(
            ticket, reason=form.cleaned_data.get("comment", ""), acting_user=request.user, source="ui"
        ),
        success="Withdrawn.",
        then=_back(request),
    )
