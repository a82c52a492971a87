"""A populated acme workspace: a connected partner, datasets both ways, tickets, a job with curves, a model."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from django.test import Client
from django.utils import timezone

from apps.datasets.models import RemoteDataset
from apps.datasets.services import grant_dataset, register_dataset
from apps.jobs.models import Job, JobMetric
from apps.partners.choices import PartnerStatus
from apps.partners.models import Partner
from apps.registry.services import register_model_version
from apps.tickets.services import propose_ticket, receive_proposal

LABELS_CSV = "user_id,age,clicked\n" + "".join(f"u{i},{20 + i % 40},{i % 2}\n" for i in range(200))
FEATURES_CSV = "user_id,income,visits\n" + "".join(f"u{i},{1000 + i * 7},{i % 9}\n" for i in range(150))


@pytest.fixture
def browser_client(users):
    """browser_client("alice") is a Django test client logged in as Alice (session, like a browser)."""

    def make(name: str | None) -> Client:
        client = Client()
        if name:
            client.force_login(users[name])
        return client

    return make


@pytest.fixture
def world(users, workspaces, data_root):
    acme = workspaces["acme"]
    alice = users["alice"]
    (data_root / "labels.csv").write_text(LABELS_CSV)
    (data_root / "features.csv").write_text(FEATURES_CSV)
    partner = Partner.objects.create(
        workspace=acme,
        name="Beta Bank",
        remote_installation="beta",
        remote_workspace_id=uuid.uuid4(),
        remote_workspace_slug="beta",
        endpoint="127.0.0.1:7444",
        status=PartnerStatus.CONNECTED,
        last_contact_at=timezone.now(),
        last_rtt_ms=3.2,
        cert_expires_at=timezone.now() + dt.timedelta(days=300),
    )
    labels = register_dataset(acme, name="users_labels", uri=str(data_root / "labels.csv"), id_column="user_id",
                              label_column="clicked", acting_user=alice)  # fmt: skip
    features = register_dataset(acme, name="users_features", uri=str(data_root / "features.csv"), id_column="user_id",
                                acting_user=alice)  # fmt: skip
    grant_dataset(features, partner, acting_user=alice)
    remote = RemoteDataset.objects.create(
        workspace=acme, partner=partner, remote_id=uuid.uuid4(), name="beta_features",
        schema=[{"name": "user_id", "type": "string"}, {"name": "income", "type": "float"}], row_count=180,
    )  # fmt: skip
    sent = propose_ticket(acme, partner=partner, kind="psi_vertical_nn", local_dataset=labels, remote_dataset=remote,
                          comment="Q3 click model", acting_user=alice, source="ui")  # fmt: skip
    received = receive_proposal(
        acme,
        partner,
        {
            "ticket_id": str(uuid.uuid4()),
            "name": "beta proposes: scoring features",
            "kind": "psi",
            "proposer_role": "leader",
            "proposer_dataset": {"id": str(uuid.uuid4()), "name": "beta_labels"},
            "receiver_dataset_id": str(features.id),
            "params": {},
            "comment": "PSI only, please",
            "proposed_by": "mallory",
        },
    )
    job = Job.objects.create(
        workspace=acme, ticket=sent, role=sent.role, status="running", stage="train", progress=0.6,
        log_tail="epoch 1 done\nepoch 2 done", remote_status="running", remote_progress=0.55, started_at=timezone.now(),
    )  # fmt: skip
    points = []
    for step in range(1, 31):
        points.append(
            JobMetric(
                job=job, name="loss", split="train", step=step * 10, epoch=1 + step // 10, value=0.7 - step * 0.01
            )
        )
    for epoch in (1, 2, 3):
        points.append(
            JobMetric(job=job, name="auc", split="validation", step=epoch * 100, epoch=epoch, value=0.6 + epoch * 0.05)
        )
        points.append(
            JobMetric(
                job=job, name="loss", split="validation", step=epoch * 100, epoch=epoch, value=0.65 - epoch * 0.03
            )
        )
    JobMetric.objects.bulk_create(points)
    done = Job.objects.create(
        workspace=acme, ticket=sent, attempt=2, role=sent.role, status="succeeded", progress=1.0,
        remote_status="succeeded", remote_progress=1.0, started_at=timezone.now(), finished_at=timezone.now(),
    )  # fmt: skip
    mv = register_model_version(
        done,
        artifact_uri="/var/models/x",
        metrics={"validation": {"auc": 0.74, "loss": 0.52}, "train": {"auc": 0.78, "loss": 0.49}},
    )
    mv_running = register_model_version(job, artifact_uri="/var/models/y", metrics={"validation": {"auc": 0.7}})
    return {
        "acme": acme, "partner": partner, "labels": labels, "features": features, "remote": remote, "sent": sent,
        "received": received, "job": job, "done": done, "mv": mv, "mv2": mv_running,
    }  # fmt: skip
