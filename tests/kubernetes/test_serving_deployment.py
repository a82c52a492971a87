"""Long-running kinds (serving) on Kubernetes: a Deployment plus a Service, validated strictly and run
through the real `kubernetes` client against kmock's emulator (the tests play the kubelet)."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import pytest
from kubernetes import client

from apps.jobs.launchers.base import FAILED, MISSING, RUNNING, RuntimeSpec
from apps.jobs.launchers.kubernetes import SERVING_API_PORT, KubernetesLauncher, object_name
from tests.kubernetes.conftest import NAMESPACE
from tests.kubernetes.test_kubernetes_launcher import validate_strict

pytestmark = pytest.mark.kubernetes


def serve_spec(role: str = "leader", tls_files: dict | None = None) -> RuntimeSpec:
    job_id = str(uuid.uuid4())
    launcher_api = (f"0.0.0.0:{SERVING_API_PORT}", f"{object_name(job_id, role)}.{NAMESPACE}.svc:{SERVING_API_PORT}")
    config: dict[str, Any] = {
        "version": 1,
        "job_id": job_id,
        "role": role,
        "data": {"path": "/srv/data/acme/users.csv", "id_column": "id"},
        "steps": ["serve"],
        "serve": {"model_dir": "/var/fedsite/models/x", "api_token": "serving-s3cret", "deadline_ms": 200.0},
        "report": {"url": f"http://web.fedsite:8000/api/v1/runtime/jobs/{job_id}/report", "token": "s3cret-token"},
        "timeout_s": 315_360_000,
    }
    if role == "leader":
        config["listen_address"] = "0.0.0.0:17043"
        config["serve"].update(api_address=launcher_api[0], api_advertise=launcher_api[1])
    else:
        config["peer_address"] = "fs-x-leader.fedsite-jobs.svc:17043"
    return RuntimeSpec(
        job_id=job_id,
        side=role,
        config=config,
        tls_files=tls_files,
        port=17043 if role == "leader" else None,
        timeout_s=0,
        keep_running=True,
        labels={"workspace": "acme", "ticket": str(uuid.uuid4())},
    )


@pytest.mark.parametrize("role", ["leader", "follower"])
@pytest.mark.parametrize("service_type", ["ClusterIP", "NodePort"])
def test_serving_manifests_validate_strictly(k8s_launcher, tls_files, role, service_type) -> None:
    launcher = KubernetesLauncher(k8s_launcher.api_client, service_type=service_type)
    spec = serve_spec(role, tls_files)
    manifests = launcher.manifests(spec)
    kinds = [m["kind"] for m in manifests]
    assert kinds == (["Deployment", "Secret", "ConfigMap", "Service"] if role == "leader" else kinds[:3])
    assert kinds[:3] == ["Deployment", "Secret", "ConfigMap"]
    for manifest in manifests:
        validate_strict(manifest)
    dep = manifests[0]
    assert dep["apiVersion"] == "apps/v1" and dep["spec"]["replicas"] == 0  # scaled up after its Secret exists
    assert "activeDeadlineSeconds" not in json.dumps(dep)  # no deadline: it runs until stopped
    assert dep["spec"]["selector"]["matchLabels"] == {"fedsite.io/job-id": spec.job_id, "fedsite.io/side": role}
    pod = dep["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Always" and pod["securityContext"]["runAsNonRoot"] is True
    for child in manifests[1:]:
        assert child["metadata"]["ownerReferences"][0]["kind"] == "Deployment"
        assert child["metadata"]["ownerReferences"][0]["apiVersion"] == "apps/v1"
    redacted = json.loads(manifests[2]["data"]["config.json"])
    assert redacted["serve"]["api_token"] == "<in the Secret>" and "s3cret" not in manifests[2]["data"]["config.json"]
    if role == "leader":
        ports = {p["name"]: p["port"] for p in manifests[3]["spec"]["ports"]}
        assert ports == {"grpc": 17043, "api": SERVING_API_PORT}
        container_ports = {p["name"] for p in pod["containers"][0]["ports"]}
        assert container_ports == {"grpc", "api"}


def _run_pod(cluster, handle: dict[str, Any], waiting: str = "", log: str = "") -> str:
    """The Deployment's controller and kubelet: a pod with the template's labels (and a waiting state)."""
    core = client.CoreV1Api(cluster.api_client())
    dep = client.AppsV1Api(cluster.api_client()).read_namespaced_deployment(handle["name"], handle["namespace"])
    name = f"{handle['name']}-{uuid.uuid4().hex[:5]}"
    core.create_namespaced_pod(
        handle["namespace"],
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "labels": dict(dep.spec.template.metadata.labels)},
            "spec": client.ApiClient().sanitize_for_serialization(dep.spec.template.spec),
        },
    )
    cluster.logs[name] = log
    if waiting:
        status = {"name": "runtime", "image": "x", "imageID": "", "ready": False, "restartCount": 5}
        core.patch_namespaced_pod_status(
            name,
            handle["namespace"],
            {"status": {"containerStatuses": [{**status, "state": {"waiting": {"reason": waiting}}}]}},
        )
    return name


def test_a_serving_deployment_runs_until_stopped(cluster, k8s_launcher, tls_files) -> None:
    spec = serve_spec("leader", tls_files)
    handle = k8s_launcher.start(spec)
    name = object_name(spec.job_id, "leader")
    assert handle["kind"] == "Deployment" and handle["uid"] and handle["service"]
    dep = cluster.objects("deployments")[name]
    assert dep["spec"]["replicas"] == 1  # scaled up once the Secret, ConfigMap and Service existed
    for plural in ("secrets", "configmaps", "services"):
        owner = cluster.objects(plural)[name]["metadata"]["ownerReferences"][0]
        assert owner == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": name,
            "uid": handle["uid"],
            "blockOwnerDeletion": True,
        }
    config = json.loads(base64.b64decode(cluster.objects("secrets")[name]["data"]["config.json"]))
    assert config["serve"]["api_token"] == "serving-s3cret"
    assert config["serve"]["api_advertise"] == f"{name}.{NAMESPACE}.svc:{SERVING_API_PORT}"
    assert k8s_launcher.serving_api_address(spec.job_id, "leader", 17043) == (
        f"0.0.0.0:{SERVING_API_PORT}",
        f"{name}.{NAMESPACE}.svc:{SERVING_API_PORT}",
    )

    assert k8s_launcher.poll(handle).state == RUNNING
    _run_pod(cluster, handle, log="step serve: starting as leader\nserve: 590 rows indexed\n")
    assert k8s_launcher.poll(handle).state == RUNNING  # a server never "completes"
    assert k8s_launcher.watch(handle, timeout_s=1).state == RUNNING
    assert "rows indexed" in k8s_launcher.log_tail(handle)

    k8s_launcher.stop(handle)  # a cancel on either side
    for plural in ("deployments", "secrets", "configmaps", "services"):
        assert name not in cluster.objects(plural), plural
    assert k8s_launcher.poll(handle).state == MISSING
    k8s_launcher.stop(handle)  # idempotent


def test_a_crashing_serving_runtime_fails_with_its_error_line(cluster, k8s_launcher) -> None:
    handle = k8s_launcher.start(serve_spec("follower"))
    assert not handle["service"]
    _run_pod(
        cluster, handle, waiting="CrashLoopBackOff", log="error: serve.model_dir: /x is not a trained Fedsite model\n"
    )
    state = k8s_launcher.poll(handle)
    assert state.state == FAILED and "serve.model_dir" in state.error
    k8s_launcher.stop(handle)
    assert object_name(handle["job_id"], "follower") not in cluster.objects("deployments")
