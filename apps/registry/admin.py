from django.contrib import admin

from apps.registry.models import ModelVersion


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ["name", "workspace", "role", "stage", "created_at"]
    list_filter = ["stage", "role"]
    readonly_fields = ["metrics", "lineage"]
