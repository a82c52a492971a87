"""Run whole installations on loopback: web, peer service and Celery worker each.

Used by `make demo` and by the tests that need live installations. No Django
import here: every installation is a set of subprocesses with its own
environment (var dir, database, broker, ports), exactly as an operator runs it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_postgres_database(base_url: str, name: str, *, fresh: bool = False) -> str:
    """Create database `name` on the server of `base_url`; return its URL."""
    import psycopg
    from psycopg import sql

    head, _, _ = base_url.rpartition("/")
    with psycopg.connect(f"{head}/postgres", autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if exists and fresh:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
            exists = None
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return f"{head}/{name}"


def drop_postgres_database(base_url: str, name: str) -> None:
    import psycopg
    from psycopg import sql

    head, _, _ = base_url.rpartition("/")
    with psycopg.connect(f"{head}/postgres", autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@dataclass
class Installation:
    """One installation's processes and how to reach them."""

    name: str
    var_dir: Path
    web_port: int = field(default_factory=free_port)
    peer_port: int = field(default_factory=free_port)
    database_url: str | None = None  # None: SQLite under var_dir
    broker_url: str | None = None  # None: kombu filesystem broker under var_dir
    runtime_ports: str = "17000-17999"
    data_roots: list[Path] = field(default_factory=list)
    extra_env: dict[str, str] = field(default_factory=dict)
    worker_concurrency: int = 4
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    @property
    def peer_endpoint(self) -> str:
        return f"127.0.0.1:{self.peer_port}"

    def data_folder(self, workspace: str) -> Path:
        """The workspace's own folder under the first data root (the only place its datasets may come from)."""
        root = self.data_roots[0] if self.data_roots else self.var_dir / "data"
        folder = root / workspace
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("DATABASE_URL", "CELERY_BROKER_URL", "FEDSITE_", "DJANGO_SETTINGS"))
        }
        env.update(
            DJANGO_SETTINGS_MODULE="fedsite.settings",
            FEDSITE_INSTALLATION_NAME=self.name,
            FEDSITE_VAR_DIR=str(self.var_dir),
            FEDSITE_PUBLIC_URL=self.url,
            FEDSITE_PEER_LISTEN=self.peer_endpoint,
            FEDSITE_PEER_ENDPOINT=self.peer_endpoint,
            FEDSITE_RUNTIME_PORTS=self.runtime_ports,
            CELERY_QUEUE=f"fedsite-{self.name}",
            PYTHONUNBUFFERED="1",
        )
        if self.data_roots:
            env["FEDSITE_DATA_ROOTS"] = ",".join(str(p) for p in self.data_roots)
        if self.database_url:
            env["DATABASE_URL"] = self.database_url
        if self.broker_url:
            env["CELERY_BROKER_URL"] = self.broker_url
        env.update(self.extra_env)
        return env

    # -- commands ---------------------------------------------------------
    def manage(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [sys.executable, str(ROOT / "manage.py"), *args],
            cwd=ROOT,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise RuntimeError(f"[{self.name}] manage.py {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
        return proc

    def setup(self, *, workspace: str, users: dict[str, tuple[str, str]]) -> None:
        """Migrate, then create `workspace` with `users` = {username: (role, password)}; idempotent."""
        self.var_dir.mkdir(parents=True, exist_ok=True)
        self.manage("migrate", "--noinput", "-v", "0")
        owner = next(u for u, (role, _) in users.items() if role == "owner")
        self.manage(
            "create_workspace",
            workspace,
            "--name",
            workspace.capitalize(),
            "--owner",
            owner,
            "--password",
            users[owner][1],
            "--if-missing",
        )
        for username, (role, password) in users.items():
            if username != owner:
                self.manage("add_member", workspace, username, "--role", role, "--password", password)

    def token(self, username: str) -> str:
        return self.manage("issue_token", username).stdout.strip()

    def client(self, username: str) -> ApiClient:
        return ApiClient(self.url, self.token(username))

    # -- processes --------------------------------------------------------
    def _spawn(self, role: str, argv: list[str]) -> None:
        logs = self.var_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        out = (logs / f"{role}.log").open("ab")
        self.processes[role] = subprocess.Popen(
            argv, cwd=ROOT, env=self.env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )

    ROLES = ("web", "peer", "worker")

    def argv(self, role: str) -> list[str]:
        """The command line of one of the installation's processes."""
        py = sys.executable
        if role == "web":
            return [py, "-m", "gunicorn", "fedsite.wsgi", "-b", f"127.0.0.1:{self.web_port}", "--workers", "2", "--threads", "4", "--timeout", "120", "--graceful-timeout", "5"]  # fmt: skip
        if role == "peer":
            return [py, str(ROOT / "manage.py"), "run_peer"]
        if role == "worker":
            return [
                py, "-m", "celery", "-A", "fedsite", "worker", "-B", "--pool", "threads", "-c", str(self.worker_concurrency),
                "-Q", f"fedsite-{self.name}", "-n", f"{self.name}@%h", "--without-gossip", "--without-mingle", "--without-heartbeat",
                "--loglevel", "INFO", "--schedule", str(self.var_dir / "celerybeat-schedule"),
            ]  # fmt: skip
        raise ValueError(f"unknown role {role!r} (one of {', '.join(self.ROLES)})")

    def start(self, roles: tuple[str, ...] = ROLES) -> None:
        """Start the installation's processes (all of them unless `roles` says otherwise)."""
        for role in roles:
            self._spawn(role, self.argv(role))

    def stop_process(self, role: str, sig: int = signal.SIGTERM, timeout: float = 15) -> None:
        proc = self.processes.pop(role, None)
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(5)

    def restart_process(self, role: str, sig: int = signal.SIGTERM) -> None:
        """Stop one process (SIGTERM, or SIGKILL for a crash) and start it again."""
        self.stop_process(role, sig)
        self.start((role,))

    def is_running(self, role: str) -> bool:
        proc = self.processes.get(role)
        return proc is not None and proc.poll() is None

    def kill(self, *, hard: bool) -> None:
        """Take the whole installation down at once, as an operator's stop or a crash would.

        Soft: SIGTERM to web, peer service and worker together (a service manager's
        stop; runtimes live on in their own sessions, as they do across a worker
        restart). Hard: SIGKILL to all of them and to this installation's runtimes
        (the machine lost power). `start()` brings it back on the same ports and data.
        """
        sig = signal.SIGKILL if hard else signal.SIGTERM
        procs = [self.processes.pop(role) for role in list(self.processes)]
        for proc in procs:  # signal all first, so no process outlives another by a grace period
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                pass
        if hard:
            self.kill_runtimes()
        for proc in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(5)

    def kill_runtimes(self) -> int:
        """SIGKILL every runtime this installation's local launcher started; returns how many."""
        # Runtimes run in their own sessions (a worker restart must not kill them).
        from apps.jobs.launchers.local import kill_all

        return kill_all(self.var_dir / "jobs")

    def stop(self) -> None:
        """SIGTERM to every process at once (their grace periods overlap), then this installation's runtimes."""
        self.kill(hard=False)
        self.kill_runtimes()

    @staticmethod
    def stop_all(insts: Iterable[Installation]) -> None:
        """Stop several installations at once, so their grace periods overlap."""
        insts = list(insts)
        if insts:
            with ThreadPoolExecutor(len(insts)) as pool:
                list(pool.map(Installation.stop, insts))

    def wait_peer_listening(self, timeout: float = 30) -> None:
        """Wait until the peer service accepts connections (it has no readiness URL)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.peer_port)) == 0:
                    return
            if "peer" in self.processes:
                self.check_alive()
            time.sleep(0.05)
        raise RuntimeError(f"peer service of {self.name} not listening; log:\n{self.log('peer')[-3000:]}")

    def check_alive(self) -> None:
        """Raise, naming the process and its log, if one of this installation's processes died."""
        for role, proc in self.processes.items():
            if proc.poll() is not None:
                tail = "\n".join(self.log(role).splitlines()[-15:])
                log = self.var_dir / "logs" / f"{role}.log"
                raise RuntimeError(f"[{self.name}] {role} exited with {proc.returncode}; its log ({log}) ends:\n{tail}")

    def wait_ready(self, timeout: float = 60) -> dict[str, Any]:
        """Wait until /readyz answers 200 and, if this installation runs its peer service, that accepts connections.

        The peer service starts apart from the web app and may take longer: a partner's handshake sent
        before it listens is refused as "partner unreachable" (502).
        """
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                r = requests.get(f"{self.url}/readyz", timeout=2)
                last = r.json()
                if r.status_code == 200:
                    if "peer" in self.processes:
                        self.wait_peer_listening(max(deadline - time.monotonic(), 1.0))
                    return last
            except (requests.RequestException, ValueError) as exc:
                last = exc
            time.sleep(0.2)
        raise RuntimeError(f"[{self.name}] not ready after {timeout}s: {last}")

    def log(self, role: str) -> str:
        path = self.var_dir / "logs" / f"{role}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def wipe(self) -> None:
        shutil.rmtree(self.var_dir, ignore_errors=True)


class ApiClient:
    """A small REST client bound to one user's token and one installation."""

    def __init__(self, base_url: str, token: str) -> None:
        self.base = base_url.rstrip("/")
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Token {token}"

    def request(self, method: str, path: str, **kw: Any) -> requests.Response:
        return self.session.request(method, f"{self.base}{path}", timeout=kw.pop("timeout", 30), **kw)

    def get(self, path: str, **kw: Any) -> Any:
        r = self.request("GET", path, **kw)
        r.raise_for_status()
        return r.json()

    def post(self, path: str, json: Any = None, *, expect: int | tuple[int, ...] = (200, 201, 202)) -> Any:
        r = self.request("POST", path, json=json or {})
        ok = (expect,) if isinstance(expect, int) else expect
        if r.status_code not in ok:
            raise AssertionError(f"POST {path} answered {r.status_code}: {r.text[:2000]}")
        return r.json() if r.content else None

    def wait_for(self, path: str, predicate: Any, timeout: float = 30, interval: float = 0.05) -> Any:
        """GET `path` until `predicate(body)` is true; return the body."""
        deadline = time.monotonic() + timeout
        body: Any = None
        while time.monotonic() < deadline:
            r = self.request("GET", path)
            if r.status_code == 200:
                body = r.json()
                if predicate(body):
                    return body
            time.sleep(interval)
        raise TimeoutError(f"GET {path} did not satisfy the condition in {timeout}s; last: {str(body)[:1000]}")
