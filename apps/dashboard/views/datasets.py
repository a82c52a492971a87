"""Datasets: register a file (errors shown in the form), schema and statistics, grants."""

from __future__ import annotations

from django.contrib import messages
from django.shortcuts import redirect
from django.views.decorators.http import require_POST

from apps.core.errors import ServiceError
from apps.dashboard.access import workspace_page
from apps.dashboard.forms import DatasetForm, GrantForm
from apps.dashboard.views.common import act, form_error, get_in_workspace, page
from apps.datasets.folders import workspace_files, workspace_folders
from apps.datasets.models import Dataset, DatasetGrant
from apps.datasets.services import grant_dataset, register_dataset, revoke_grant
from apps.partners.models import Partner
from apps.workspaces.choices import Role


@workspace_page
def dataset_list(request):
    datasets = Dataset.objects.filter(workspace=request.workspace).prefetch_related("grants__partner")
    return page(request, "dashboard/datasets/list.html", "datasets", datasets=datasets)


@workspace_page(role=Role.MEMBER)
def register(request):
    form = DatasetForm(request.POST or None)
    status = 200
    if request.method == "POST":
        if form.is_valid():
            try:
                dataset = register_dataset(
                    request.workspace, acting_user=request.user, source="ui", **form.cleaned_data
                )
            except ServiceError as exc:
                form_error(form, exc)
            else:
                messages.success(request, f"Registered {dataset.name}: {dataset.row_count:,} rows.")
                return redirect("dashboard:dataset", slug=request.workspace.slug, pk=dataset.pk)
        status = 400
    response = page(
        request,
        "dashboard/datasets/new.html",
        "datasets",
        form=form,
        data_folders=workspace_folders(request.workspace),
        suggestions=workspace_files(request.workspace),
    )
    response.status_code = status
    return response


@workspace_page
def dataset_detail(request, pk):
    dataset = get_in_workspace(request, Dataset, pk)
    grants = DatasetGrant.objects.filter(dataset=dataset).select_related("partner")
    grantable = Partner.objects.filter(workspace=request.workspace).exclude(grants__dataset=dataset)
    columns = []
    for col in dataset.schema:
        stats = dataset.stats.get(col["name"]) or {}
        # "distinct" is absent when a column has too many values to count: show that, not a blank.
        columns.append({**stats, **col, "distinct": stats.get("distinct")})
    return page(
        request,
        "dashboard/datasets/detail.html",
        "datasets",
        dataset=dataset,
        columns=columns,
        grants=grants,
        grant_form=GrantForm(partners=grantable),
        grantable=grantable,
    )


@require_POST
@workspace_page(role=Role.ADMIN)
def grant(request, pk):
    dataset = get_in_workspace(request, Dataset, pk)
    form = GrantForm(request.POST, partners=Partner.objects.filter(workspace=request.workspace))
    back = request.path.rsplit("/", 1)[0] + "/"
    if not form.is_valid():
        messages.error(request, "Choose a partner.")
        return redirect(back)
    partner = get_in_workspace(request, Partner, form.cleaned_data["partner"])
    return act(
        request,
        lambda: grant_dataset(dataset, partner, acting_user=request.user, source="ui"),
        success=f"{partner.name} may now use {dataset.name} in proposals.",
        then=back,
    )


@require_POST
@workspace_page(role=Role.ADMIN)
def revoke(request, pk):
    dataset = get_in_workspace(request, Dataset, pk)
    back = request.path.rsplit("/", 1)[0] + "/"
    form = GrantForm(request.POST)
    grant = (
        DatasetGrant.objects.filter(dataset=dataset, partner_id=form.cleaned_data["partner"]).first()
        if form.is_valid()
        else None
    )
    if grant is None:
        messages.error(request, "That partner has no grant on this dataset.")
        return redirect(back)
    name = grant.partner.name
    return act(
        request,
        lambda: revoke_grant(grant, acting_user=request.user, source="ui"),
        success=f"{name} may no longer use {dataset.name}.",
        then=back,
    )
