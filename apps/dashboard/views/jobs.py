"""Jobs: live progress of both sides, log tail, loss and AUC curves, cancel and retry."""

from __future__ import annotations

from django.contrib import messages
from django.http import FileResponse, Http404, JsonResponse
from django.shortcuts import redirect
from django.views.decorators.http import require_POST

from apps.core.errors import NotFound, ServiceError
from apps.dashboard.access import workspace_page
from apps.dashboard.views.common import act, get_in_workspace, page
from apps.jobs import services as job_services
from apps.jobs.choices import ACTIVE, JobStatus
from apps.jobs.models import Job, JobMetric
from apps.jobs.outputs import CONTENT_TYPE, OutputsUnreadable, get_output, job_outputs, open_output, register_output
from apps.registry.serving import serving_summary
from apps.workspaces.choices import Role

RETRYABLE = (JobStatus.FAILED, JobStatus.CANCELLED)
STREAM_ROWS = [
    ("events_read", "Events read"),
    ("matched", "Matched"),
    ("match_rate", "Match rate"),
    ("late_events", "Late events"),
    ("blocks_committed", "Blocks committed"),
    ("lag_s", "Lag (s)"),
]
MAX_POINTS = 5000


def retry_available() -> bool:
    """Retry is a jobs service (issue 4); offered once it exists."""
    return callable(getattr(job_services, "retry_job", None))


@workspace_page
def job_list(request):
    jobs = Job.objects.filter(workspace=request.workspace).select_related("ticket", "ticket__partner")
    status = request.GET.get("status", "")
    if status in JobStatus.values:
        jobs = jobs.filter(status=status)
    return page(request, "dashboard/jobs/list.html", "jobs", jobs=jobs[:200], statuses=JobStatus.choices, status=status)


def job_state(job: Job) -> dict:
    return {
        "id": str(job.id),
        "status": job.status,
        "status_label": job.get_status_display(),
        "active": job.status in ACTIVE,
        "stage": job.stage,
        "progress": job.progress,
        "remote_status": job.remote_status,
        "remote_progress": job.remote_progress,
        "error": job.error,
        "remote_error": job.remote_error,
        "log_tail": job.log_tail,
        "started_at": job.started_at.isoformat() if job.started_at else None,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
        "model_versions": [{"id": str(mv.id), "name": mv.name} for mv in job.model_versions.all()],
        # Stream jobs: both sides' join counters, "waiting for data", the versions published.
        "stream": job_services.stream_status(job),
        # Partitioned PSI: each partition's state, progress and figures (None for other jobs).
        "partitions": job_services.partition_status(job),
    }


def metric_points(job: Job, after: int = 0) -> list[dict]:
    qs = JobMetric.objects.filter(job=job, id__gt=after).order_by("id")[:MAX_POINTS]
    return [
        {
            "id": m.id,
            "side": m.side,
            "name": m.name,
            "split": m.split,
            "step": m.step,
            "epoch": m.epoch,
            "value": m.value,
        }
        for m in qs
    ]


@workspace_page
def job_detail(request, pk):
    job = get_in_workspace(request, Job, pk)
    try:
        outputs, outputs_unreadable = job_outputs(job), ""
    except OutputsUnreadable as exc:
        outputs, outputs_unreadable = [], exc.why
    return page(
        request,
        "dashboard/jobs/detail.html",
        "jobs",
        job=job,
        ticket=job.ticket,
        state=job_state(job),
        stream_rows=STREAM_ROWS,
        serving=serving_summary(job),
        outputs=outputs,
        outputs_unreadable=outputs_unreadable if job.status == JobStatus.SUCCEEDED else "",
        scores_dataset=(job.result or {}).get("scores_dataset"),
        can_register=request.can.write,
        can_cancel=job.status in ACTIVE and request.can.write,
        can_retry=job.status in RETRYABLE
        and request.can.approve
        and retry_available()
        and not job.ticket.jobs.filter(attempt__gt=job.attempt).exists(),
    )


@workspace_page
def job_live(request, pk):
    """The job's state and its metric points after `after` (the page polls this while the job runs)."""
    job = get_in_workspace(request, Job, pk)
    try:
        after = max(0, int(request.GET.get("after", "0")))
    except ValueError:
        after = 0
    from apps.registry.serving import serving_summary

    serving = serving_summary(job)
    body = {"job": job_state(job), "metrics": metric_points(job, after)}
    return JsonResponse(
        {**body, "serving": {"local": serving["local"], "remote": serving["remote"]}} if serving else body
    )


@require_POST
@workspace_page(role=Role.MEMBER)
def cancel(request, pk):
    job = get_in_workspace(request, Job, pk)
    reason = request.POST.get("reason", "").strip()[:500]
    return act(
        request,
        lambda: job_services.cancel_job(job, acting_user=request.user, source="ui", reason=reason),
        success="Cancelled. The partner's side stops too.",
        then=request.path.rsplit("/", 1)[0] + "/",
    )


@require_POST
@workspace_page(role=Role.APPROVER)  # a new run on both sides' data: a decision, as in the API
def retry(request, pk):
    job = get_in_workspace(request, Job, pk)
    back = request.path.rsplit("/", 1)[0] + "/"
    if not retry_available():
        messages.error(request, "Retrying jobs is not available on this installation yet.")
        return redirect(back)
    try:
        new = job_services.retry_job(job, acting_user=request.user, source="ui")
    except ServiceError as exc:
        messages.error(request, exc.message)
        return redirect(back)
    messages.success(request, "Retrying: a new attempt starts on both sides.")
    if isinstance(new, Job):
        return redirect("dashboard:job", slug=request.workspace.slug, pk=new.pk)
    return redirect(back)


@workspace_page
def output_download(request, pk, name):
    """This side's output `name` of the job, as a file (404 for a name the job has not written here)."""
    job = get_in_workspace(request, Job, pk)
    try:
        out = get_output(job, name)
        opened = open_output(out)
    except NotFound as exc:
        raise Http404(exc.message) from None
    return FileResponse(opened, as_attachment=True, filename=f"{job.id}-{out.name}.csv", content_type=CONTENT_TYPE)


@require_POST
@workspace_page(role=Role.MEMBER)
def output_register(request, pk, name):
    """Register this side's output `name` as a dataset named in the form."""
    job = get_in_workspace(request, Job, pk)
    back = request.path.split("/outputs/", 1)[0] + "/"
    dataset_name = request.POST.get("name", "").strip()[:200]
    return act(
        request,
        lambda: register_output(job, name, dataset_name=dataset_name, acting_user=request.user, source="ui"),
        success=f"Registered as dataset {dataset_name}.",
        then=back,
    )
