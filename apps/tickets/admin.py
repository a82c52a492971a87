from django.contrib import admin

from apps.tickets.models import Ticket, TicketEvent


class TicketEventInline(admin.TabularInline):
    model = TicketEvent
    extra = 0
    readonly_fields = ["side", "from_status", "to_status", "actor_label", "comment", "created_at"]


@admin.register(Ticket)
class TicketAdmin(admin.ModelAdmin):
    list_display = ["name", "workspace", "partner", "kind", "role", "status", "created_at"]
    list_filter = ["status", "kind", "role"]
    search_fields = ["name"]
    readonly_fields = ["status"]
    inlines = [TicketEventInline]


@admin.register(TicketEvent)
class TicketEventAdmin(admin.ModelAdmin):
    list_display = ["ticket", "side", "from_status", "to_status", "actor_label", "created_at"]
