"""Home (pick a workspace), the workspace switcher, and a workspace's overview."""

from __future__ import annotations

import hashlib

from django.contrib.auth.decorators import login_required
from django.db.models import Count, Max
from django.http import JsonResponse
from django.shortcuts import redirect, render

from apps.dashboard.access import user_workspaces, workspace_page
from apps.dashboard.presenters import with_health
from apps.dashboard.views.common import page
from apps.datasets.models import Dataset, DatasetGrant, RemoteDataset
from apps.jobs.choices import ACTIVE
from apps.jobs.models import Job
from apps.partners.models import Partner
from apps.peer.models import Invitation
from apps.registry.models import ModelVersion
from apps.tickets.choices import TicketStatus
from apps.tickets.models import Ticket, TicketEvent
from apps.workspaces.models import Membership


@login_required
def home(request):
    """Go to the last workspace used (or the only one); otherwise list them."""
    mine = user_workspaces(request.user)
    slugs = [ws.slug for ws, _ in mine]
    last = request.session.get("workspace")
    if last in slugs:
        return redirect("dashboard:overview", slug=last)
    if len(mine) == 1:
        return redirect("dashboard:overview", slug=slugs[0])
    return render(request, "dashboard/home.html", {"memberships": mine})


@login_required
def switch(request):
    slug = request.GET.get("workspace", "")
    if slug in {ws.slug for ws, _ in user_workspaces(request.user)}:
        return redirect("dashboard:overview", slug=slug)
    return redirect("dashboard:home")


@workspace_page
def overview(request):
    ws = request.workspace
    partners = Partner.objects.filter(workspace=ws)
    waiting = Ticket.objects.filter(workspace=ws, status=TicketStatus.PENDING, is_proposer=False).select_related(
        "partner"
    )
    running = Job.objects.filter(workspace=ws, status__in=ACTIVE).select_related("ticket", "ticket__partner")
    models = ModelVersion.objects.filter(workspace=ws).select_related("ticket")[:5]
    return page(
        request,
        "dashboard/overview.html",
        "overview",
        partners=with_health(partners),
        waiting=waiting,
        running=running,
        models=models,
        counts={
            "partners": partners.count(),
            "datasets": ws.datasets.count(),
            "open_tickets": Ticket.objects.filter(
                workspace=ws, status__in=[TicketStatus.PROPOSED, TicketStatus.PENDING]
            ).count(),
            "running": running.count(),
        },
    )


@workspace_page
def stamp(request):
    """A fingerprint of what the workspace's pages show, and the progress of active jobs.

    Pages poll it: when the stamp changes (a partner decided, a job finished, a
    dataset was shared) they refresh; progress bars move without a refresh.
    Heartbeats and progress reports do not change the stamp.
    """
    ws = request.workspace
    parts = [
        Ticket.objects.filter(workspace=ws).aggregate(n=Count("id"), t=Max("updated_at")),
        TicketEvent.objects.filter(ticket__workspace=ws).aggregate(n=Count("id")),
        list(Job.objects.filter(workspace=ws).values_list("id", "status", "remote_status").order_by("id")),
        list(Partner.objects.filter(workspace=ws).values_list("id", "status", "policies").order_by("id")),
        RemoteDataset.objects.filter(workspace=ws).aggregate(n=Count("id"), t=Max("updated_at")),
        ModelVersion.objects.filter(workspace=ws).aggregate(n=Count("id"), t=Max("updated_at")),
        Dataset.objects.filter(workspace=ws).aggregate(n=Count("id")),
        DatasetGrant.objects.filter(dataset__workspace=ws).aggregate(n=Count("id")),
        list(Invitation.objects.filter(workspace=ws).values_list("id", "used_at", "revoked_at").order_by("id")),
        list(Membership.objects.filter(workspace=ws).values_list("id", "role").order_by("id")),
    ]
    digest = hashlib.sha256(repr(parts).encode()).hexdigest()[:16]
    progress = {
        str(pk): {"progress": p, "remote_progress": rp}
        for pk, p, rp in Job.objects.filter(workspace=ws, status__in=ACTIVE).values_list(
            "id", "progress", "remote_progress"
        )
    }
    return JsonResponse({"stamp": digest, "jobs": progress})
