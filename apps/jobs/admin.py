from django.contrib import admin

from apps.jobs.models import Job, JobMetric


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ["id", "ticket", "attempt", "role", "status", "progress", "remote_status", "created_at"]
    list_filter = ["status", "role", "launcher"]
    readonly_fields = ["token_hash", "handle", "log_tail", "result"]


@admin.register(JobMetric)
class JobMetricAdmin(admin.ModelAdmin):
    list_display = ["job", "side", "name", "split", "epoch", "step", "value"]
    list_filter = ["side", "name", "split"]
