from django.contrib import admin

from apps.datasets.models import Dataset, DatasetGrant, RemoteDataset


class GrantInline(admin.TabularInline):
    model = DatasetGrant
    extra = 0


@admin.register(Dataset)
class DatasetAdmin(admin.ModelAdmin):
    list_display = ["name", "workspace", "format", "row_count", "visibility", "created_at"]
    list_filter = ["format", "visibility", "workspace"]
    search_fields = ["name", "uri"]
    readonly_fields = ["schema", "row_count", "stats", "checksum", "size_bytes"]
    inlines = [GrantInline]


@admin.register(DatasetGrant)
class DatasetGrantAdmin(admin.ModelAdmin):
    list_display = ["dataset", "partner", "created_at"]


@admin.register(RemoteDataset)
class RemoteDatasetAdmin(admin.ModelAdmin):
    list_display = ["name", "partner", "workspace", "row_count", "revoked", "updated_at"]
    list_filter = ["revoked"]
