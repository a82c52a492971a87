from django.contrib import admin

from apps.partners.models import Partner


@admin.register(Partner)
class PartnerAdmin(admin.ModelAdmin):
    list_display = ["name", "workspace", "status", "endpoint", "last_contact_at", "cert_expires_at"]
    list_filter = ["status", "workspace"]
    search_fields = ["name", "endpoint", "remote_workspace_slug"]
    readonly_fields = ["ca_fingerprint", "last_contact_at", "last_rtt_ms", "cert_expires_at", "clock_skew_s"]
