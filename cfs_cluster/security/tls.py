"""HTTPS for the API: a given certificate, or a self-signed one generated in the data directory.

Like the commercial service (spec §8.2) the self-signed certificate is made once, at first
start, valid for years, with the node's names as SANs; it is reused on later starts. It is a
leaf (CA:FALSE): trusting it can never mean trusting a certificate it signed.

Members calling each other (forwarding.py) trust either the members' CA (``--peer-ca-file``,
like etcd's ``--peer-trusted-ca-file``) or exactly the leaf certificates the members published
in the replicated member table — never the system trust store, which would let any public CA
vouch for a member.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import os
import socket
import ssl
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cfs_cluster.errors import BadRequest
from cfs_cluster.settings import Settings

__all__ = [
    "certificate_files",
    "certificate_status",
    "check_peer_ca",
    "configured_certificate",
    "expiry",
    "expiry_warning",
    "generate_self_signed",
    "member_trust_context",
    "published_certificate",
]

log = logging.getLogger("cfs.tls")

SELF_SIGNED_YEARS = 15  # as the commercial installer (spec §8.2)
WARN_BEFORE = dt.timedelta(days=30)


def configured_certificate(settings: Settings) -> Path | None:
    """The certificate this node serves (without generating one); None = plain HTTP."""
    sec = settings.security
    if sec.tls_cert is not None and sec.tls_key is not None:
        return sec.tls_cert
    if sec.tls_self_signed:
        return settings.data_dir / "certificates" / f"{settings.node_id}.crt"
    return None


def certificate_status(settings: Settings, now: dt.datetime | None = None) -> dict[str, Any]:
    """For GET /api/v1/cluster: which certificate, when it expires, and the warning if due."""
    path = configured_certificate(settings)
    if path is None:
        return {"Enabled": False}
    try:
        ends = expiry(path)
    except (OSError, ValueError) as exc:
        return {"Enabled": True, "Certificate": str(path), "Error": f"{type(exc).__name__}"}
    left = ends - (now or dt.datetime.now(dt.UTC))
    return {
        "Enabled": True,
        "Certificate": str(path),
        "NotAfter": ends.isoformat(),
        "DaysLeft": left.days,
        "Warning": expiry_warning(path, now),
    }


def published_certificate(settings: Settings) -> str:
    """The PEM this node publishes in the member table so relays can pin it ("" = none)."""
    path = configured_certificate(settings)
    if path is None:
        return ""
    try:
        return path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        log.warning("Cannot read the API certificate %s to publish it: %s", path, exc)
        return ""


def member_trust_context(published: tuple[str, ...], peer_ca: Path | None) -> ssl.SSLContext:
    """What a member trusts when it calls another: the members' CA when one is configured,
    else exactly the published leaf certificates (the first certificate of each PEM, refused
    if it is a CA), each a trust anchor of its own. Host names are checked either way."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies, checks host names, no store
    if peer_ca is not None:
        try:
            context.load_verify_locations(cafile=str(peer_ca))
        except (OSError, ssl.SSLError) as exc:
            log.error("Cannot load the members' CA %s: %s", peer_ca, exc)
        return context
    # A pinned certificate is an anchor by itself, also when a CA issued it.
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    for pem in published:
        leaf = _pinnable(pem)
        if leaf is not None:
            context.load_verify_locations(cadata=leaf)
    return context


def _pinnable(pem: str) -> str | None:
    """The leaf of a published PEM, unless it is a CA (which would vouch for others)."""
    try:
        cert = x509.load_pem_x509_certificate(pem.encode("ascii"))
    except (ValueError, UnicodeEncodeError) as exc:
        log.warning("A member published an unusable certificate: %s", exc)
        return None
    if _is_ca(cert):
        log.warning(
            "Not pinning the member certificate %s: it is a CA certificate (CA:TRUE).",
            cert.subject.rfc4514_string(),
        )
        return None
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def check_peer_ca(settings: Settings) -> None:
    """Refuse to start with a members' CA file that holds no usable certificate."""
    path = settings.security.peer_ca_file
    if path is None:
        return
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=str(path))
    except (OSError, ssl.SSLError) as exc:
        raise BadRequest(f"--peer-ca-file {path}: not a readable PEM CA file ({exc}).") from exc


def certificate_files(settings: Settings) -> tuple[Path, Path] | None:
    """(cert, key) to serve with, generating the self-signed pair if needed; None = plain HTTP."""
    sec = settings.security
    if sec.tls_cert is not None and sec.tls_key is not None:
        pair = (sec.tls_cert, sec.tls_key)
    elif sec.tls_self_signed:
        directory = settings.data_dir / "certificates"
        pair = (directory / f"{settings.node_id}.crt", directory / f"{settings.node_id}.key")
        if not pair[0].exists() or not pair[1].exists():
            generate_self_signed(pair[0], pair[1], node_names(settings))
            log.info("Generated a self-signed certificate %s", pair[0])
        elif _is_ca(x509.load_pem_x509_certificate(pair[0].read_bytes())):
            generate_self_signed(pair[0], pair[1], node_names(settings))
            log.warning(
                "Replaced the self-signed certificate %s: it was a CA certificate (made by an "
                "earlier release); clients that pinned it must trust the new one.",
                pair[0],
            )
    else:
        return None
    warning = expiry_warning(pair[0])
    if warning:
        log.warning(warning)
    return pair


def node_names(settings: Settings) -> list[str]:
    names = [settings.node_id, settings.api_host, "localhost", "127.0.0.1", socket.gethostname()]
    if settings.advertise_url:
        host = settings.advertise_url.split("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0]
        names.append(host)
    return list(dict.fromkeys(n for n in names if n and n != "0.0.0.0"))


_LEAF_USAGE = x509.KeyUsage(
    digital_signature=True,
    key_agreement=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_cert_sign=False,
    crl_sign=False,
    encipher_only=False,
    decipher_only=False,
)


def generate_self_signed(cert_path: Path, key_path: Path, names: list[str]) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=365 * SELF_SIGNED_YEARS))
        .add_extension(x509.SubjectAlternativeName([_san(n) for n in names]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_LEAF_USAGE, critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    key_bytes = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # The key is readable by the service account only (spec §8.2).
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key_bytes)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _san(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def expiry(cert_path: Path) -> dt.datetime:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    return cert.not_valid_after_utc


def expiry_warning(cert_path: Path, now: dt.datetime | None = None) -> str | None:
    """A log line when the certificate expires within 30 days (or has expired)."""
    ends = expiry(cert_path)
    left = ends - (now or dt.datetime.now(dt.UTC))
    if left > WARN_BEFORE:
        return None
    if left.total_seconds() <= 0:
        return f"The API certificate {cert_path} expired on {ends.isoformat()}."
    return f"The API certificate {cert_path} expires on {ends.isoformat()} ({left.days} days)."
