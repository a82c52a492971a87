"""The main flow of DESIGN.md, driven through the public REST API of two installations.

`make demo` runs it with embedded defaults; the e2e test runs the same code
against PostgreSQL and Redis.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from demo.data import generate
from fedsite.localcluster import ApiClient, Installation

USERS = {
    "alpha": {
        "alice": ("owner", "alice-demo-pass"),
        "anna": ("approver", "anna-demo-pass"),
        "victor": ("viewer", "victor-demo-pass"),
    },
    "beta": {"bruno": ("owner", "bruno-demo-pass"), "bea": ("approver", "bea-demo-pass")},
}
TERMINAL = {"succeeded", "failed", "cancelled"}


@dataclass
class FlowResult:
    """What the demo's summary reports."""

    ticket_id: str
    job_id: str
    statuses: dict[str, str]
    errors: dict[str, str]
    intersection_size: int | None
    validation_auc: float | None
    model_version_id: str | None
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)


def build_installations(
    root: Path,
    *,
    database_url: str | None = None,
    broker_url: str | None = None,
    fresh_db: bool = True,
    db_prefix: str = "fedsite_demo",
) -> tuple[Installation, Installation]:
    """Two installations under `root`, each with its own data root and (for PostgreSQL) database."""
    from fedsite.localcluster import ensure_postgres_database

    out = []
    for index, name in enumerate(("alpha", "beta")):
        var_dir = root / name
        db = None
        if database_url and database_url.startswith("postgres"):
            db = ensure_postgres_database(database_url, f"{db_prefix}_{name}", fresh=fresh_db)
        out.append(
            Installation(
                name,
                var_dir,
                database_url=db,
                broker_url=broker_url,
                runtime_ports=f"{17000 + 500 * index}-{17499 + 500 * index}",
                data_roots=[var_dir / "data"],
            )
        )
    return out[0], out[1]


@contextmanager
def running_pair(
    root: Path,
    *,
    database_url: str | None = None,
    broker_url: str | None = None,
    db_prefix: str = "fedsite_demo",
    rows: int = 60_000,
    runtime_ports: tuple[str, str] | None = None,
) -> Iterator[tuple[Installation, Installation, dict[str, Path]]]:
    """Alpha and beta set up, started and ready; stopped (and their PostgreSQL databases dropped) on exit."""
    from fedsite.localcluster import drop_postgres_database

    alpha, beta = build_installations(root, database_url=database_url, broker_url=broker_url, db_prefix=db_prefix)
    if runtime_ports:
        alpha.runtime_ports, beta.runtime_ports = runtime_ports
    files = prepare(alpha, beta, rows=rows)
    try:
        for inst in (alpha, beta):
            inst.start()
        for inst in (alpha, beta):
            inst.wait_ready(120)
        yield alpha, beta, files
    finally:
        for inst in (alpha, beta):
            inst.stop()
        if database_url and database_url.startswith("postgres"):
            for name in ("alpha", "beta"):
                drop_postgres_database(database_url, f"{db_prefix}_{name}")


def prepare(alpha: Installation, beta: Installation, *, rows: int = 60_000, seed: int = 20201) -> dict[str, Path]:
    """Migrate, seed users and write each side's demo file into its workspace's own data folder."""
    files = generate(alpha.var_dir / "gen", rows_per_side=rows, seed=seed)
    for inst, key in ((alpha, "leader"), (beta, "follower")):
        inst.setup(workspace=inst.name, users=USERS[inst.name])
        target = inst.data_folder(inst.name) / files[key].name
        files[key].replace(target)
        files[key] = target
    return files


def _step(label: str, timings: dict[str, float], started: float) -> None:
    timings[label] = round(time.monotonic() - started, 2)
    print(f"  ✓ {label} ({timings[label]:.1f}s)", flush=True)


def run_main_flow(
    alpha: Installation,
    beta: Installation,
    files: dict[str, Path],
    *,
    epochs: int = 3,
    psi_protocol: str = "auto",
    progress: bool = True,
) -> FlowResult:
    t0 = time.monotonic()
    timings: dict[str, float] = {}
    a_admin: ApiClient = alpha.client("alice")
    b_admin: ApiClient = beta.client("bruno")
    a_approver: ApiClient = alpha.client("anna")
    b_approver: ApiClient = beta.client("bea")
    A, B = "/api/v1/workspaces/alpha", "/api/v1/workspaces/beta"

    # 2. Alpha invites, Beta accepts: both pin each other.
    code = a_admin.post(f"{A}/partners/invitations/")["code"]
    beta_partner = b_admin.post(f"{B}/partners/accept/", {"code": code, "name": "Alpha Ads"})
    alpha_partner = a_admin.wait_for(f"{A}/partners/", lambda b: any(p["status"] == "connected" for p in b["results"]))[
        "results"
    ][0]
    _step("partners connected", timings, t0)

    # 3. Datasets registered; Beta shares its schema with Alpha.
    a_ds = a_admin.post(
        f"{A}/datasets/",
        {"name": "users_labels", "uri": str(files["leader"]), "id_column": "user_id", "label_column": "converted"},
    )
    b_ds = b_admin.post(
        f"{B}/datasets/",
        {"name": "users_features", "uri": str(files["follower"]), "id_column": "user_id", "visibility": "schema"},
    )
    b_admin.post(f"{B}/datasets/{b_ds['id']}/grants/", {"partner": beta_partner["id"]})
    shared = a_admin.wait_for(f"{A}/partner-datasets/", lambda b: b["count"] > 0)["results"][0]
    _step(f"datasets registered ({a_ds['row_count']:,} and {b_ds['row_count']:,} rows), schema shared", timings, t0)

    # 4. Alpha proposes; Beta sees it pending and approves.
    ticket = a_admin.post(
        f"{A}/tickets/",
        {
            "partner": alpha_partner["id"],
            "kind": "psi_vertical_nn",
            "local_dataset": a_ds["id"],
            "remote_dataset": shared["id"],
            "name": "Conversions × basket features",
            "params": {"psi": {"protocol": psi_protocol}, "train": {"epochs": epochs, "batch_size": 512}},
            "comment": "Join on user_id, then train a conversion model.",
        },
    )
    proposed_at = time.monotonic()
    b_approver.wait_for(f"{B}/tickets/{ticket['id']}/", lambda t: t["status"] == "pending", interval=0.02)
    timings["proposal_visible_s"] = round(time.monotonic() - proposed_at, 3)
    b_approver.post(f"{B}/tickets/{ticket['id']}/approve/", {"comment": "Approved for the Q4 pilot."})
    approved_at = time.monotonic()
    a_approver.wait_for(f"{A}/tickets/{ticket['id']}/", lambda t: t["status"] in ("approved", "running"), interval=0.02)
    timings["approval_visible_s"] = round(time.monotonic() - approved_at, 3)
    _step(
        f"ticket proposed, seen by beta in {timings['proposal_visible_s']:.2f}s, approved, seen by alpha in {timings['approval_visible_s']:.2f}s",
        timings,
        t0,
    )

    # 5. Both sides run PSI then training; follow both.
    jobs = {"alpha": a_approver.wait_for(f"{A}/jobs/?ticket={ticket['id']}", lambda b: b["count"] > 0)["results"][0]}
    jobs["beta"] = b_approver.wait_for(f"{B}/jobs/?ticket={ticket['id']}", lambda b: b["count"] > 0)["results"][0]
    clients = {"alpha": (a_approver, A), "beta": (b_approver, B)}
    live = progress and sys.stdout.isatty()
    bars = {side: tqdm(total=100, desc=f"{side} job", unit="%", disable=not live, leave=True) for side in clients}
    shown: dict[str, tuple[str, str, int]] = {}
    deadline = time.monotonic() + 1800
    while time.monotonic() < deadline:
        for side, (client, base) in clients.items():
            job = jobs[side] = client.get(f"{base}/jobs/{jobs[side]['id']}/")
            state = (job["status"], job["stage"], int(10 * job["progress"]))
            if live:
                bars[side].set_postfix_str(f"{job['status']} {job['stage']}".strip())
                bars[side].n = int(100 * job["progress"])
                bars[side].refresh()
            elif progress and shown.get(side) != state:
                # Not a terminal (CI, logs): one line per 10% or state change instead of a redrawn bar.
                print(
                    f"    {side:5} {job['status']:9} {job['stage'] or '-':6} {100 * job['progress']:5.1f}%", flush=True
                )
            shown[side] = state
        if all(j["status"] in TERMINAL for j in jobs.values()):
            break
        alpha.check_alive()
        beta.check_alive()
        time.sleep(0.5)
    for bar in bars.values():
        bar.close()
    _step("jobs finished: " + ", ".join(f"{s} {j['status']}" for s, j in jobs.items()), timings, t0)

    leader = jobs["alpha"]
    psi = (leader.get("result") or {}).get("psi") or {}
    train = (leader.get("result") or {}).get("train") or {}
    auc = ((train.get("metrics") or {}).get("validation") or {}).get("auc")
    mv_id = None
    if leader["status"] == "succeeded":
        versions = a_approver.wait_for(f"{A}/model-versions/?ticket={ticket['id']}", lambda b: b["count"] > 0)[
            "results"
        ]
        mv_id = versions[0]["id"]
        b_approver.wait_for(f"{B}/model-versions/{mv_id}/", lambda m: m["id"] == mv_id)
        _step("model version registered on both sides under one UUID", timings, t0)
    return FlowResult(
        ticket_id=ticket["id"],
        job_id=leader["id"],
        statuses={s: j["status"] for s, j in jobs.items()},
        errors={s: (j["error"] or j["remote_error"]) for s, j in jobs.items() if j["status"] != "succeeded"},
        intersection_size=psi.get("intersection_size"),
        validation_auc=auc,
        model_version_id=mv_id,
        seconds=round(time.monotonic() - t0, 1),
        timings=timings,
    )


def summary(alpha: Installation, beta: Installation, result: FlowResult) -> str:
    ok = all(s == "succeeded" for s in result.statuses.values())
    lines = [
        "",
        "Fedsite demo " + ("finished" if ok else "FAILED") + f" in {result.seconds:.0f}s",
        f"  ticket            {result.ticket_id}",
        f"  job               {result.job_id}  ({', '.join(f'{k}: {v}' for k, v in result.statuses.items())})",
        f"  intersection size {result.intersection_size}",
        f"  validation AUC    {result.validation_auc:.4f}"
        if result.validation_auc is not None
        else "  validation AUC    n/a",
        f"  model version     {result.model_version_id}",
    ]
    for side, err in result.errors.items():
        lines.append(f"  {side} error: {err}")
    lines += [
        "",
        "Look at it in the browser:",
        f"  alpha  {alpha.url}/   logins: " + ", ".join(f"{u} / {p}" for u, (_, p) in USERS["alpha"].items()),
        f"  beta   {beta.url}/   logins: " + ", ".join(f"{u} / {p}" for u, (_, p) in USERS["beta"].items()),
        f"  API docs at {alpha.url}/api/docs/ and {beta.url}/api/docs/",
    ]
    return "\n".join(lines)
