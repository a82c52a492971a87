from django.contrib import admin

from apps.peer.models import InboxMessage, Invitation, OutboxMessage


@admin.register(OutboxMessage)
class OutboxMessageAdmin(admin.ModelAdmin):
    list_display = ["created_at", "partner", "kind", "status", "attempts", "next_attempt_at"]
    list_filter = ["status", "kind"]
    readonly_fields = [f.name for f in OutboxMessage._meta.fields]


@admin.register(InboxMessage)
class InboxMessageAdmin(admin.ModelAdmin):
    list_display = ["received_at", "partner", "kind", "message_id"]
    list_filter = ["kind"]
    readonly_fields = [f.name for f in InboxMessage._meta.fields]


@admin.register(Invitation)
class InvitationAdmin(admin.ModelAdmin):
    list_display = ["created_at", "workspace", "status", "expires_at", "used_at", "revoked_at", "partner"]
    readonly_fields = [
        "id", "workspace", "status", "expires_at", "used_at", "partner", "created_by", "created_at", "revoked_at",
        "revoked_by",
    ]  # fmt: skip
    exclude = ["secret_hash"]
