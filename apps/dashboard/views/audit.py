"""The workspace's audit log, filtered by action, source, actor, object and date."""

from __future__ import annotations

import datetime as dt

from django.core.paginator import Paginator
from django.utils import timezone

from apps.audit.models import AuditEvent, Source
from apps.dashboard.access import workspace_page
from apps.dashboard.views.common import page

PAGE_SIZE = 50


def _date(value: str) -> dt.date | None:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        return None


@workspace_page
def audit_log(request):
    events = AuditEvent.objects.filter(workspace=request.workspace)
    q = request.GET
    filters = {k: q.get(k, "").strip() for k in ("verb", "source", "actor", "object", "since", "until")}
    if filters["verb"]:
        events = events.filter(verb__startswith=filters["verb"])
    if filters["source"] in Source.values:
        events = events.filter(source=filters["source"])
    if filters["actor"]:
        events = events.filter(actor_label__icontains=filters["actor"])
    if filters["object"]:
        events = events.filter(object_id__startswith=filters["object"])
    tz = timezone.get_current_timezone()
    if since := _date(filters["since"]):
        events = events.filter(created_at__gte=dt.datetime.combine(since, dt.time.min, tzinfo=tz))
    if until := _date(filters["until"]):
        events = events.filter(created_at__lt=dt.datetime.combine(until + dt.timedelta(days=1), dt.time.min, tzinfo=tz))
    verbs = sorted(
        {
            v.split(".")[0]
            for v in AuditEvent.objects.filter(workspace=request.workspace).values_list("verb", flat=True).distinct()
        }
    )
    paginator = Paginator(events, PAGE_SIZE)
    page_obj = paginator.get_page(q.get("page"))
    query = q.copy()
    query.pop("page", None)
    return page(
        request,
        "dashboard/audit/list.html",
        "audit",
        page_obj=page_obj,
        filters=filters,
        sources=Source.choices,
        verbs=verbs,
        query=query.urlencode(),
        filtered=any(filters.values()),
    )
