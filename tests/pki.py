"""A throwaway PKI for tests: two installations' CAs and their leaf certificates."""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@dataclass
class Party:
    """One side's files: its leaf cert and key, and its CA certificate."""

    name: str
    ca_file: Path
    cert_file: Path
    key_file: Path


def make_party(
    directory: Path, name: str, *, days: int = 30, server_name: str = "fedsite-runtime", expired: bool = False
) -> Party:
    """Create a CA and one leaf certificate (server and client use) for `name`."""
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = _key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = _key()
    start, end = (
        (now - dt.timedelta(days=10), now - dt.timedelta(days=1))
        if expired
        else (now - dt.timedelta(days=1), now + dt.timedelta(days=days))
    )
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, server_name)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName(server_name),
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    party = Party(name, directory / f"{name}-ca.pem", directory / f"{name}.pem", directory / f"{name}.key")
    party.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    party.cert_file.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    party.key_file.write_bytes(_pem_key(key))
    return party


def tls_config(me: Party, peer: Party) -> dict[str, str]:
    """The runtime config's `tls` block for `me` talking to `peer`."""
    return {"cert_file": str(me.cert_file), "key_file": str(me.key_file), "peer_ca_file": str(peer.ca_file)}
