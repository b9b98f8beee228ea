"""Certificates the embedded broker and the gateway need for ``--mqtt-tls``, issued on demand.

Both come from the CA in DATA_DIR/certs (``fleetjobs certs init``) and are the files ``fleetjobs certs
server`` / ``certs service`` write; one that is missing, not from that CA, about to expire, or (the server
certificate) not valid for the address the gateway connects to is issued now, under a lock so that instances
starting together on one data dir never pair one's key with another's certificate.
"""

from __future__ import annotations

import fcntl
import logging
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from fleetjobs.security import certs

log = logging.getLogger("fleetjobs.security")

WILDCARD_HOSTS = ("0.0.0.0", "::", "")


def _current_names(cert: x509.Certificate) -> list[str]:
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [*names.get_values_for_type(x509.DNSName), *(str(a) for a in names.get_values_for_type(x509.IPAddress))]


def ensure_certificate(
    data_dir: Path, which: str, *, gateway_host: str, listen_host: str
) -> tuple[str, tuple[str, str]]:
    """The CA file and the ``which`` ("server": the broker's; "service": the gateway's) certificate and
    key files, valid now; raises CertificateError ("run 'fleetjobs certs init' first") without a CA."""
    cdir = certs.certs_dir(data_dir)
    ca = certs.load_ca(cdir)
    stem = certs.SERVER_NAME if which == "server" else certs.SERVICE_IDENTITY
    cert_path, key_path = cdir / f"{stem}.pem", cdir / f"{stem}.key"
    with open(cdir / ".issue.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        sans: list[str] = []
        try:
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            cert.verify_directly_issued_by(ca.cert)
            fresh = cert.not_valid_after_utc > datetime.now(UTC) + timedelta(days=1)
            valid = fresh and key.public_key() == cert.public_key()
            if which == "server":
                sans = _current_names(cert)
                valid = valid and gateway_host in sans
        except (OSError, ValueError, TypeError, InvalidSignature):
            valid = False
        if not valid:
            if which == "server":
                # Whatever names it had (e.g. from 'fleetjobs certs server --host'), plus loopback and the listen host.
                wanted = [*sans, "localhost", "127.0.0.1", gateway_host]
                if listen_host in WILDCARD_HOSTS:
                    wanted.append(socket.getfqdn())
                certs.issue_server_cert(ca, cdir, hosts=list(dict.fromkeys(h for h in wanted if h)))
            else:
                certs.issue_service_cert(ca, cdir)
            log.info("issued %s for the embedded broker's TLS", cert_path)
    return str(ca.cert_path), (str(cert_path), str(key_path))
