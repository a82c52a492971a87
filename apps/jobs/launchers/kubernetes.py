"""Kubernetes backend: per job and side a batch/v1 Job, its Secret and ConfigMap, and (leader) a Service.

Objects are named `fs-<job uuid>-<side>` in FEDSITE_K8S_NAMESPACE and labelled
with the job UUID. The Job is created suspended; the Secret (runtime config with
its per-job report token, certificate, key, partner CA), the ConfigMap (the same
config with the token redacted, for operators) and the Service carry owner
references to it, so deleting the Job garbage-collects the rest; then the Job is
resumed. `activeDeadlineSeconds`, `backoffLimit` and `ttlSecondsAfterFinished`
bound its life; image, resources and security context come from settings.

A service kind (serving: `RuntimeSpec.keep_running`) runs as an apps/v1 Deployment
instead (one replica, created at zero replicas and scaled to one once its Secret,
ConfigMap and Service exist; no deadline; the pod restarts if it dies), owning the
same objects; the leader's Service also exposes the serving API port its web calls.

Auth: in-cluster service account when running in a pod (KUBERNETES_SERVICE_HOST),
else a kubeconfig (FEDSITE_K8S_KUBECONFIG / FEDSITE_K8S_CONTEXT, or the default).
"""

from __future__ import annotations

import base64
import copy
import json
import logging
import os
import re
import threading
from pathlib import Path
from typing import Any

from django.conf import settings

from apps.jobs.launchers.base import (
    FAILED,
    MISSING,
    RESULT_FILE,
    RUNNING,
    SUCCEEDED,
    Launcher,
    LaunchError,
    RuntimeSpec,
    RuntimeState,
    TransientLaunchError,
    error_summary,
    read_result_file,
)

log = logging.getLogger(__name__)

CONFIG_DIR = "/etc/fedsite/job"
OUTPUT_DIR = "/var/fedsite/output"
PREVIOUS_DIR = "/var/fedsite/previous"  # partitioned PSI: earlier attempts' outputs, read-only
INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
CONTAINER = "runtime"
LABEL_JOB = "fedsite.io/job-id"
LABEL_SIDE = "fedsite.io/side"
LABEL_WORKSPACE = "fedsite.io/workspace"
LABEL_TICKET = "fedsite.io/ticket-id"
# Pod states that will not fix themselves before the deadline: fail the job now.
STUCK_REASONS = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError"}
# A Deployment restarts a runtime that exits; one that keeps failing is given up on.
STUCK_SERVICE = {*STUCK_REASONS, "CrashLoopBackOff"}
# Where a leader's serving runtime listens for its installation's web process, in its pod.
SERVING_API_PORT = 8081

_client_lock = threading.Lock()
_client: Any = None


def _s(name: str, default: Any) -> Any:
    return getattr(settings, name, default)


_NAME_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")  # a job id or side: one path component, never ".."


def mounted_output_dir(job_id: str, side: str) -> Path | None:
    """Where this installation reads a runtime pod's output folder: the pod writes to <claim>/<job>/<side>/
    (its volume's subPath), and the workers and the web mount the same claim at FEDSITE_K8S_OUTPUT_MOUNT."""
    mount = _s("FEDSITE_K8S_OUTPUT_MOUNT", "")
    if not mount or not _s("FEDSITE_K8S_OUTPUT_PVC", "") or not _NAME_PART.match(job_id) or not _NAME_PART.match(side):
        return None
    return Path(mount) / job_id / side


def load_api_client() -> Any:
    """An ApiClient from the in-cluster service account or a kubeconfig (cached per process)."""
    global _client
    with _client_lock:
        if _client is None:
            from kubernetes import client, config

            cfg = client.Configuration()
            kubeconfig = _s("FEDSITE_K8S_KUBECONFIG", "")
            try:
                if os.environ.get("KUBERNETES_SERVICE_HOST") and not kubeconfig:
                    config.load_incluster_config(client_configuration=cfg)
                else:
                    config.load_kube_config(
                        config_file=kubeconfig or None,
                        context=_s("FEDSITE_K8S_CONTEXT", "") or None,
                        client_configuration=cfg,
                    )
            except (config.ConfigException, OSError) as exc:
                raise LaunchError(f"no Kubernetes credentials: {exc}") from exc
            _client = client.ApiClient(cfg)
        return _client


def object_name(job_id: str, side: str) -> str:
    return f"fs-{job_id}-{side}"


def _port_name(i: int) -> str:
    """`grpc` for the first port (as before), `grpc-1`… for the others."""
    return "grpc" if i == 0 else f"grpc-{i}"


def _b64(data: bytes | str) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.b64encode(raw).decode()


def _api_error(exc: Exception) -> str:
    body = getattr(exc, "body", None)
    if body:
        try:
            return str(json.loads(body).get("message") or body)[:500]
        except (ValueError, AttributeError):
            return str(body)[:500]
    return str(getattr(exc, "reason", "") or exc)[:500]


class KubernetesLauncher(Launcher):
    name = "kubernetes"

    def __init__(
        self,
        api_client: Any = None,
        *,
        namespace: str | None = None,
        image: str | None = None,
        service_type: str | None = None,
    ) -> None:
        self._api_client = api_client
        self.namespace = namespace or settings.FEDSITE_K8S_NAMESPACE
        self.image = image or settings.FEDSITE_K8S_IMAGE
        self.service_type = service_type or _s("FEDSITE_K8S_SERVICE_TYPE", "ClusterIP")
        if self.service_type not in ("ClusterIP", "NodePort"):
            raise LaunchError(f"FEDSITE_K8S_SERVICE_TYPE={self.service_type!r}: ClusterIP or NodePort")

    @classmethod
    def from_settings(cls) -> KubernetesLauncher:
        return cls()

    # -- clients ------------------------------------------------------------
    @property
    def api_client(self) -> Any:
        if self._api_client is None:
            self._api_client = load_api_client()
        return self._api_client

    @property
    def batch(self) -> Any:
        from kubernetes import client

        return client.BatchV1Api(self.api_client)

    @property
    def core(self) -> Any:
        from kubernetes import client

        return client.CoreV1Api(self.api_client)

    # -- addresses ----------------------------------------------------------
    def runtime_host(self, job_id: str, side: str, port: int) -> str:
        if self.service_type == "NodePort":
            return f"{settings.FEDSITE_RUNTIME_HOST}:{port}"
        domain = _s("FEDSITE_K8S_SERVICE_DOMAIN", "svc")
        return f"{object_name(job_id, side)}.{self.namespace}.{domain}:{port}"

    def listen_address(self, port: int) -> str:
        return f"0.0.0.0:{port}"

    def serving_api_address(self, job_id: str, side: str, port: int | None) -> tuple[str, str]:
        domain = _s("FEDSITE_K8S_SERVICE_DOMAIN", "svc")
        return (
            f"0.0.0.0:{SERVING_API_PORT}",
            f"{object_name(job_id, side)}.{self.namespace}.{domain}:{SERVING_API_PORT}",
        )

    # Partitioned PSI: one Indexed Job per side; pod i of the leader is `<job>-<i>.<service>`
    # (the headless Service is the pods' subdomain), every pod on the same port.
    partition_ports = "same"

    def partition_host(self, job_id: str, side: str, port: int) -> str:
        if self.service_type == "NodePort":
            raise LaunchError("psi.partitions > 1 needs FEDSITE_K8S_SERVICE_TYPE=ClusterIP (pods reached by name)")
        name = object_name(job_id, side)
        domain = _s("FEDSITE_K8S_SERVICE_DOMAIN", "svc")
        return f"{name}-{{partition}}.{name}.{self.namespace}.{domain}:{port}"

    # -- manifests (pure; validated in tests) --------------------------------
    def labels(self, spec: RuntimeSpec) -> dict[str, str]:
        out = {
            "app.kubernetes.io/name": "fedsite-runtime",
            "app.kubernetes.io/component": "runtime",
            "app.kubernetes.io/managed-by": "fedsite",
            LABEL_JOB: spec.job_id,
            LABEL_SIDE: spec.side,
        }
        if spec.labels.get("workspace"):
            out[LABEL_WORKSPACE] = spec.labels["workspace"][:63]
        if spec.labels.get("ticket"):
            out[LABEL_TICKET] = spec.labels["ticket"]
        return out

    def pod_config(self, spec: RuntimeSpec) -> dict[str, Any]:
        """The config as the runtime sees it inside the pod."""
        config = {**spec.config, "output_dir": OUTPUT_DIR}
        if spec.tls_files:
            config["tls"] = {
                "cert_file": f"{CONFIG_DIR}/tls.crt",
                "key_file": f"{CONFIG_DIR}/tls.key",
                "peer_ca_file": f"{CONFIG_DIR}/ca.crt",
            }
        else:
            config["tls"] = None
        if spec.partitions > 1:
            psi = dict(config.get("psi") or {})
            reuse = [f"{PREVIOUS_DIR}/{prev}" for prev in self._previous(spec)]
            # No index: each pod of the Indexed Job reads JOB_COMPLETION_INDEX.
            psi["partition"] = {**(psi.get("partition") or {}), "ports": "same", "reuse_from": reuse}
            config["psi"] = psi
        return config

    def _previous(self, spec: RuntimeSpec) -> list[str]:
        """Earlier attempts whose outputs the pods can see (on the outputs claim; at most 3)."""
        return spec.previous_job_ids[:3] if _s("FEDSITE_K8S_OUTPUT_PVC", "") else []

    def resources(self) -> dict[str, Any]:
        return {
            "requests": {
                "cpu": str(_s("FEDSITE_K8S_CPU_REQUEST", "500m")),
                "memory": str(_s("FEDSITE_K8S_MEMORY_REQUEST", "1Gi")),
            },
            "limits": {
                "cpu": str(_s("FEDSITE_K8S_CPU_LIMIT", "2")),
                "memory": str(_s("FEDSITE_K8S_MEMORY_LIMIT", "4Gi")),
            },
        }

    def pod_spec(self, spec: RuntimeSpec) -> dict[str, Any]:
        name = object_name(spec.job_id, spec.side)
        user = int(_s("FEDSITE_K8S_RUN_AS_USER", 10001))
        container: dict[str, Any] = {
            "name": CONTAINER,
            "image": self.image,
            "imagePullPolicy": _s("FEDSITE_K8S_IMAGE_PULL_POLICY", "IfNotPresent"),
            "command": ["python", "-m", "runtime", "run", "--config", f"{CONFIG_DIR}/config.json"],
            "env": [{"name": "PYTHONUNBUFFERED", "value": "1"}, {"name": "HOME", "value": "/tmp"}],  # noqa: S108 - the pod's own emptyDir
            "resources": self.resources(),
            "securityContext": {
                "allowPrivilegeEscalation": False,
                "capabilities": {"drop": ["ALL"]},
                "readOnlyRootFilesystem": True,
            },
            "volumeMounts": [
                {"name": "job", "mountPath": CONFIG_DIR, "readOnly": True},
                {"name": "output", "mountPath": OUTPUT_DIR},
                {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 - the pod's own scratch volume
            ],
        }
        if spec.port:
            container["ports"] = [
                {"name": _port_name(i), "containerPort": spec.port + i, "protocol": "TCP"}
                for i in range(spec.port_count)
            ]
            if self._serves_api(spec):
                container["ports"].append({"name": "api", "containerPort": SERVING_API_PORT, "protocol": "TCP"})
        volumes: list[dict[str, Any]] = [
            {"name": "job", "secret": {"secretName": name, "defaultMode": 0o440}},
            {"name": "tmp", "emptyDir": {}},
        ]
        outputs_pvc = _s("FEDSITE_K8S_OUTPUT_PVC", "")
        if outputs_pvc:
            volumes.append({"name": "output", "persistentVolumeClaim": {"claimName": outputs_pvc}})
            container["volumeMounts"][1]["subPath"] = f"{spec.job_id}/{spec.side}"
        else:
            volumes.append({"name": "output", "emptyDir": {}})
        data_pvc = _s("FEDSITE_K8S_DATA_PVC", "")
        if data_pvc:
            roots = list(getattr(settings, "FEDSITE_DATA_ROOTS", []) or ["/data"])
            mount = str(_s("FEDSITE_K8S_DATA_MOUNT", "") or roots[0]).rstrip("/")
            slug = spec.labels["workspace"]
            volumes.append({"name": "data", "persistentVolumeClaim": {"claimName": data_pvc, "readOnly": True}})
            # Only the workspace's own folder of the claim is in the pod: other tenants' files are not there at all.
            container["volumeMounts"].append(
                {"name": "data", "mountPath": f"{mount}/{slug}", "subPath": slug, "readOnly": True}
            )
        pod_spec: dict[str, Any] = {
            "restartPolicy": "Always" if spec.keep_running else "Never",
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": user,
                "runAsGroup": user,
                "fsGroup": user,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [container],
            "volumes": volumes,
        }
        account = _s("FEDSITE_K8S_RUNTIME_SERVICE_ACCOUNT", "")
        if account:
            pod_spec["serviceAccountName"] = account
        pull_secret = _s("FEDSITE_K8S_IMAGE_PULL_SECRET", "")
        if pull_secret:
            pod_spec["imagePullSecrets"] = [{"name": pull_secret}]
        return pod_spec

    @staticmethod
    def _serves_api(spec: RuntimeSpec) -> bool:
        return bool(spec.port) and isinstance(spec.config.get("serve"), dict)

    def job_manifest(self, spec: RuntimeSpec) -> dict[str, Any]:
        """The runtime's object: a batch/v1 Job, or for a service kind an apps/v1 Deployment."""
        if spec.keep_running:
            return self.deployment_manifest(spec)
        name = object_name(spec.job_id, spec.side)
        labels = self.labels(spec)
        pod_spec = self.pod_spec(spec)
        manifest: dict[str, Any] = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": name, "namespace": self.namespace, "labels": labels},
            "spec": {
                "suspend": True,
                "backoffLimit": int(_s("FEDSITE_K8S_BACKOFF_LIMIT", 0)),
                **({"activeDeadlineSeconds": int(spec.timeout_s)} if spec.timeout_s else {}),
                "ttlSecondsAfterFinished": int(_s("FEDSITE_K8S_TTL_AFTER_FINISHED_S", 3600)),
                "template": {"metadata": {"labels": labels}, "spec": pod_spec},
            },
        }
        if spec.partitions > 1:
            self._make_indexed(manifest, spec)
        return manifest

    def _make_indexed(self, manifest: dict[str, Any], spec: RuntimeSpec) -> None:
        """Partitioned PSI: an Indexed Job, pod i runs partition i; Kubernetes schedules them.

        The pods' subdomain is the side's headless Service, so the leader's pod i is
        ``<job>-<i>.<service>``. Every pod writes its part to the outputs claim (the last
        one merges them), and sees the earlier attempts' outputs there read-only.
        """
        if not _s("FEDSITE_K8S_OUTPUT_PVC", ""):
            raise LaunchError("psi.partitions > 1 on Kubernetes needs FEDSITE_K8S_OUTPUT_PVC (the pods merge there)")
        parallelism = int(_s("FEDSITE_K8S_PSI_PARALLELISM", 0) or spec.partitions)
        job_spec = manifest["spec"]
        job_spec["completionMode"] = "Indexed"
        job_spec["completions"] = spec.partitions
        job_spec["parallelism"] = max(1, min(parallelism, spec.partitions))
        pod_spec = job_spec["template"]["spec"]
        pod_spec["subdomain"] = object_name(spec.job_id, "leader")
        container = pod_spec["containers"][0]
        claim = _s("FEDSITE_K8S_OUTPUT_PVC", "")
        for prev in self._previous(spec):
            vol = f"prev-{prev[:8]}"
            pod_spec["volumes"].append({"name": vol, "persistentVolumeClaim": {"claimName": claim, "readOnly": True}})
            container["volumeMounts"].append(
                {"name": vol, "mountPath": f"{PREVIOUS_DIR}/{prev}", "subPath": f"{prev}/{spec.side}", "readOnly": True}
            )

    def deployment_manifest(self, spec: RuntimeSpec) -> dict[str, Any]:
        """One replica, started at zero (scaled up once its Secret exists), replaced (not surged) on change."""
        name = object_name(spec.job_id, spec.side)
        labels = self.labels(spec)
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": self.namespace, "labels": labels},
            "spec": {
                "replicas": 0,
                "strategy": {"type": "Recreate"},
                "selector": {"matchLabels": {LABEL_JOB: spec.job_id, LABEL_SIDE: spec.side}},
                "template": {"metadata": {"labels": labels}, "spec": self.pod_spec(spec)},
            },
        }

    def secret_manifest(self, spec: RuntimeSpec, owner: dict[str, Any] | None = None) -> dict[str, Any]:
        data = {"config.json": _b64(json.dumps(self.pod_config(spec), indent=2))}
        if spec.tls_files:
            for key, field in (("tls.crt", "cert_file"), ("tls.key", "key_file"), ("ca.crt", "peer_ca_file")):
                try:
                    with open(spec.tls_files[field], "rb") as fh:
                        data[key] = _b64(fh.read())
                except OSError as exc:
                    raise LaunchError(f"cannot read {field} {spec.tls_files[field]}: {exc.strerror}") from exc
        return self._meta("v1", "Secret", spec, owner) | {"type": "Opaque", "data": data}

    def configmap_manifest(self, spec: RuntimeSpec, owner: dict[str, Any] | None = None) -> dict[str, Any]:
        redacted = copy.deepcopy(self.pod_config(spec))
        if isinstance(redacted.get("report"), dict):
            redacted["report"]["token"] = "<in the Secret>"  # noqa: S105 - a placeholder, not a secret
        if isinstance(redacted.get("serve"), dict) and "api_token" in redacted["serve"]:
            redacted["serve"]["api_token"] = "<in the Secret>"  # noqa: S105 - a placeholder, not a secret
        partition = (redacted.get("psi") or {}).get("partition")
        if isinstance(partition, dict) and "key" in partition:
            partition["key"] = "<in the Secret>"
        return self._meta("v1", "ConfigMap", spec, owner) | {"data": {"config.json": json.dumps(redacted, indent=2)}}

    def service_manifest(self, spec: RuntimeSpec, owner: dict[str, Any] | None = None) -> dict[str, Any]:
        assert spec.port
        ports: list[dict[str, Any]] = []
        for i in range(spec.port_count):
            number = spec.port + i
            port: dict[str, Any] = {"name": _port_name(i), "port": number, "targetPort": number, "protocol": "TCP"}
            if self.service_type == "NodePort":
                port["nodePort"] = number
            ports.append(port)
        if self._serves_api(spec):
            # Reached by this installation's web process inside the cluster (the Service's DNS name).
            ports.append({"name": "api", "port": SERVING_API_PORT, "targetPort": SERVING_API_PORT, "protocol": "TCP"})
        selector = {LABEL_JOB: spec.job_id, LABEL_SIDE: spec.side}
        if spec.partitions > 1:
            # Headless: a DNS name per pod of the Indexed Job (<job>-<i>.<service>), published before readiness.
            headless = {"clusterIP": "None", "publishNotReadyAddresses": True}
            return self._meta("v1", "Service", spec, owner) | {
                "spec": {"type": "ClusterIP", **headless, "selector": selector, "ports": [port]}
            }
        return self._meta("v1", "Service", spec, owner) | {
            "spec": {"type": self.service_type, "selector": selector, "ports": ports}
        }

    def _meta(self, api_version: str, kind: str, spec: RuntimeSpec, owner: dict[str, Any] | None) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "name": object_name(spec.job_id, spec.side),
            "namespace": self.namespace,
            "labels": self.labels(spec),
        }
        if owner:
            meta["ownerReferences"] = [owner]
        return {"apiVersion": api_version, "kind": kind, "metadata": meta}

    def manifests(self, spec: RuntimeSpec, owner_uid: str = "00000000-0000-0000-0000-000000000000") -> list[dict]:
        """Every object one side creates (for validation and for docs)."""
        owner = self.owner_reference(object_name(spec.job_id, spec.side), owner_uid, spec.keep_running)
        out = [self.job_manifest(spec), self.secret_manifest(spec, owner), self.configmap_manifest(spec, owner)]
        if spec.port:
            out.append(self.service_manifest(spec, owner))
        return out

    @staticmethod
    def owner_reference(name: str, uid: str, keep_running: bool = False) -> dict[str, Any]:
        api, kind = ("apps/v1", "Deployment") if keep_running else ("batch/v1", "Job")
        return {"apiVersion": api, "kind": kind, "name": name, "uid": uid, "blockOwnerDeletion": True}

    @property
    def apps(self) -> Any:
        from kubernetes import client

        return client.AppsV1Api(self.api_client)

    # -- lifecycle ----------------------------------------------------------
    def start(self, spec: RuntimeSpec) -> dict[str, Any]:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        name = object_name(spec.job_id, spec.side)
        handle: dict[str, Any] = {
            "backend": self.name,
            "namespace": self.namespace,
            "name": name,
            "job_id": spec.job_id,
            "side": spec.side,
            "port": spec.port,
            "port_count": spec.port_count,
            "service": bool(spec.port),
        }
        if spec.partitions > 1:
            handle["partition_count"] = spec.partitions
        if spec.keep_running:
            handle["kind"] = "Deployment"
        ns = self.namespace
        try:
            if spec.keep_running:
                created = self.apps.create_namespaced_deployment(ns, self.job_manifest(spec))
            else:
                created = self.batch.create_namespaced_job(ns, self.job_manifest(spec))
            uid = created.metadata.uid or ""
            handle["uid"] = uid
            owner = self.owner_reference(name, uid, spec.keep_running) if uid else None
            self.core.create_namespaced_secret(ns, self.secret_manifest(spec, owner))
            self.core.create_namespaced_config_map(ns, self.configmap_manifest(spec, owner))
            if spec.port:
                self.core.create_namespaced_service(ns, self.service_manifest(spec, owner))
            if spec.keep_running:
                self.apps.patch_namespaced_deployment(name, ns, {"spec": {"replicas": 1}})
            else:
                self.batch.patch_namespaced_job(name, ns, {"spec": {"suspend": False}})
        except (ApiException, HTTPError) as exc:
            try:
                self.stop(handle)
            except LaunchError as cleanup:
                log.warning("cleaning up %s after a failed start: %s", name, cleanup)
            status = getattr(exc, "status", None)
            if isinstance(exc, HTTPError) or status == 429 or (isinstance(status, int) and status >= 500):
                raise TransientLaunchError(f"the Kubernetes API failed for {name}: {_api_error(exc)}") from exc
            raise LaunchError(f"Kubernetes refused {name}: {_api_error(exc)}") from exc
        return handle

    def _pods(self, handle: dict[str, Any]) -> list[Any]:
        from kubernetes.client.exceptions import ApiException

        selector = f"{LABEL_JOB}={handle['job_id']},{LABEL_SIDE}={handle['side']}"
        try:
            pods = self.core.list_namespaced_pod(handle["namespace"], label_selector=selector).items
        except ApiException as exc:
            if exc.status == 404:
                return []
            raise
        # Filter here too: the selector is the server's job, but be sure.
        pods = [
            p
            for p in pods
            if (p.metadata.labels or {}).get(LABEL_JOB) == handle["job_id"]
            and (p.metadata.labels or {}).get(LABEL_SIDE) == handle["side"]
        ]
        return sorted(pods, key=lambda p: str(p.metadata.creation_timestamp or ""))

    def _state_of(self, job: Any, handle: dict[str, Any]) -> RuntimeState:
        status = job.status
        conditions = {c.type: c for c in (getattr(status, "conditions", None) or []) if c.status == "True"}
        completions = getattr(job.spec, "completions", None) or 1  # an Indexed Job (partitioned PSI): P
        if (getattr(status, "succeeded", None) or 0) >= completions or "Complete" in conditions:
            return RuntimeState(SUCCEEDED, exit_code=0, log_tail=self.log_tail(handle))
        if "Failed" in conditions:
            cond = conditions["Failed"]
            if completions > 1:
                return self._indexed_failure(job, handle, cond)
            tail = self.log_tail(handle)
            if cond.reason == "DeadlineExceeded":
                error = f"error: the runtime ran past its deadline ({job.spec.active_deadline_seconds} s)"
            else:
                line = error_summary(tail, None)
                error = line if "error" in line.lower() else f"{cond.reason or 'Failed'}: {cond.message or ''}"
            return RuntimeState(FAILED, exit_code=1, error=error.strip(), log_tail=tail)
        for pod in self._pods(handle):
            for cs in (pod.status.container_statuses if pod.status else None) or []:
                waiting = cs.state.waiting if cs.state else None
                if waiting and waiting.reason in STUCK_REASONS:
                    error = f"pod {pod.metadata.name}: {waiting.reason}: {waiting.message or ''}".strip()
                    return RuntimeState(FAILED, exit_code=None, error=error)
        return RuntimeState(RUNNING)

    def _indexed_failure(self, job: Any, handle: dict[str, Any], cond: Any) -> RuntimeState:
        """An Indexed Job failed: name the partition whose pod failed, with its last error line."""
        count = job.spec.completions
        failed = [p for p in self._pods(handle) if p.status and p.status.phase == "Failed"]
        if cond.reason == "DeadlineExceeded":
            error = f"error: the runtime ran past its deadline ({job.spec.active_deadline_seconds} s)"
            return RuntimeState(FAILED, exit_code=1, error=error, log_tail=self.log_tail(handle))
        if not failed:
            return RuntimeState(FAILED, exit_code=1, error=f"{cond.reason or 'Failed'}: {cond.message or ''}".strip())
        pod = failed[0]
        index = (pod.metadata.annotations or {}).get(INDEX_ANNOTATION) or (pod.metadata.labels or {}).get(
            INDEX_ANNOTATION, "?"
        )
        tail = self._pod_log(pod.metadata.name, handle["namespace"], 50)
        line = error_summary(tail, None)
        if f"partition {index} " not in line:
            line = f"partition {index} of {count}: {line if 'error' in line.lower() else cond.reason or 'Failed'}"
        return RuntimeState(FAILED, exit_code=1, error=line, log_tail=tail)

    def _pod_log(self, pod: str, namespace: str, lines: int) -> str:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            text = self.core.read_namespaced_pod_log(pod, namespace, container=CONTAINER, tail_lines=lines)
        except (ApiException, HTTPError):
            return ""
        return text if isinstance(text, str) else str(text)

    def _service_state(self, handle: dict[str, Any]) -> RuntimeState:
        """A service runs until stopped; it failed only if its pod cannot start or keeps crashing."""
        for pod in self._pods(handle):
            for cs in (pod.status.container_statuses if pod.status else None) or []:
                waiting = cs.state.waiting if cs.state else None
                if waiting and waiting.reason in STUCK_SERVICE:
                    tail = self.log_tail(handle)
                    line = error_summary(tail, None)
                    error = line if "error" in line.lower() else f"pod {pod.metadata.name}: {waiting.reason}"
                    return RuntimeState(FAILED, exit_code=None, error=error.strip(), log_tail=tail)
        return RuntimeState(RUNNING)

    def poll(self, handle: dict[str, Any]) -> RuntimeState:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        kind = "Deployment" if handle.get("kind") == "Deployment" else "Job"
        try:
            if kind == "Deployment":
                self.apps.read_namespaced_deployment_status(handle["name"], handle["namespace"])
                return self._service_state(handle)
            job = self.batch.read_namespaced_job_status(handle["name"], handle["namespace"])
            return self._state_of(job, handle)
        except ApiException as exc:
            if exc.status == 404:
                return RuntimeState(MISSING, error=f"the Kubernetes {kind} {handle['name']} disappeared")
            raise LaunchError(f"cannot read Job {handle['name']}: {_api_error(exc)}") from exc
        except HTTPError as exc:
            raise LaunchError(f"cannot reach the Kubernetes API: {exc}") from exc

    def watch(self, handle: dict[str, Any], timeout_s: float = 60.0) -> RuntimeState:
        """Follow the Job's watch stream until it finishes or `timeout_s` passes."""
        from kubernetes import watch
        from urllib3.exceptions import HTTPError

        state = self.poll(handle)
        if state.finished or handle.get("kind") == "Deployment":
            return state  # a Deployment runs until stopped: nothing to wait for
        w = watch.Watch()
        try:
            for event in w.stream(
                self.batch.list_namespaced_job,
                handle["namespace"],
                label_selector=f"{LABEL_JOB}={handle['job_id']},{LABEL_SIDE}={handle['side']}",
                timeout_seconds=int(timeout_s),
                _request_timeout=timeout_s,
            ):
                obj = event["object"]
                if getattr(obj.metadata, "name", None) != handle["name"]:
                    continue
                if event["type"] == "DELETED":
                    return RuntimeState(MISSING, error=f"the Kubernetes Job {handle['name']} was deleted")
                state = self._state_of(obj, handle)
                if state.finished:
                    return state
        except HTTPError:
            pass  # the read timed out: report what we know
        finally:
            w.stop()
        return self.poll(handle)

    def stop(self, handle: dict[str, Any]) -> None:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        name, ns = handle.get("name"), handle.get("namespace")
        if not name or not ns:
            return
        owner = (
            (lambda: self.apps.delete_namespaced_deployment(name, ns, propagation_policy="Background"))
            if handle.get("kind") == "Deployment"
            else (lambda: self.batch.delete_namespaced_job(name, ns, propagation_policy="Background"))
        )
        calls = [
            owner,
            lambda: self.core.delete_namespaced_secret(name, ns),
            lambda: self.core.delete_namespaced_config_map(name, ns),
        ]
        if handle.get("service"):
            calls.append(lambda: self.core.delete_namespaced_service(name, ns))
        # The owner references let the cluster collect these; deleting them here too means a
        # cancel leaves nothing behind even where garbage collection lags or owners were not set.
        errors = []
        for call in calls:
            try:
                call()
            except ApiException as exc:
                if exc.status != 404:
                    errors.append(_api_error(exc))
            except HTTPError as exc:
                errors.append(str(exc))
        if errors:
            raise LaunchError(f"could not delete everything of {name}: {'; '.join(errors)}")

    def read_result(self, handle: dict[str, Any]) -> dict[str, Any]:
        """Where the workers mount the outputs PVC (FEDSITE_K8S_OUTPUT_MOUNT), the pod's result file."""
        mounted = mounted_output_dir(handle.get("job_id") or "", handle.get("side") or "")
        return read_result_file(mounted / RESULT_FILE) if mounted is not None else {}

    def log_tail(self, handle: dict[str, Any], lines: int = 50) -> str:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            pods = self._pods(handle)
            if not pods:
                return ""
            text = self.core.read_namespaced_pod_log(
                pods[-1].metadata.name, handle["namespace"], container=CONTAINER, tail_lines=lines
            )
        except (ApiException, HTTPError) as exc:
            log.info("no log for %s: %s", handle.get("name"), exc)
            return ""
        return text if isinstance(text, str) else str(text)
