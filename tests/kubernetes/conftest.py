"""kmock's KubernetesEmulator on loopback, served from a background event loop, and a launcher on it.

The emulator stores objects and serves list/watch/get/patch/delete like an API
server but runs no controllers; tests play the Job controller and kubelet by
creating the pod and patching the Job's status, as a cluster would.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import kmock
import pytest
from kubernetes import client

NAMESPACE = "fedsite-jobs"


class Emulator(kmock.KubernetesEmulator):
    """The emulator, plus what a real API server adds on create: uid and creation time."""

    async def _handle(self, request):
        if request.action == kmock.action.CREATE and isinstance(request.data, dict):
            meta = request.data.setdefault("metadata", {})
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("creationTimestamp", dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
        return await super()._handle(request)


class Cluster:
    """Handle on the emulator running in its own thread."""

    def __init__(self) -> None:
        self.logs: dict[str, str] = {}
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self.emulator: Emulator | None = None
        self.url = ""
        self._thread = threading.Thread(target=self._run, name="kmock", daemon=True)

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        async with Emulator() as emu, kmock.Server(emu, host="127.0.0.1") as server:
            self.emulator = emu
            self.url = str(server.url).rstrip("/")
            emu["get", kmock.subresource("log")] << (
                lambda req: kmock.Response(
                    payload=self.logs.get(req.name, "").encode(), headers={"Content-Type": "text/plain"}
                )
            )
            self._ready.set()
            await self._stop.wait()

    def start(self) -> Cluster:
        self._thread.start()
        if not self._ready.wait(20):
            raise RuntimeError("kmock did not start")
        return self

    def close(self) -> None:
        if self._loop and self._stop:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def api_client(self) -> client.ApiClient:
        return client.ApiClient(client.Configuration(host=self.url))

    # -- playing the controllers --------------------------------------------
    def run_pod(self, handle: dict[str, Any], log: str = "") -> str:
        """What the Job controller and kubelet would do: a pod with the template's labels, and its log."""
        core = client.CoreV1Api(self.api_client())
        job = client.BatchV1Api(self.api_client()).read_namespaced_job(handle["name"], handle["namespace"])
        labels = {**job.spec.template.metadata.labels, "job-name": handle["name"]}
        name = f"{handle['name']}-{uuid.uuid4().hex[:5]}"
        core.create_namespaced_pod(
            handle["namespace"],
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "labels": labels},
                "spec": client.ApiClient().sanitize_for_serialization(job.spec.template.spec),
            },
        )
        self.logs[name] = log
        return name

    def set_job_status(self, handle: dict[str, Any], status: dict[str, Any]) -> None:
        client.BatchV1Api(self.api_client()).patch_namespaced_job_status(
            handle["name"], handle["namespace"], {"status": status}
        )

    def objects(self, plural: str, namespace: str = NAMESPACE) -> dict[str, dict]:
        """Live objects of a resource ("jobs", "secrets", …) by name."""
        assert self.emulator is not None
        out = {}
        for (resource, ns, name), obj in list(self.emulator.objects.items()):
            if resource.plural == plural and ns == namespace and not obj.deleted:
                out[name] = obj.raw
        return out


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    c = Cluster().start()
    yield c
    c.close()


@pytest.fixture
def k8s_launcher(cluster, settings):
    from apps.jobs.launchers.kubernetes import KubernetesLauncher

    settings.FEDSITE_K8S_NAMESPACE = NAMESPACE
    settings.FEDSITE_K8S_IMAGE = "fedsite-runtime:1.0"
    return KubernetesLauncher(cluster.api_client())


@pytest.fixture
def tls_files(tmp_path):
    from tests.pki import make_party

    party = make_party(tmp_path / "pki", "alpha")
    return {"cert_file": str(party.cert_file), "key_file": str(party.key_file), "peer_ca_file": str(party.ca_file)}
