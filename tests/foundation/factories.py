"""Small builders for domain rows that tests need as given state."""

from __future__ import annotations

import uuid
from pathlib import Path

from apps.datasets.models import RemoteDataset
from apps.partners.choices import PartnerStatus
from apps.partners.models import Partner


def write_csv(root: Path, name: str, text: str) -> Path:
    path = root / name
    path.write_text(text, encoding="utf-8")
    return path


def labelled_csv(root: Path, name: str = "users_labels.csv", rows: int = 20) -> Path:
    lines = ["id,age,label"] + [f"u{i},{20 + i % 40},{i % 2}" for i in range(rows)]
    return write_csv(root, name, "\n".join(lines) + "\n")


def features_csv(root: Path, name: str = "users_features.csv", rows: int = 20) -> Path:
    lines = ["id,income,city"] + [f"u{i},{1000 + 10 * i},{'paris' if i % 3 else 'lyon'}" for i in range(rows)]
    return write_csv(root, name, "\n".join(lines) + "\n")


def connected_partner(workspace, name: str = "globex-at-beta", **kw) -> Partner:
    return Partner.objects.create(
        workspace=workspace,
        name=name,
        status=PartnerStatus.CONNECTED,
        endpoint="127.0.0.1:1",
        remote_workspace_id=uuid.uuid4(),
        **kw,
    )


def shared_dataset(partner: Partner, *, has_label: bool = False, name: str = "users_features") -> RemoteDataset:
    return RemoteDataset.objects.create(
        workspace=partner.workspace,
        partner=partner,
        remote_id=uuid.uuid4(),
        name=name,
        schema=[{"name": "id", "type": "string"}, {"name": "income", "type": "integer"}],
        row_count=20,
        has_label=has_label,
    )
