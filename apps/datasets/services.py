"""Registering datasets and granting them to partners."""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError, transaction

from apps.audit.services import record
from apps.core.errors import ServiceError
from apps.datasets.choices import Visibility
from apps.datasets.folders import resolve_in_workspace
from apps.datasets.inspect import DataFileError, Progress, inspect_file
from apps.datasets.models import Dataset, DatasetGrant
from apps.partners.models import Partner
from apps.workspaces.models import Workspace


def register_dataset(
    workspace: Workspace,
    *,
    name: str,
    uri: str,
    id_column: str,
    label_column: str = "",
    description: str = "",
    visibility: str = Visibility.SCHEMA,
    acting_user: Any = None,
    source: str = "api",
    progress: Progress | None = None,
) -> Dataset:
    """Inspect the file (outside any transaction: it may take minutes), then save.

    `progress(bytes_done, bytes_total)` is called as the file is read (the CLI draws a bar).
    """
    if not name.strip():
        raise ServiceError("name is required", field="name")
    if Dataset.objects.filter(workspace=workspace, name=name).exists():
        raise ServiceError(f"a dataset named {name!r} already exists", field="name")
    if not id_column:
        raise ServiceError("id_column is required", field="id_column")
    path = resolve_in_workspace(workspace, uri)
    # Long I/O outside transaction.atomic(): a 5 GB file must not hold a DB transaction open.
    info = inspect_file(path, id_column, label_column or None, progress)
    try:
        with transaction.atomic():
            if Dataset.objects.filter(workspace=workspace, name=name).exists():
                raise ServiceError(f"a dataset named {name!r} already exists", field="name")
            dataset = Dataset.objects.create(
                workspace=workspace,
                name=name,
                description=description,
                uri=str(path),
                format=info.format,
                id_column=id_column,
                label_column=label_column or "",
                schema=info.schema,
                row_count=info.row_count,
                stats=info.stats,
                checksum=info.checksum,
                size_bytes=info.size_bytes,
                visibility=visibility,
                created_by=acting_user if getattr(acting_user, "is_authenticated", False) else None,
            )
            record(
                workspace,
                "dataset.registered",
                dataset,
                actor=acting_user,
                source=source,
                data={"name": name, "rows": info.row_count, "checksum": info.checksum},
            )
    except IntegrityError:
        # Another request registered the same name between our check and our insert.
        if Dataset.objects.filter(workspace=workspace, name=name).exists():
            raise ServiceError(f"a dataset named {name!r} already exists", field="name") from None
        raise
    return dataset


def shared_view(dataset: Dataset) -> dict[str, Any]:
    """What a partner may see of a granted dataset (never rows)."""
    if dataset.visibility == Visibility.SCHEMA:
        return {
            "id": str(dataset.id),
            "name": dataset.name,
            "schema": dataset.schema,
            "row_count": dataset.row_count,
            "has_label": bool(dataset.label_column),
        }
    return {
        "id": str(dataset.id),
        "name": dataset.name,
        "schema": [],
        "row_count": None,
        "has_label": bool(dataset.label_column),
    }


@transaction.atomic
def grant_dataset(dataset: Dataset, partner: Partner, *, acting_user: Any = None, source: str = "api") -> DatasetGrant:
    if partner.workspace_id != dataset.workspace_id:
        raise ServiceError("unknown partner", field="partner")
    grant, created = DatasetGrant.objects.get_or_create(dataset=dataset, partner=partner)
    if created:
        record(
            dataset.workspace,
            "dataset.granted",
            dataset,
            actor=acting_user,
            source=source,
            data={"partner": partner.name},
        )
        _announce(dataset, partner, shared_view(dataset))
    return grant


@transaction.atomic
def revoke_grant(grant: DatasetGrant, *, acting_user: Any = None, source: str = "api") -> None:
    dataset, partner = grant.dataset, grant.partner
    record(
        dataset.workspace, "dataset.revoked", dataset, actor=acting_user, source=source, data={"partner": partner.name}
    )
    grant.delete()
    _announce(dataset, partner, {"id": str(dataset.id), "name": dataset.name, "revoked": True})
    from apps.registry.serving import stop_serving_revoked

    stop_serving_revoked(dataset, partner, acting_user=acting_user, source=source)


def _announce(dataset: Dataset, partner: Partner, view: dict[str, Any]) -> None:
    """Tell the partner what it may now see (through the outbox, same transaction)."""
    from apps.peer.outbox import enqueue

    enqueue(partner, "dataset.shared", view)


__all__ = ["DataFileError", "grant_dataset", "register_dataset", "resolve_in_workspace", "revoke_grant", "shared_view"]
