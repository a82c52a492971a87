"""Partitioned PSI on Kubernetes (issue 16): one Indexed Job per side, a headless Service, kmock lifecycle."""

from __future__ import annotations

import base64
import json
import uuid

import pytest
from kubernetes import client

from apps.jobs.launchers.base import FAILED, MISSING, RUNNING, SUCCEEDED, LaunchError, RuntimeSpec
from apps.jobs.launchers.kubernetes import INDEX_ANNOTATION, KubernetesLauncher, object_name
from tests.kubernetes.conftest import NAMESPACE
from tests.kubernetes.test_kubernetes_launcher import validate_strict

pytestmark = pytest.mark.kubernetes
KEY = "ab" * 32


def partitioned_spec(role: str, tls_files: dict | None, partitions: int = 4, previous: list[str] | None = None):
    job_id = str(uuid.uuid4())
    leader = object_name(job_id, "leader")
    config = {
        "version": 1,
        "job_id": job_id,
        "role": role,
        "data": {"path": "/srv/data/acme/users.csv", "id_column": "id"},
        "steps": ["psi"],
        "psi": {"protocol": "auto", "partitions": partitions, "partition": {"ports": "same"}},
        "report": {"url": f"http://web.fedsite:8000/api/v1/runtime/jobs/{job_id}/report", "token": "tok"},
        "timeout_s": 600,
    }
    if role == "leader":
        config["listen_address"] = "0.0.0.0:17042"
        config["psi"]["partition"]["key"] = KEY
    else:
        config["peer_address"] = f"{leader}-{{partition}}.{leader}.{NAMESPACE}.svc:17042"
    return RuntimeSpec(
        job_id=job_id,
        side=role,
        config=config,
        tls_files=tls_files,
        port=17042 if role == "leader" else None,
        timeout_s=600,
        labels={"workspace": "acme", "ticket": str(uuid.uuid4())},
        partitions=partitions,
        previous_job_ids=previous or [],
    )


@pytest.fixture
def outputs_claim(settings):
    settings.FEDSITE_K8S_OUTPUT_PVC = "fedsite-jobs"
    settings.FEDSITE_K8S_PSI_PARALLELISM = 2


@pytest.mark.parametrize("role", ["leader", "follower"])
def test_indexed_job_and_headless_service_validate_strictly(k8s_launcher, tls_files, outputs_claim, role):
    prev = [str(uuid.uuid4())]
    spec = partitioned_spec(role, tls_files, previous=prev)
    manifests = k8s_launcher.manifests(spec)
    for manifest in manifests:
        validate_strict(manifest)
    job = manifests[0]["spec"]
    assert job["completionMode"] == "Indexed" and job["completions"] == 4 and job["parallelism"] == 2
    assert job["backoffLimit"] == 0  # one failed partition fails the Job
    pod = job["template"]["spec"]
    # The pods' subdomain is the leader's headless Service: pod i is <job>-<i>.<service>.
    assert pod["subdomain"] == object_name(spec.job_id, "leader")
    mounts = {m["mountPath"]: m for m in pod["containers"][0]["volumeMounts"]}
    assert mounts[f"/var/fedsite/previous/{prev[0]}"]["subPath"] == f"{prev[0]}/{role}"
    assert mounts[f"/var/fedsite/previous/{prev[0]}"]["readOnly"] is True
    config = json.loads(base64.b64decode(manifests[1]["data"]["config.json"]))
    partition = config["psi"]["partition"]
    assert "index" not in partition  # each pod reads JOB_COMPLETION_INDEX
    assert partition["ports"] == "same" and partition["reuse_from"] == [f"/var/fedsite/previous/{prev[0]}"]
    redacted = json.loads(manifests[2]["data"]["config.json"])
    if role == "leader":
        assert partition["key"] == KEY and redacted["psi"]["partition"]["key"] == "<in the Secret>"
        service = manifests[3]["spec"]
        assert service["clusterIP"] == "None" and service["publishNotReadyAddresses"] is True
        assert [m["kind"] for m in manifests] == ["Job", "Secret", "ConfigMap", "Service"]
    else:
        assert "key" not in partition
    host = k8s_launcher.partition_host(spec.job_id, "leader", 17042)
    name = object_name(spec.job_id, "leader")
    assert host == f"{name}-{{partition}}.{name}.{NAMESPACE}.svc:17042"


def test_partitioned_needs_the_outputs_claim_and_cluster_dns(k8s_launcher, settings):
    settings.FEDSITE_K8S_OUTPUT_PVC = ""
    with pytest.raises(LaunchError, match="FEDSITE_K8S_OUTPUT_PVC"):
        k8s_launcher.job_manifest(partitioned_spec("leader", None))
    nodeport = KubernetesLauncher(k8s_launcher.api_client, service_type="NodePort")
    with pytest.raises(LaunchError, match="ClusterIP"):
        nodeport.partition_host(str(uuid.uuid4()), "leader", 17042)


def run_index(cluster, handle: dict, index: int, phase: str, log: str) -> str:
    """What the Job controller and kubelet do for index i: pod <job>-<i>-xxxxx with the index annotation."""
    core = client.CoreV1Api(cluster.api_client())
    job = client.BatchV1Api(cluster.api_client()).read_namespaced_job(handle["name"], handle["namespace"])
    name = f"{handle['name']}-{index}-{uuid.uuid4().hex[:5]}"
    labels = {**job.spec.template.metadata.labels, "job-name": handle["name"], INDEX_ANNOTATION: str(index)}
    spec = client.ApiClient().sanitize_for_serialization(job.spec.template.spec)
    spec["hostname"] = f"{handle['name']}-{index}"
    core.create_namespaced_pod(
        handle["namespace"],
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "labels": labels, "annotations": {INDEX_ANNOTATION: str(index)}},
            "spec": spec,
        },
    )
    core.patch_namespaced_pod_status(name, handle["namespace"], {"status": {"phase": phase}})
    cluster.logs[name] = log
    return name


def test_lifecycle_status_per_index_failure_of_one_index_and_delete(cluster, k8s_launcher, tls_files, outputs_claim):
    spec = partitioned_spec("leader", tls_files)
    handle = k8s_launcher.start(spec)
    name = handle["name"]
    assert handle["partition_count"] == 4
    job = cluster.objects("jobs")[name]
    assert job["spec"]["completionMode"] == "Indexed" and job["spec"]["suspend"] is False
    assert cluster.objects("services")[name]["spec"]["clusterIP"] == "None"

    for i in range(4):
        run_index(cluster, handle, i, "Running", f"step psi: starting as leader (partition {i})\n")
    assert k8s_launcher.poll(handle).state == RUNNING
    # Index 0 done, the others still running: one succeeded pod is not the whole Job.
    run_index(cluster, handle, 0, "Succeeded", "step psi: done\n")
    cluster.set_job_status(handle, {"active": 3, "succeeded": 1, "completedIndexes": "0"})
    assert k8s_launcher.poll(handle).state == RUNNING

    run_index(cluster, handle, 2, "Failed", "error: partition 2 of 4: data.id_column: duplicate id 'x'\n")
    cluster.set_job_status(
        handle,
        {
            "active": 0,
            "succeeded": 1,
            "failed": 1,
            "completedIndexes": "0",
            "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}],
        },
    )
    state = k8s_launcher.watch(handle, timeout_s=10)
    assert state.state == FAILED
    assert state.error == "error: partition 2 of 4: data.id_column: duplicate id 'x'"

    k8s_launcher.stop(handle)
    for plural in ("jobs", "secrets", "configmaps", "services"):
        assert name not in cluster.objects(plural), plural
    assert k8s_launcher.poll(handle).state == MISSING


def test_all_indexes_complete(cluster, k8s_launcher, outputs_claim):
    handle = k8s_launcher.start(partitioned_spec("follower", None, partitions=2))
    assert not handle["service"]
    cluster.set_job_status(handle, {"active": 1, "succeeded": 1, "completedIndexes": "1"})
    assert k8s_launcher.poll(handle).state == RUNNING
    cluster.set_job_status(handle, {"active": 0, "succeeded": 2, "completedIndexes": "0-1"})
    assert k8s_launcher.poll(handle).state == SUCCEEDED
    k8s_launcher.stop(handle)


def test_a_failed_index_without_a_partition_in_its_log_is_named(cluster, k8s_launcher, outputs_claim):
    handle = k8s_launcher.start(partitioned_spec("follower", None, partitions=3))
    run_index(cluster, handle, 1, "Failed", "Killed\n")
    cluster.set_job_status(
        handle, {"failed": 1, "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]}
    )
    state = k8s_launcher.poll(handle)
    assert state.state == FAILED and state.error == "partition 1 of 3: BackoffLimitExceeded"
    k8s_launcher.stop(handle)
