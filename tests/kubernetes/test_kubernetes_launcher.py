"""The Kubernetes backend through the real `kubernetes` client against kmock's emulator on loopback."""

from __future__ import annotations

import base64
import json
import re
import uuid
from pathlib import Path

import kubernetes_validate
import pytest
from django.db import transaction

from apps.jobs.launchers.base import FAILED, MISSING, RUNNING, SUCCEEDED, LaunchError, RuntimeSpec
from apps.jobs.launchers.kubernetes import KubernetesLauncher, object_name
from tests.kubernetes.conftest import NAMESPACE

pytestmark = pytest.mark.kubernetes

K8S_VERSION = "1.33"
DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")


def make_spec(role: str = "leader", tls_files: dict | None = None, timeout_s: int = 600) -> RuntimeSpec:
    job_id = str(uuid.uuid4())
    config = {
        "version": 1,
        "job_id": job_id,
        "role": role,
        "data": {"path": "/srv/data/acme/users.csv", "id_column": "id", "label_column": "label"},
        "steps": ["psi", "train"],
        "psi": {},
        "train": {"epochs": 2},
        "report": {"url": f"http://web.fedsite:8000/api/v1/runtime/jobs/{job_id}/report", "token": "s3cret-token"},
        "timeout_s": timeout_s,
    }
    if role == "leader":
        config["listen_address"] = "0.0.0.0:17042"
    else:
        config["peer_address"] = "fs-x-leader.fedsite-jobs.svc:17042"
    return RuntimeSpec(
        job_id=job_id,
        side=role,
        config=config,
        tls_files=tls_files,
        port=17042 if role == "leader" else None,
        timeout_s=timeout_s,
        labels={"workspace": "acme", "ticket": str(uuid.uuid4())},
    )


def validate_strict(manifest: dict) -> None:
    kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)
    assert DNS_LABEL.match(manifest["metadata"]["name"]), manifest["metadata"]["name"]
    for key, value in manifest["metadata"].get("labels", {}).items():
        assert len(value) <= 63 and re.match(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$", value), (key, value)


@pytest.mark.parametrize("role", ["leader", "follower"])
@pytest.mark.parametrize("service_type", ["ClusterIP", "NodePort"])
def test_every_manifest_validates_strictly(settings, tls_files, role, service_type, k8s_launcher):
    settings.FEDSITE_K8S_DATA_PVC = "fedsite-data"
    settings.FEDSITE_DATA_ROOTS = [Path("/srv/data")]
    settings.FEDSITE_K8S_OUTPUT_PVC = "fedsite-jobs"
    settings.FEDSITE_K8S_IMAGE_PULL_SECRET = "pull"
    settings.FEDSITE_K8S_RUNTIME_SERVICE_ACCOUNT = "fedsite-runtime"
    launcher = KubernetesLauncher(k8s_launcher.api_client, service_type=service_type)
    spec = make_spec(role, tls_files)
    manifests = launcher.manifests(spec)
    kinds = [m["kind"] for m in manifests]
    assert kinds == (["Job", "Secret", "ConfigMap", "Service"] if role == "leader" else ["Job", "Secret", "ConfigMap"])
    for manifest in manifests:
        validate_strict(manifest)
        assert manifest["metadata"]["labels"]["fedsite.io/job-id"] == spec.job_id
        assert manifest["metadata"]["namespace"] == NAMESPACE
    job = manifests[0]
    assert job["spec"]["activeDeadlineSeconds"] == 600 and job["spec"]["backoffLimit"] == 0
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == "fedsite-runtime:1.0"
    assert container["resources"]["limits"] and container["resources"]["requests"]
    assert pod["automountServiceAccountToken"] is False and pod["securityContext"]["runAsNonRoot"] is True
    data_mount = next(m for m in container["volumeMounts"] if m["name"] == "data")
    # Only the workspace's own folder of the data claim reaches the pod, read-only.
    assert data_mount == {"name": "data", "mountPath": "/srv/data/acme", "subPath": "acme", "readOnly": True}
    for child in manifests[1:]:
        assert child["metadata"]["ownerReferences"][0]["kind"] == "Job"


def test_no_tls_and_defaults_validate(k8s_launcher):
    for manifest in k8s_launcher.manifests(make_spec("leader", None)):
        validate_strict(manifest)


def test_create_watch_log_delete(cluster, k8s_launcher, tls_files):
    spec = make_spec("leader", tls_files)
    handle = k8s_launcher.start(spec)
    name = object_name(spec.job_id, "leader")
    assert handle["name"] == name and handle["uid"]

    job = cluster.objects("jobs")[name]
    assert job["spec"]["suspend"] is False  # resumed once its Secret, ConfigMap and Service existed
    for plural in ("secrets", "configmaps", "services"):
        obj = cluster.objects(plural)[name]
        assert obj["metadata"]["ownerReferences"] == [
            {"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": handle["uid"], "blockOwnerDeletion": True}
        ]
    secret = cluster.objects("secrets")[name]["data"]
    config = json.loads(base64.b64decode(secret["config.json"]))
    assert config["tls"] == {
        "cert_file": "/etc/fedsite/job/tls.crt",
        "key_file": "/etc/fedsite/job/tls.key",
        "peer_ca_file": "/etc/fedsite/job/ca.crt",
    }
    assert config["report"]["token"] == "s3cret-token" and config["output_dir"] == "/var/fedsite/output"
    assert base64.b64decode(secret["ca.crt"]).startswith(b"-----BEGIN CERTIFICATE")
    redacted = json.loads(cluster.objects("configmaps")[name]["data"]["config.json"])
    assert redacted["report"]["token"] == "<in the Secret>"
    service = cluster.objects("services")[name]
    assert service["spec"]["ports"][0]["port"] == 17042
    assert service["spec"]["selector"] == {"fedsite.io/job-id": spec.job_id, "fedsite.io/side": "leader"}
    assert k8s_launcher.runtime_host(spec.job_id, "leader", 17042) == f"{name}.{NAMESPACE}.svc:17042"

    assert k8s_launcher.poll(handle).state == RUNNING
    cluster.run_pod(handle, log="step psi: starting as leader\nstep psi: done\n")
    cluster.set_job_status(handle, {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]})
    state = k8s_launcher.watch(handle, timeout_s=10)
    assert state.state == SUCCEEDED
    assert "step psi: done" in state.log_tail
    assert "step psi: done" in k8s_launcher.log_tail(handle)

    k8s_launcher.stop(handle)
    for plural in ("jobs", "secrets", "configmaps", "services"):
        assert name not in cluster.objects(plural), plural
    assert k8s_launcher.poll(handle).state == MISSING
    k8s_launcher.stop(handle)  # idempotent


def test_watch_sees_a_failure_with_the_pods_last_error_line(cluster, k8s_launcher):
    handle = k8s_launcher.start(make_spec("follower"))
    assert not handle["service"] and handle["name"] not in cluster.objects("services")
    cluster.run_pod(handle, log="step psi: starting\nerror: psi: the partner's runtime closed the stream\n")
    cluster.set_job_status(
        handle,
        {"failed": 1, "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]},
    )
    state = k8s_launcher.watch(handle, timeout_s=10)
    assert state.state == FAILED
    assert state.error == "error: psi: the partner's runtime closed the stream"
    k8s_launcher.stop(handle)


def test_deadline_exceeded(cluster, k8s_launcher):
    handle = k8s_launcher.start(make_spec("leader", timeout_s=5))
    cluster.set_job_status(
        handle, {"conditions": [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded", "message": "x"}]}
    )
    state = k8s_launcher.poll(handle)
    assert state.state == FAILED and "deadline (5 s)" in state.error
    k8s_launcher.stop(handle)


def test_image_pull_failure_fails_fast(cluster, k8s_launcher):
    from kubernetes import client

    handle = k8s_launcher.start(make_spec("leader"))
    pod = cluster.run_pod(handle)
    client.CoreV1Api(cluster.api_client()).patch_namespaced_pod_status(
        pod,
        NAMESPACE,
        {
            "status": {
                "containerStatuses": [
                    {
                        "name": "runtime",
                        "image": "fedsite-runtime:1.0",
                        "imageID": "",
                        "ready": False,
                        "restartCount": 0,
                        "state": {"waiting": {"reason": "ImagePullBackOff", "message": "manifest unknown"}},
                    }
                ]
            }
        },
    )
    state = k8s_launcher.poll(handle)
    assert state.state == FAILED and "ImagePullBackOff: manifest unknown" in state.error
    k8s_launcher.stop(handle)


def test_a_refusal_cleans_up_and_raises(cluster, k8s_launcher):
    from kubernetes import client

    spec = make_spec("leader")
    name = object_name(spec.job_id, "leader")
    client.CoreV1Api(cluster.api_client()).create_namespaced_config_map(
        NAMESPACE, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {}}
    )
    with pytest.raises(LaunchError, match="Kubernetes refused"):
        k8s_launcher.start(spec)
    assert name not in cluster.objects("jobs") and name not in cluster.objects("secrets")


def test_unreachable_api_is_a_launch_error(settings):
    from kubernetes import client

    launcher = KubernetesLauncher(client.ApiClient(client.Configuration(host="http://127.0.0.1:9")))
    with pytest.raises(LaunchError):
        launcher.poll({"name": "x", "namespace": NAMESPACE, "job_id": "x", "side": "leader"})


def test_kubeconfig_auth(tmp_path, settings, cluster):
    """The client is built from a kubeconfig when not running in a pod."""
    from apps.jobs.launchers import kubernetes as k8s

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "emu", "cluster": {"server": cluster.url}}],
                "users": [{"name": "worker", "user": {"token": "t"}}],
                "contexts": [{"name": "emu", "context": {"cluster": "emu", "user": "worker", "namespace": NAMESPACE}}],
                "current-context": "emu",
            }
        )
    )
    settings.FEDSITE_K8S_KUBECONFIG = str(kubeconfig)
    k8s._client = None
    try:
        launcher = KubernetesLauncher()
        assert launcher.api_client.configuration.host == cluster.url
        assert launcher.poll({"name": "nope", "namespace": NAMESPACE, "job_id": "x", "side": "leader"}).state == MISSING
    finally:
        k8s._client = None


@pytest.mark.django_db
def test_jobs_through_the_service_layer(
    cluster, k8s_launcher, settings, monkeypatch, django_capture_on_commit_callbacks
):
    """launch → STARTING with the Service's address sent to the partner; reconcile → failed; cancel deletes."""
    from apps.jobs import launch as launching
    from apps.jobs.models import Job
    from apps.jobs.services import cancel_job, start_ticket_run
    from apps.peer.models import OutboxMessage

    settings.FEDSITE_LAUNCHER = "kubernetes"
    settings.FEDSITE_RUNTIME_ALLOW_INSECURE = True
    monkeypatch.setattr(launching, "get_launcher", lambda name=None: k8s_launcher)
    monkeypatch.setattr("apps.jobs.services._stop_runtime", lambda job_id: launching.stop(job_id))
    monkeypatch.setattr("apps.peer.outbox._push", lambda partner_id: None)
    job = _make_job(settings, start_ticket_run)
    assert job.launcher == "kubernetes"
    assert launching.launch(str(job.id)) == "started"
    job.refresh_from_db()
    name = object_name(str(job.id), "leader")
    assert job.status == "starting" and job.handle["name"] == name
    assert job.runtime_address.startswith(f"{name}.{NAMESPACE}.svc:")
    sent = OutboxMessage.objects.filter(kind="job.state").latest("seq").payload
    assert sent["runtime_address"] == job.runtime_address

    cluster.run_pod(job.handle, log="error: data: id column 'id' has duplicates\n")
    cluster.set_job_status(job.handle, {"failed": 1, "conditions": [{"type": "Failed", "status": "True"}]})
    with django_capture_on_commit_callbacks(execute=True):
        launching.reconcile()
    job.refresh_from_db()
    assert job.status == "failed" and job.error == "error: data: id column 'id' has duplicates"
    # A runtime that ended by itself is left for its TTL (so `kubectl logs` still works)…
    assert name in cluster.objects("jobs") and job.handle["state"] == "finished"
    assert launching.stop(str(job.id)) == "nothing"

    # …but a cancelled one is deleted with everything it owns.
    with transaction.atomic():
        job2 = start_ticket_run(job.ticket, attempt=2)
    launching.launch(str(job2.id))
    name2 = object_name(str(job2.id), "leader")
    assert name2 in cluster.objects("jobs")
    with django_capture_on_commit_callbacks(execute=True):
        cancel_job(Job.objects.get(pk=job2.pk), reason="stop")
    for plural in ("jobs", "secrets", "configmaps", "services"):
        assert name2 not in cluster.objects(plural)


@pytest.mark.django_db
def test_a_kubernetes_jobs_outputs_are_listed_and_served_from_the_outputs_claim(
    cluster, k8s_launcher, settings, monkeypatch, tmp_path
):
    """The pod writes to <claim>/<job>/<side>/; the web mounts the claim and the outputs API reads it there."""
    from apps.jobs import launch as launching
    from apps.jobs.outputs import get_output, job_outputs
    from apps.jobs.services import start_ticket_run
    from apps.workspaces.models import Membership

    settings.FEDSITE_LAUNCHER = "kubernetes"
    settings.FEDSITE_RUNTIME_ALLOW_INSECURE = True
    settings.FEDSITE_K8S_OUTPUT_PVC, settings.FEDSITE_K8S_OUTPUT_MOUNT = "fedsite-outputs", str(tmp_path / "claim")
    (tmp_path / "claim").mkdir()  # where the web mounts the claim
    monkeypatch.setattr(launching, "get_launcher", lambda name=None: k8s_launcher)
    monkeypatch.setattr("apps.peer.outbox._push", lambda partner_id: None)
    job = _make_job(settings, start_ticket_run)
    assert launching.launch(str(job.id)) == "started"
    job.refresh_from_db()
    pod_side = tmp_path / "claim" / str(job.id) / "leader"
    assert "output_dir" not in job.handle  # derived from the settings, the job and its side whenever it is read
    volume = cluster.objects("jobs")[job.handle["name"]]["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "output", "mountPath": "/var/fedsite/output", "subPath": f"{job.id}/leader"} in volume[
        "volumeMounts"
    ]
    assert job_outputs(job) == []  # nothing written yet
    (pod_side / "psi").mkdir(parents=True)
    content = b"id,label\nu1,1\nu2,0\n"
    (pod_side / "psi" / "aligned.csv").write_bytes(content)
    assert [o.name for o in job_outputs(job)] == ["aligned"] and get_output(job, "aligned").size_bytes == len(content)

    # Through the API, as a member of the job's workspace would download it.
    from django.contrib.auth import get_user_model
    from rest_framework.test import APIClient

    user = get_user_model().objects.create_user(username="kate", password="kate-password-1")
    Membership.objects.create(workspace=job.workspace, user=user, role="member")
    client = APIClient()
    client.force_authenticate(user)
    base = f"/api/v1/workspaces/{job.workspace.slug}/jobs/{job.id}/outputs/"
    listed = client.get(base)
    assert listed.status_code == 200, listed.content
    assert [o["name"] for o in listed.json()] == ["aligned"]
    got = client.get(f"{base}aligned/download/")
    assert got.status_code == 200 and b"".join(got.streaming_content) == content

    # A path stored on the job is not trusted: the folder is derived from the settings, the job and its side.
    other = tmp_path / "claim" / str(uuid.uuid4()) / "leader"
    (other / "score").mkdir(parents=True)
    (other / "score" / "scores.csv").write_text("id,score\nv1,0.9\n")
    job.handle = {**job.handle, "output_dir": str(other)}
    job.save(update_fields=["handle"])
    assert [o["name"] for o in client.get(base).json()] == ["aligned"]
    assert client.get(f"{base}scores/download/").status_code == 404

    # A pod that leaves a symlink to another job's folder (or /etc) in its own gets nothing through it.
    (pod_side / "score").symlink_to(other / "score")
    (pod_side / "psi" / "aligned.csv").unlink()
    (pod_side / "psi" / "aligned.csv").symlink_to("/etc/passwd")
    assert client.get(base).json() == []
    for name in ("aligned", "scores"):
        got = client.get(f"{base}{name}/download/")
        assert got.status_code == 404 and f"no output '{name}'" in got.json()["detail"], got.content

    # This installation cannot read the claim: a 404 saying why, not an empty list.
    settings.FEDSITE_K8S_OUTPUT_MOUNT = str(tmp_path / "not-mounted")
    for path in (base, f"{base}aligned/download/"):
        got = client.get(path)
        assert got.status_code == 404, got.content
        assert got.json()["detail"] == (
            f"job {job.id}'s outputs are not readable here: the outputs claim is not mounted at {tmp_path / 'not-mounted'}"
        )
    settings.FEDSITE_K8S_OUTPUT_MOUNT = ""
    got = client.get(base)
    assert got.status_code == 404 and "does not mount the runtime pods' outputs claim" in got.json()["detail"]


def _make_job(settings, start_ticket_run):
    from apps.datasets.models import Dataset
    from apps.partners.models import Partner
    from apps.tickets.models import Ticket
    from apps.workspaces.models import Workspace

    settings.FEDSITE_DATA_ROOTS = [Path("/srv/data")]
    ws = Workspace.objects.create(slug="acme-k8s", name="Acme")
    partner = Partner.objects.create(workspace=ws, name="beta", status="connected", endpoint="127.0.0.1:1")
    ds = Dataset.objects.create(
        workspace=ws,
        name="users",
        uri="/srv/data/acme-k8s/users.csv",  # inside the workspace's own folder
        format="csv",
        id_column="id",
        label_column="label",
        schema=[],
        row_count=2,
        checksum="0" * 64,
        size_bytes=10,
    )
    ticket = Ticket.objects.create(
        workspace=ws,
        partner=partner,
        name="t",
        kind="psi_vertical_nn",
        role="leader",
        is_proposer=True,
        local_dataset=ds,
        params={"psi": {}, "train": {"epochs": 1}},
        status="approved",
    )
    with transaction.atomic():
        return start_ticket_run(ticket)


def test_an_unreachable_api_is_transient_and_the_launch_task_retries(settings, monkeypatch, db):
    from kubernetes import client

    from apps.jobs import launch as launching
    from apps.jobs.launchers.base import TransientLaunchError
    from apps.jobs.models import Job
    from apps.jobs.services import start_ticket_run

    down = KubernetesLauncher(client.ApiClient(client.Configuration(host="http://127.0.0.1:9")))
    with pytest.raises(TransientLaunchError):
        down.start(make_spec("leader"))

    settings.FEDSITE_LAUNCHER = "kubernetes"
    settings.FEDSITE_RUNTIME_ALLOW_INSECURE = True
    monkeypatch.setattr(launching, "get_launcher", lambda name=None: down)
    monkeypatch.setattr("apps.peer.outbox._push", lambda partner_id: None)
    job = _make_job(settings, start_ticket_run)
    with pytest.raises(TransientLaunchError):
        launching.launch(str(job.id), may_retry=True)
    job.refresh_from_db()
    assert job.status == "pending" and job.handle == {}  # claim released for the retry
    assert launching.launch(str(job.id), may_retry=False) == "failed"  # the last attempt gives up
    job = Job.objects.get(pk=job.pk)
    assert job.status == "failed" and "stayed unavailable" in job.error


def test_in_cluster_auth_uses_the_service_account(tmp_path, monkeypatch, settings, tls_files):
    """In a pod (KUBERNETES_SERVICE_HOST set, no kubeconfig) the worker uses its service account token."""
    from kubernetes.config import incluster_config

    from apps.jobs.launchers import kubernetes as k8s

    token = tmp_path / "token"
    token.write_text("sa-token-123")
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(token))
    monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", tls_files["peer_ca_file"])
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "6443")
    settings.FEDSITE_K8S_KUBECONFIG = ""
    k8s._client = None
    try:
        cfg = KubernetesLauncher().api_client.configuration
        assert cfg.host == "https://127.0.0.1:6443"
        assert cfg.api_key["BearerToken"] == "bearer sa-token-123"  # re-read as the token rotates
        assert cfg.ssl_ca_cert == tls_files["peer_ca_file"]
    finally:
        k8s._client = None


def test_without_credentials_the_launch_error_says_so(tmp_path, monkeypatch, settings):
    from apps.jobs.launchers import kubernetes as k8s

    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    settings.FEDSITE_K8S_KUBECONFIG = str(tmp_path / "missing-kubeconfig")
    k8s._client = None
    try:
        with pytest.raises(LaunchError, match="no Kubernetes credentials"):
            KubernetesLauncher().api_client  # noqa: B018
    finally:
        k8s._client = None


@pytest.mark.parametrize("service_type", ["ClusterIP", "NodePort"])
def test_a_stream_leader_exposes_both_ports_and_runs_without_a_deadline(
    settings, tls_files, service_type, k8s_launcher
):
    """stream_join_train: the join's port and training's one above it; no activeDeadlineSeconds (long-running)."""
    from dataclasses import replace

    launcher = KubernetesLauncher(k8s_launcher.api_client, service_type=service_type)
    spec = replace(make_spec("leader", tls_files), port_count=2, timeout_s=0)
    job, *_rest, service = launcher.manifests(spec)
    for manifest in (job, service):
        validate_strict(manifest)
    assert "activeDeadlineSeconds" not in job["spec"]
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert [p["containerPort"] for p in container["ports"]] == [17042, 17043]
    assert [(p["name"], p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [
        ("grpc", 17042, 17042),
        ("grpc-1", 17043, 17043),
    ]
