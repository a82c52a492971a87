"""This installation's identity: its CA, its leaf certificate, and each workspace's signing key.

Files live under `$FEDSITE_VAR_DIR/peer/` and are created on first use (any of
web, peer or worker may get there first; a file lock makes that safe):

    ca.key, ca.pem    the installation CA (10 years); partners pin its certificate
    tls.key, tls.pem  the leaf (server + client auth), issued by the CA;
                      `manage.py rotate_certificates` replaces it, same CA, so
                      partners keep working without noticing

Workspace signing keys (Ed25519) live in the database (`WorkspaceSigningKey`):
they are tenant data, and a workspace's messages must be signed by the worker,
the web process and the peer server alike.
"""

from __future__ import annotations

import base64
import datetime as dt
import fcntl
import hashlib
import ipaddress
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from django.conf import settings
from django.db import IntegrityError, transaction

from fedsite.env import env_int

CA_DAYS = 3650
# Leaf validity; FEDSITE_CERT_DAYS (read here until settings.py declares it).
LEAF_DAYS: int = getattr(settings, "FEDSITE_CERT_DAYS", None) or env_int("FEDSITE_CERT_DAYS", 365, minimum=1)
# A leaf with less than this left is renewed automatically when the peer server starts.
RENEW_BEFORE = dt.timedelta(days=30)
# Every leaf answers to these names; peers connect with this target name override,
# so the endpoint's real host name never has to match the certificate.
PEER_SERVER_NAME = "fedsite-peer"
RUNTIME_SERVER_NAME = "fedsite-runtime"


def peer_dir() -> Path:
    path = Path(settings.VAR_DIR) / "peer"
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def _locked() -> Iterator[None]:
    with open(peer_dir() / ".lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _write(path: Path, data: bytes, *, private: bool = False) -> None:
    """Atomic replace, so a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    if private:
        tmp.chmod(0o600)
    tmp.replace(path)


def _pem_private(key: Any) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def fingerprint(pem: str | bytes) -> str:
    """SHA-256 of the certificate's DER, as colon-separated hex (what people compare by eye)."""
    cert = x509.load_pem_x509_certificate(pem.encode() if isinstance(pem, str) else pem)
    digest = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


@dataclass(frozen=True)
class Identity:
    ca_file: Path
    cert_file: Path
    key_file: Path

    @property
    def ca_pem(self) -> str:
        return self.ca_file.read_text()

    @property
    def cert_pem(self) -> bytes:
        return self.cert_file.read_bytes()

    @property
    def key_pem(self) -> bytes:
        return self.key_file.read_bytes()

    @property
    def ca_fingerprint(self) -> str:
        return fingerprint(self.ca_pem)

    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_pem)

    @property
    def cert_not_after(self) -> dt.datetime:
        return self.certificate().not_valid_after_utc


def _paths() -> Identity:
    d = peer_dir()
    return Identity(d / "ca.pem", d / "tls.pem", d / "tls.key")


def _leaf_names() -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = [
        x509.DNSName(PEER_SERVER_NAME),
        x509.DNSName(RUNTIME_SERVER_NAME),
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]
    host = settings.FEDSITE_PEER_ENDPOINT.rsplit(":", 1)[0].strip("[]")
    if host and host not in ("localhost", "127.0.0.1", "0.0.0.0"):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def issue_leaf(
    ca_key: Any,
    ca_cert: x509.Certificate,
    *,
    common_name: str,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    names: list[x509.GeneralName] | None = None,
) -> tuple[bytes, bytes]:
    """A leaf certificate (server and client auth) signed by `ca_key`; returns (cert PEM, key PEM)."""
    now = dt.datetime.now(dt.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - dt.timedelta(minutes=5))
        .not_valid_after(not_after or now + dt.timedelta(days=LEAF_DAYS))
        .add_extension(x509.SubjectAlternativeName(names if names is not None else _leaf_names()), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _pem_private(key)


def make_ca(common_name: str, *, days: int = CA_DAYS) -> tuple[Any, x509.Certificate]:
    now = dt.datetime.now(dt.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, f"{common_name} installation CA"[:64]),
            x509.NameAttribute(NameOID.SERIAL_NUMBER, os.urandom(8).hex()),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _load_ca() -> tuple[Any, x509.Certificate]:
    d = peer_dir()
    key = serialization.load_pem_private_key((d / "ca.key").read_bytes(), password=None)
    cert = x509.load_pem_x509_certificate((d / "ca.pem").read_bytes())
    return key, cert


def ensure_identity(*, renew: bool = False) -> Identity:
    """The installation identity, created on first use; `renew` also renews a leaf close to expiry."""
    ident = _paths()
    if not renew and ident.cert_file.exists() and ident.key_file.exists() and ident.ca_file.exists():
        return ident
    with _locked():
        d = peer_dir()
        if not (d / "ca.key").exists() or not ident.ca_file.exists():
            key, cert = make_ca(settings.FEDSITE_INSTALLATION_NAME)
            _write(d / "ca.key", _pem_private(key), private=True)
            _write(ident.ca_file, cert.public_bytes(serialization.Encoding.PEM))
            for stale in (ident.cert_file, ident.key_file):
                stale.unlink(missing_ok=True)
        expiring = ident.cert_file.exists() and ident.cert_not_after - dt.datetime.now(dt.UTC) < RENEW_BEFORE and renew
        if not ident.cert_file.exists() or not ident.key_file.exists() or expiring:
            _rotate_locked()
    return ident


def _rotate_locked(days: int | None = None) -> Identity:
    ident = _paths()
    ca_key, ca_cert = _load_ca()
    now = dt.datetime.now(dt.UTC)
    cert_pem, key_pem = issue_leaf(
        ca_key,
        ca_cert,
        common_name=settings.FEDSITE_INSTALLATION_NAME,
        not_after=now + dt.timedelta(days=days or LEAF_DAYS),
    )
    # Key first: a reader that sees the new cert must find its key.
    _write(ident.key_file.with_name("tls.key.new"), key_pem, private=True)
    _write(ident.cert_file.with_name("tls.pem.new"), cert_pem)
    ident.key_file.with_name("tls.key.new").replace(ident.key_file)
    ident.cert_file.with_name("tls.pem.new").replace(ident.cert_file)
    return ident


def rotate_leaf(days: int | None = None) -> Identity:
    """A new leaf key and certificate from the same CA: partners pin the CA, so nothing changes for them."""
    ensure_identity()
    with _locked():
        return _rotate_locked(days)


_leaf_cache: dict[str, Any] = {}


def _leaf_stamp(ident: Identity) -> tuple[Any, ...]:
    a, b = ident.key_file.stat(), ident.cert_file.stat()
    return (str(ident.cert_file), a.st_mtime_ns, a.st_ino, b.st_mtime_ns, b.st_ino)


def read_key_and_cert() -> tuple[bytes, bytes]:
    """(key PEM, cert PEM), read together under the lock so they always match; cached until rotated."""
    ident = ensure_identity()
    stamp = _leaf_stamp(ident)
    cached = _leaf_cache.get("pair")
    if cached is not None and cached[0] == stamp:
        return cached[1]
    with _locked():
        pair = (ident.key_file.read_bytes(), ident.cert_file.read_bytes())
        _leaf_cache["pair"] = (_leaf_stamp(ident), pair)
    return pair


def leaf_not_after() -> dt.datetime:
    """Our leaf certificate's expiry (cached until the certificate changes)."""
    _key, cert = read_key_and_cert()
    cached = _leaf_cache.get("not_after")
    if cached is None or cached[0] != cert:
        cached = (cert, x509.load_pem_x509_certificate(cert).not_valid_after_utc)
        _leaf_cache["not_after"] = cached
    return cached[1]


def issue_enrollment_certificate(not_after: dt.datetime, invitation_id: str) -> tuple[str, str]:
    """A short-lived client certificate for one invitation: lets the invitee open the
    mutual-TLS connection of the handshake before we know its CA."""
    ensure_identity()
    ca_key, ca_cert = _load_ca()
    cert_pem, key_pem = issue_leaf(
        ca_key,
        ca_cert,
        common_name=f"invitation:{invitation_id}",
        not_after=not_after,
        names=[x509.DNSName(f"invitation-{invitation_id}.fedsite")],
    )
    return cert_pem.decode(), key_pem.decode()


def runtime_tls_files(partner: Any) -> dict[str, str]:
    """Files for the data-plane runtime's mutual TLS with `partner`'s runtime.

    Our leaf (server and client auth; SANs fedsite-runtime, localhost, 127.0.0.1)
    and the partner installation's CA as pinned at the handshake.
    """
    ident = ensure_identity()
    if not partner.ca_pem:
        raise ValueError(f"partner {partner} has no pinned CA certificate (handshake not done)")
    d = peer_dir() / "partners"
    d.mkdir(exist_ok=True)
    ca_file = d / f"{partner.pk}-ca.pem"
    if not ca_file.exists() or ca_file.read_text() != partner.ca_pem:
        _write(ca_file, partner.ca_pem.encode())
    return {"cert_file": str(ident.cert_file), "key_file": str(ident.key_file), "peer_ca_file": str(ca_file)}


def certificate_issued_by(cert: x509.Certificate, ca_pem: str) -> bool:
    """Whether `cert` was signed by the CA in `ca_pem` (names and signature)."""
    try:
        ca = x509.load_pem_x509_certificate(ca_pem.encode())
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


# --- workspace signing keys -----------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# Workspace keys never change once made (a new key means a new partnership), so each process keeps them.
_signing_keys: dict[str, ed25519.Ed25519PrivateKey] = {}


def workspace_private_key(workspace: Any) -> ed25519.Ed25519PrivateKey:
    """The workspace's Ed25519 signing key, created on first use."""
    from apps.peer.models import WorkspaceSigningKey

    cached = _signing_keys.get(str(workspace.pk))
    if cached is not None:
        return cached
    row = WorkspaceSigningKey.objects.filter(workspace_id=workspace.pk).first()
    if row is None:
        key = ed25519.Ed25519PrivateKey.generate()
        public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        try:
            with transaction.atomic():
                row = WorkspaceSigningKey.objects.create(
                    workspace_id=workspace.pk, private_key=_pem_private(key).decode(), public_key=b64(public)
                )
        except IntegrityError:  # another process created it first
            row = WorkspaceSigningKey.objects.get(workspace_id=workspace.pk)
    loaded = serialization.load_pem_private_key(row.private_key.encode(), password=None)
    assert isinstance(loaded, ed25519.Ed25519PrivateKey)
    _signing_keys[str(workspace.pk)] = loaded
    return loaded


def workspace_public_key(workspace: Any) -> str:
    """Base64 of the raw 32-byte Ed25519 public key: what partners pin."""
    key = workspace_private_key(workspace).public_key()
    return b64(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))


def verify_signature(public_key_b64: str, signature: bytes, data: bytes) -> bool:
    try:
        key = ed25519.Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key_b64))
        key.verify(signature, data)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True
