"""The shipped Kubernetes configuration in production mode, live: gunicorn behind a TLS-terminating proxy.

The web runs with the ConfigMap of deploy/kubernetes (FEDSITE_ENV=production, its ALLOWED_HOSTS and
URLs) under gunicorn. In front of it, a small asyncio reverse proxy on loopback plays the ingress: it
terminates TLS and sets X-Forwarded-Proto, and its plain-HTTP side redirects to HTTPS. Checked: the
Deployment's probes by pod IP, the runtime's report POST by Service name, through the proxy, and a
redirected report refused by the runtime's reporter instead of being sent on as a body-less GET.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import logging
import secrets
import ssl
import threading
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from fedsite.localcluster import Installation
from runtime.config import ReportConfig
from runtime.report import Reporter

pytestmark = pytest.mark.kubernetes

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
PUBLIC = "fedsite.example.com"  # the ConfigMap's public name (ALLOWED_HOSTS, FEDSITE_PUBLIC_URL)
POD_IP = "10.244.1.7:8000"  # how the kubelet addresses a probe
SERVICE = "fedsite-web.fedsite.svc:8000"  # how a runtime addresses its report


def _manifest(name: str, kind: str, metadata_name: str) -> dict[str, Any]:
    for doc in yaml.safe_load_all((DEPLOY / name).read_text()):
        if doc and doc["kind"] == kind and doc["metadata"]["name"] == metadata_name:
            return doc
    raise AssertionError(f"{kind} {metadata_name} not in {name}")


def _self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, PUBLIC)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(PUBLIC), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "proxy.crt", directory / "proxy.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


class IngressProxy:
    """An ingress on loopback: TLS terminated, X-Forwarded-Proto set (a client's own is dropped), plain HTTP
    answered with a redirect to HTTPS. One request per connection (Connection: close upstream)."""

    def __init__(self, upstream_port: int, cert: Path, key: Path) -> None:
        self.upstream_port = upstream_port
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(cert, key)
        self.redirect_status = 301
        self.plain_requests: list[str] = []  # request lines seen on the plain-HTTP side
        self.loop = asyncio.new_event_loop()
        self.tls_port = self.http_port = 0
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self.loop).result(10)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)

    async def _listen(self) -> None:
        tls = await asyncio.start_server(self._forward, "127.0.0.1", 0, ssl=self.context)
        plain = await asyncio.start_server(self._redirect, "127.0.0.1", 0)
        self.tls_port = tls.sockets[0].getsockname()[1]
        self.http_port = plain.sockets[0].getsockname()[1]

    @staticmethod
    async def _head(reader: asyncio.StreamReader) -> tuple[str, list[str]]:
        raw = await reader.readuntil(b"\r\n\r\n")
        first, *headers = raw.decode("latin-1").split("\r\n")
        return first, [h for h in headers if h]

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            first, headers = await self._head(reader)
            drop = ("x-forwarded-proto:", "x-forwarded-for:", "connection:")
            headers = [h for h in headers if not h.lower().startswith(drop)]
            headers += ["X-Forwarded-Proto: https", "X-Forwarded-For: 203.0.113.9", "Connection: close"]
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            up_writer.write(("\r\n".join([first, *headers]) + "\r\n\r\n").encode("latin-1"))

            async def body() -> None:  # the request body, as it comes
                while data := await reader.read(65536):
                    up_writer.write(data)
                    await up_writer.drain()

            sending = asyncio.create_task(body())
            while data := await up_reader.read(65536):  # the response, until the web closes
                writer.write(data)
                await writer.drain()
            sending.cancel()
            up_writer.close()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _redirect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            first, headers = await self._head(reader)
            self.plain_requests.append(first)
            length = next((int(h.split(":", 1)[1]) for h in headers if h.lower().startswith("content-length:")), 0)
            if length:
                await reader.readexactly(length)
            path = first.split(" ")[1]
            writer.write(
                f"HTTP/1.1 {self.redirect_status} Redirect\r\nLocation: https://{PUBLIC}{path}\r\n"
                "Content-Length: 0\r\nConnection: close\r\n\r\n".encode()
            )
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


JOB_SCRIPT = """
import json, uuid
from apps.jobs.models import Job
from apps.jobs.services import issue_runtime_token
from apps.partners.models import Partner
from apps.tickets.models import Ticket
from apps.workspaces.models import Workspace
ws = Workspace.objects.get(slug="acme")
partner = Partner.objects.create(workspace=ws, name="beta", status="connected", endpoint="127.0.0.1:1",
                                 remote_workspace_id=uuid.uuid4())
ticket = Ticket.objects.create(workspace=ws, partner=partner, name="t", kind="psi", role="leader",
                               is_proposer=True, status="running")
job = Job.objects.create(workspace=ws, ticket=ticket, role="leader", status="running")
print(json.dumps({"job": str(job.id), "job_token": issue_runtime_token(job)}))
"""


@pytest.fixture(scope="module")
def production(tmp_path_factory):
    """The web of the shipped configuration (gunicorn, production settings) and its ingress."""
    tmp = tmp_path_factory.mktemp("prod")
    config = _manifest("20-config.yaml", "ConfigMap", "fedsite-config")["data"]
    env = {k: str(v) for k, v in config.items() if k not in ("FEDSITE_VAR_DIR", "FEDSITE_DATA_ROOTS", "CACHE_URL")}
    env.update(SECRET_KEY=secrets.token_urlsafe(50), CACHE_URL=f"file://{tmp / 'cache'}", DEBUG="false")
    assert env["FEDSITE_ENV"] == "production" and PUBLIC in env["ALLOWED_HOSTS"].split(",")
    inst = Installation("prod", tmp / "var", data_roots=[tmp / "data"], extra_env=env)
    inst.setup(workspace="acme", users={"alice": ("owner", "alice-long-password-1")})
    made = json.loads(inst.manage("shell", "-c", JOB_SCRIPT).stdout.strip().splitlines()[-1])
    token = inst.token("alice")
    cert, key = _self_signed(tmp)
    proxy = IngressProxy(inst.web_port, cert, key)
    inst.start(roles=("web",))
    proxy.start()
    try:
        inst.wait_ready(90)
        yield {"inst": inst, "proxy": proxy, "cert": cert, "token": token, **made}
    finally:
        proxy.stop()
        inst.stop()


def _web(production, path: str, host: str, **kw: Any) -> requests.Response:
    url = f"http://127.0.0.1:{production['inst'].web_port}{path}"
    return requests.request(kw.pop("method", "GET"), url, headers={"Host": host, **kw.pop("headers", {})},
                            allow_redirects=False, timeout=10, **kw)  # fmt: skip


def _report_url(production, base: str) -> str:
    return f"{base}/api/v1/runtime/jobs/{production['job']}/report"


def _job(production) -> dict[str, Any]:
    """The job as the API shows it, through the ingress."""
    r = requests.get(
        f"https://127.0.0.1:{production['proxy'].tls_port}/api/v1/workspaces/acme/jobs/{production['job']}/",
        headers={"Host": PUBLIC, "Authorization": f"Token {production['token']}"},
        verify=production["cert"],
        allow_redirects=False,
        timeout=10,
    )
    assert r.status_code == 200, (r.status_code, r.text[:300])
    return r.json()


def test_the_deployments_probes_answer_by_pod_ip_over_plain_http(production):
    web = _manifest("40-web.yaml", "Deployment", "fedsite-web")["spec"]["template"]["spec"]["containers"][0]
    for probe in ("readinessProbe", "livenessProbe"):
        get = web[probe]["httpGet"]
        assert get.get("scheme", "HTTP") == "HTTP"
        r = _web(production, get["path"], POD_IP)
        assert r.status_code == 200 and r.json()["status"] == "ok", (probe, r.status_code, r.text[:300])
    # Everything else keeps production's rules: another path by IP is refused, by name it is redirected.
    r = _web(production, "/api/v1/workspaces/", POD_IP)
    assert r.status_code == 400 and r.headers["Content-Type"] == "application/json"
    r = _web(production, "/api/v1/workspaces/", PUBLIC)
    assert r.status_code == 301 and r.headers["Location"] == f"https://{PUBLIC}/api/v1/workspaces/"
    assert _web(production, "/healthz", "evil.example.net").status_code == 400  # not an in-cluster name


def test_behind_the_ingress_https_is_trusted_from_x_forwarded_proto(production):
    base = f"https://127.0.0.1:{production['proxy'].tls_port}"
    r = requests.get(f"{base}/api/v1/workspaces/", headers={"Host": PUBLIC, "Authorization": f"Token {production['token']}"},
                     verify=production["cert"], allow_redirects=False, timeout=10)  # fmt: skip
    assert r.status_code == 200, (r.status_code, r.headers.get("Location"))
    assert [w["slug"] for w in r.json()["results"]] == ["acme"]
    assert "max-age=" in r.headers["Strict-Transport-Security"]
    # A client's own X-Forwarded-Proto straight at the pod does not make plain HTTP "secure" through the ingress.
    assert requests.get(f"{base}/healthz", headers={"Host": PUBLIC}, verify=production["cert"], timeout=10).ok


def test_a_runtime_report_reaches_the_web_by_service_name_and_through_the_ingress(production, monkeypatch):
    url = _report_url(production, "")
    events = {"events": [{"type": "log", "line": "by service name"}]}
    bearer = {"Authorization": f"Bearer {production['job_token']}"}
    r = _web(production, url, SERVICE, method="POST", json=events, headers=bearer)
    assert r.status_code == 202, (r.status_code, r.text[:300])  # neither redirected nor refused for its Host
    assert _web(production, url, PUBLIC, method="POST", json=events).status_code == 401  # still needs its token

    # The runtime's own reporter: to the pod by IP, as to the Service's cluster IP ...
    web = f"http://127.0.0.1:{production['inst'].web_port}"
    reporter = Reporter(ReportConfig(url=_report_url(production, web), token=production["job_token"]))
    reporter.progress(0.25, "psi")
    reporter.log("by pod ip")
    reporter.close(10)
    assert reporter.rejected == ""
    # ... and through the ingress, over TLS.
    monkeypatch.setenv("SSL_CERT_FILE", str(production["cert"]))
    ingress = f"https://127.0.0.1:{production['proxy'].tls_port}"
    reporter = Reporter(ReportConfig(url=_report_url(production, ingress), token=production["job_token"]))
    reporter.progress(0.5, "psi")
    reporter.log("through the ingress")
    reporter.close(10)
    assert reporter.rejected == ""
    job = _job(production)
    assert job["progress"] == 0.5
    assert job["log_tail"].splitlines()[-3:] == ["by service name", "by pod ip", "through the ingress"]


@pytest.mark.parametrize("status", [301, 308])
def test_a_redirected_report_is_refused_loudly_never_sent_on(production, status, caplog):
    """urllib would re-send a 301'd POST as a body-less GET (and lose the report): the reporter refuses."""
    proxy = production["proxy"]
    proxy.redirect_status, proxy.plain_requests[:] = status, []
    before = _job(production)["log_tail"]
    url = _report_url(production, f"http://127.0.0.1:{proxy.http_port}")
    reporter = Reporter(ReportConfig(url=url, token=production["job_token"]))
    reporter.log("lost?")
    with caplog.at_level(logging.ERROR, logger="fedsite.runtime"):
        reporter.close(10)
    assert f"HTTP {status}: {url} redirects to https://{PUBLIC}/api/v1/runtime/jobs/" in reporter.rejected
    assert "FEDSITE_RUNTIME_REPORT_URL" in reporter.rejected
    assert any("redirects to" in r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)
    assert [line.split(" ")[0] for line in proxy.plain_requests] == ["POST"]  # sent once, not retried, no GET
    assert _job(production)["log_tail"] == before
