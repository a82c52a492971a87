"""deploy/kubernetes: every example manifest validates strictly, and the worker's Role
allows exactly what the launcher does against the (emulated) API."""

from __future__ import annotations

from pathlib import Path

import kmock
import kubernetes_validate
import pytest
import yaml

from tests.kubernetes.test_kubernetes_launcher import K8S_VERSION, make_spec, validate_strict

pytestmark = pytest.mark.kubernetes

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
VERBS = {
    kmock.action.CREATE: "create",
    kmock.action.FETCH: "get",
    kmock.action.LIST: "list",
    kmock.action.WATCH: "watch",
    kmock.action.UPDATE: "patch",
    kmock.action.DELETE: "delete",
}


def documents() -> list[tuple[str, dict]]:
    out = []
    for path in sorted(DEPLOY.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                out.append((path.name, doc))
    return out


def test_there_are_manifests_for_every_piece():
    kinds = {(d["kind"], d["metadata"]["name"]) for _, d in documents()}
    for piece in ("fedsite-web", "fedsite-peer", "fedsite-worker", "fedsite-beat", "fedsite-redis"):
        assert ("Deployment", piece) in kinds
    assert ("StatefulSet", "fedsite-postgres") in kinds
    assert ("Role", "fedsite-launcher") in kinds and ("RoleBinding", "fedsite-worker-launcher") in kinds
    listed = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == sorted(p.name for p in DEPLOY.glob("*.yaml") if p.name != "kustomization.yaml")


@pytest.mark.parametrize("name, doc", documents(), ids=lambda v: v if isinstance(v, str) else v["metadata"]["name"])
def test_each_manifest_validates_strictly(name, doc):
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_only_the_worker_can_reach_the_api():
    for _, doc in documents():
        if doc["kind"] in ("Deployment", "StatefulSet"):
            pod = doc["spec"]["template"]["spec"]
            if doc["metadata"]["name"] == "fedsite-worker":
                assert pod["serviceAccountName"] == "fedsite-worker"
            else:
                assert pod.get("automountServiceAccountToken") is False, doc["metadata"]["name"]


def role_rules() -> set[tuple[str, str]]:
    role = next(d for _, d in documents() if d["kind"] == "Role" and d["metadata"]["name"] == "fedsite-launcher")
    allowed = set()
    for rule in role["rules"]:
        for resource in rule["resources"]:
            for verb in rule["verbs"]:
                allowed.add((resource, verb))
    return allowed


def test_the_role_allows_every_call_the_launcher_makes(cluster, k8s_launcher, tls_files):
    """Run a whole lifecycle, then check each API request the launcher sent against the Role."""
    emulator = cluster.emulator
    ours: list = []

    def launcher_calls(fn, *args, **kwargs):
        start = len(list(emulator._requests))
        try:
            return fn(*args, **kwargs)
        finally:
            ours.extend(list(emulator._requests)[start:])

    handle = launcher_calls(k8s_launcher.start, make_spec("leader", tls_files))
    cluster.run_pod(handle, log="error: x\n")
    launcher_calls(k8s_launcher.poll, handle)
    launcher_calls(k8s_launcher.log_tail, handle)
    cluster.set_job_status(handle, {"succeeded": 1})
    launcher_calls(k8s_launcher.watch, handle, 5)
    launcher_calls(k8s_launcher.stop, handle)

    allowed = role_rules()
    used = set()
    for req in ours:
        resource = req.resource.plural + (f"/{req.subresource}" if req.subresource else "")
        used.add((resource, VERBS[req.action]))
    assert used, "no requests recorded"
    assert used <= allowed, used - allowed
    assert {("jobs", "create"), ("jobs", "patch"), ("pods/log", "get"), ("jobs", "delete")} <= used


def test_runtime_manifests_fit_the_restricted_namespace(k8s_launcher):
    """The jobs namespace enforces the `restricted` Pod Security level; the runtime pod must meet it."""
    job = k8s_launcher.job_manifest(make_spec("leader"))
    validate_strict(job)
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    namespaces = {d["metadata"]["name"]: d for _, d in documents() if d["kind"] == "Namespace"}
    assert namespaces["fedsite-jobs"]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_runtimes_report_to_the_web_service_and_the_public_url_is_https():
    """Production mode: the public name is HTTPS (through the ingress); runtimes post to the in-cluster Service,
    on a path the web answers by Service name without redirecting (tests/kubernetes/test_production_web.py)."""
    from urllib.parse import urlsplit

    docs = {(d["kind"], d["metadata"]["name"]): d for _, d in documents()}
    config = docs[("ConfigMap", "fedsite-config")]["data"]
    service = docs[("Service", "fedsite-web")]
    assert config["FEDSITE_ENV"] == "production"
    public = urlsplit(config["FEDSITE_PUBLIC_URL"])
    assert public.scheme == "https" and public.hostname in config["ALLOWED_HOSTS"].split(",")
    report = urlsplit(config["FEDSITE_RUNTIME_REPORT_URL"])
    meta = service["metadata"]
    assert report.hostname == f"{meta['name']}.{meta['namespace']}.svc"
    assert report.port in [p["port"] for p in service["spec"]["ports"]]


def test_workers_read_the_runtime_outputs_where_the_launcher_expects_them():
    """A runtime pod writes its result file to the outputs claim; the workers mount the same claim at
    FEDSITE_K8S_OUTPUT_MOUNT, so a result whose last report was lost is still read (launch.read_result)."""
    docs = {(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]): d for _, d in documents()}
    config = docs[("ConfigMap", "fedsite", "fedsite-config")]["data"]
    claim, mount = config["FEDSITE_K8S_OUTPUT_PVC"], config["FEDSITE_K8S_OUTPUT_MOUNT"]
    assert ("PersistentVolumeClaim", config["FEDSITE_K8S_NAMESPACE"], claim) in docs  # where the pods write
    assert ("PersistentVolumeClaim", "fedsite", claim) in docs  # where the workers read
    # The workers read results there; the web lists and serves job outputs from there (apps.jobs.outputs).
    for deployment in ("fedsite-worker", "fedsite-web"):
        pod = docs[("Deployment", "fedsite", deployment)]["spec"]["template"]["spec"]
        volume = next(v["name"] for v in pod["volumes"] if v.get("persistentVolumeClaim", {}).get("claimName") == claim)
        mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
        assert mounts[volume]["mountPath"] == mount and mounts[volume]["readOnly"], deployment
