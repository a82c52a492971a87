"""Two real installations, alpha and beta, for the peer tests.

Each has its own var dir, PostgreSQL database (created and dropped here), Redis
database, gunicorn, `manage.py run_peer` and `celery worker -B`. Alice owns
alpha's workspace `acme`; Bob owns beta's workspace `globex` (and Bea is its
approver). Both installations are started once per test session.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from fedsite.localcluster import Installation, drop_postgres_database, ensure_postgres_database
from tests.live import Side, wait_peer_port

PG = os.environ.get("FEDSITE_TEST_PG", "postgres://postgres@127.0.0.1:5432/postgres")
# Redis server (each installation takes a database number of its own on it).
REDIS = (
    urlsplit(
        os.environ.get("FEDSITE_TEST_REDIS") or os.environ.get("FEDSITE_TEST_BROKER_URL") or "redis://127.0.0.1:6379"
    )
    ._replace(path="")
    .geturl()
)

FEATURES = "user_id,age,spend\n" + "".join(f"u{i},{20 + i % 50},{i * 1.5}\n" for i in range(200))
LABELS = "user_id,clicked\n" + "".join(f"u{i},{(i // 2) % 2}\n" for i in range(0, 400, 2))  # both classes


def _installation(name: str, tmp: Path, redis_db: int, tag: str, workspace: str) -> Installation:
    data = tmp / name / "data"
    folder = data / workspace  # the workspace's own folder: the only place its datasets come from
    folder.mkdir(parents=True)
    (folder / "features.csv").write_text(FEATURES)
    (folder / "labels.csv").write_text(LABELS)
    (folder / "other.csv").write_text(FEATURES)
    return Installation(
        name=f"{name}-{tag}",
        var_dir=tmp / name / "var",
        database_url=ensure_postgres_database(PG, f"fedsite_test_{name}_{tag}", fresh=True),
        broker_url=f"{REDIS}/{redis_db}",
        data_roots=[data],
        worker_concurrency=4,
        extra_env={"LOG_LEVEL": "INFO", "FEDSITE_RUNTIME_PORTS": "27000-27999"},
    )


@pytest.fixture(scope="session")
def installations(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Installation]]:
    tmp = tmp_path_factory.mktemp("peer")
    tag = str(os.getpid())
    base = 2 + (os.getpid() % 7) * 2  # two Redis databases of our own, away from db 0
    alpha = _installation("alpha", tmp, base, tag, "acme")
    beta = _installation("beta", tmp, base + 1, tag, "globex")

    def bring_up(inst: Installation, workspace: str, users: dict[str, tuple[str, str]]) -> None:
        inst.setup(workspace=workspace, users=users)
        inst.start()
        inst.wait_ready(90)

    try:
        with ThreadPoolExecutor(2) as pool:
            for f in [
                pool.submit(bring_up, alpha, "acme", {"alice": ("owner", "alice-password-1")}),
                pool.submit(
                    bring_up,
                    beta,
                    "globex",
                    {"bob": ("owner", "bob-password-1"), "bea": ("approver", "bea-password-1")},
                ),
            ]:
                f.result()
        wait_peer_port(alpha)
        wait_peer_port(beta)
        yield {"alpha": alpha, "beta": beta}
    finally:
        Installation.stop_all((alpha, beta))
        for name in ("alpha", "beta"):
            drop_postgres_database(PG, f"fedsite_test_{name}_{tag}")


@pytest.fixture(scope="session")
def alpha(installations: dict[str, Installation]) -> Side:
    inst = installations["alpha"]
    return Side(inst, "acme", inst.client("alice"))


@pytest.fixture(scope="session")
def beta(installations: dict[str, Installation]) -> Side:
    inst = installations["beta"]
    return Side(inst, "globex", inst.client("bob"))


@dataclass
class Partnership:
    alpha_partner: dict[str, Any]  # beta as seen by alpha
    beta_partner: dict[str, Any]  # alpha as seen by beta
    alpha_dataset: dict[str, Any]  # alpha's labels
    beta_dataset: dict[str, Any]  # beta's features, granted to alpha
    beta_ungranted: dict[str, Any]  # beta's other dataset, never granted
    remote_dataset: dict[str, Any]  # beta's features as alpha sees it


@pytest.fixture(scope="session")
def partnership(alpha: Side, beta: Side) -> Partnership:
    """Alpha invites, Beta accepts; each registers data; Beta grants its features to Alpha."""
    code = alpha.post("partners/invitations/")["code"]
    beta_partner = beta.post("partners/accept/", {"code": code, "name": "alpha"})
    alpha_partner = alpha.wait("partners/", lambda b: len(b["results"]) == 1)["results"][0]
    alpha_ds = alpha.post(
        "datasets/", {"name": "labels", "uri": "labels.csv", "id_column": "user_id", "label_column": "clicked"}
    )
    beta_ds = beta.post("datasets/", {"name": "features", "uri": "features.csv", "id_column": "user_id"})
    other = beta.post("datasets/", {"name": "other", "uri": "other.csv", "id_column": "user_id"})
    beta.post(f"datasets/{beta_ds['id']}/grants/", {"partner": beta_partner["id"]})
    remote = alpha.wait("partner-datasets/", lambda b: len(b["results"]) == 1)["results"][0]
    return Partnership(alpha_partner, beta_partner, alpha_ds, beta_ds, other, remote)
