"""fleetjobs' own certificate authority: the CA, device, broker-server and service certificates.

Why a CA of its own: AWS IoT identifies a device by its X.509 certificate; a self-hosted broker
can do the same with mutual TLS if every device certificate comes from one CA the broker trusts and
names the thing in its subject CN (Mosquitto's ``use_identity_as_username`` turns the CN into the
MQTT username that the ACL is keyed on). So the CN *is* the device's identity, and this module is
the only place that decides which CN a certificate gets:

* device certificates: CN = thing name (AWS's thing-name pattern, and never the reserved service
  identity), extended key usage clientAuth only;
* the broker's server certificate: SANs for the names/addresses devices connect to, serverAuth
  only, so it can never be presented as a client identity;
* the service certificate: CN ``fleetjobs-service``, the identity the broker ACL lets read and write
  every thing's ``$aws/...`` topics.

Every leaf is ``CA:FALSE`` and the CA has ``pathlen:0``: a device cannot use its own key to mint a
certificate for another thing. Keys are EC P-256, written in the traditional ``EC PRIVATE KEY`` PEM
form because every TLS stack a device may use (OpenSSL, s2n in the AWS CRT, mbedTLS, Python's ssl)
reads it. Keys are written 0600 and certificates 0644, each atomically (temporary file, fsync,
rename), so a crash never leaves half a key where a broker or device will look for it.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import secrets
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_CERT = "ca.pem"
CA_KEY = "ca.key"
SERVER_NAME = "server"
SERVICE_IDENTITY = "fleetjobs-service"
"""CN of fleetjobs' own broker identity; reserved: no thing may be issued a certificate with it."""

CA_DAYS = 3650
LEAF_DAYS = 365
# Devices often boot with a clock a little behind; a certificate valid "from now" would be refused.
BACKDATE = timedelta(minutes=5)

THING_NAME_RE = re.compile(r"[a-zA-Z0-9:_-]{1,128}")
_T = TypeVar("_T")

KEY_MODE = 0o600
CERT_MODE = 0o644


class CertificateError(Exception):
    """A certificate operation that cannot be done as asked (the CLI prints the message)."""


class CAExistsError(CertificateError):
    """``init_ca`` found a CA already: replacing it would orphan every certificate it issued."""


class InvalidThingName(CertificateError, ValueError):
    """The name cannot be a thing's identity (AWS's pattern, or the reserved service identity)."""


@dataclass(frozen=True)
class CA:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    cert_path: Path
    key_path: Path


def certs_dir(data_dir: Path) -> Path:
    """Where ``fleetjobs certs`` keeps the CA (and, by default, what it issues) in a data dir."""
    return Path(data_dir) / "certs"


def devices_dir(data_dir: Path) -> Path:
    """Default output directory of ``fleetjobs certs issue``."""
    return certs_dir(data_dir) / "devices"


def validate_thing_name(name: str) -> str:
    """Check a thing name the way AWS IoT does; it becomes a CN, an MQTT username and an ACL topic level."""
    if not isinstance(name, str) or not THING_NAME_RE.fullmatch(name):
        raise InvalidThingName(f"invalid thing name {name!r}: it must be 1-128 characters of [a-zA-Z0-9:_-]")
    if name == SERVICE_IDENTITY:
        raise InvalidThingName(f"{SERVICE_IDENTITY!r} cannot be a thing name: it is fleetjobs' own broker identity")
    return name


# --------------------------------------------------------------------------------------------- files


def write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Replace ``path`` with ``data`` (permissions ``mode``, whatever the umask) in one rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), mode)  # O_CREAT's mode is filtered by the umask
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    """Make a rename durable (not supported everywhere: best effort)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _private_dir(directory: Path) -> Path:
    """Create a directory that will hold private keys as 0700 (an existing one is left as it is)."""
    directory = Path(directory)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    return directory


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _write_pair(out_dir: Path, stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> tuple[Path, Path]:
    """Key first, then certificate: a certificate on disk always has its key beside it."""
    out_dir = _private_dir(out_dir)
    cert_path, key_path = out_dir / f"{stem}.pem", out_dir / f"{stem}.key"
    write_atomic(key_path, _key_pem(key), KEY_MODE)
    write_atomic(cert_path, _cert_pem(cert), CERT_MODE)
    return cert_path, key_path


# ------------------------------------------------------------------------------------------------ CA


def init_ca(directory: Path, *, force: bool = False, days: int = CA_DAYS) -> CA:
    """Create the CA in ``directory`` (``ca.pem`` + ``ca.key``).

    Refuses when either file exists unless ``force``: every device certificate and every broker
    trusting the old CA would silently stop working.
    """
    directory = _private_dir(directory)
    cert_path, key_path = directory / CA_CERT, directory / CA_KEY
    if not force and (cert_path.exists() or key_path.exists()):
        raise CAExistsError(f"a CA already exists in {directory} (use --force to replace it and every certificate)")
    _check_days(days)
    key = ec.generate_private_key(ec.SECP256R1())
    # A short random suffix tells installations' CAs apart in trust stores and error messages.
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fleetjobs"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"fleetjobs CA {secrets.token_hex(4)}"),
        ]
    )
    now = datetime.now(UTC)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(key_cert_sign=True, crl_sign=True, digital_signature=True), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, hashes.SHA256())
    )
    write_atomic(key_path, _key_pem(key), KEY_MODE)
    write_atomic(cert_path, _cert_pem(cert), CERT_MODE)
    return CA(cert, key, cert_path, key_path)


def load_ca(directory: Path) -> CA:
    """Read the CA made by ``init_ca``; a clear error when there is none or the pair does not match."""
    directory = Path(directory)
    cert_path, key_path = directory / CA_CERT, directory / CA_KEY
    if not cert_path.exists() or not key_path.exists():
        raise CertificateError(f"no CA in {directory}: run 'fleetjobs certs init' first")
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
        raise CertificateError(f"{key_path} is not the private key of {cert_path}")
    return CA(cert, key, cert_path, key_path)


# ---------------------------------------------------------------------------------------------- leaves


def issue_device_cert(ca: CA, thing: str, out_dir: Path, *, days: int = LEAF_DAYS) -> tuple[Path, Path]:
    """A client certificate whose CN is the thing name; writes ``THING.pem`` and ``THING.key``.

    Issuing again for the same thing replaces the files (key rotation); the old certificate stays
    valid until it expires, as nothing here keeps a revocation list.
    """
    validate_thing_name(thing)
    cert, key = _leaf(ca, thing, days, ExtendedKeyUsageOID.CLIENT_AUTH)
    return _write_pair(out_dir, thing, cert, key)


def issue_service_cert(ca: CA, out_dir: Path, *, days: int = LEAF_DAYS) -> tuple[Path, Path]:
    """fleetjobs' own client certificate (CN ``fleetjobs-service``): ``fleetjobs-service.pem/.key``."""
    cert, key = _leaf(ca, SERVICE_IDENTITY, days, ExtendedKeyUsageOID.CLIENT_AUTH)
    return _write_pair(out_dir, SERVICE_IDENTITY, cert, key)


def issue_server_cert(
    ca: CA,
    out_dir: Path,
    *,
    hosts: Sequence[str] = (),
    ips: Sequence[str] = (),
    days: int = LEAF_DAYS,
    stem: str = SERVER_NAME,
) -> tuple[Path, Path]:
    """The broker's TLS server certificate, valid for ``hosts`` (DNS names) and ``ips``.

    With neither given it is for ``localhost`` and ``127.0.0.1``. A "host" that parses as an IP
    address becomes an IP SAN, since TLS clients only match addresses against IP SANs.
    """
    dns: list[str] = []
    addrs: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for h in hosts:
        try:
            addrs.append(ipaddress.ip_address(h))
        except ValueError:
            if not h or any(c.isspace() or c == "/" for c in h):
                raise CertificateError(f"invalid host name {h!r}") from None
            dns.append(h)
    for ip in ips:
        try:
            addrs.append(ipaddress.ip_address(ip))
        except ValueError:
            raise CertificateError(f"invalid IP address {ip!r}") from None
    if not dns and not addrs:
        dns, addrs = ["localhost"], [ipaddress.ip_address("127.0.0.1")]
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in _unique(dns)]
    sans += [x509.IPAddress(a) for a in _unique(addrs)]
    cn = dns[0] if dns else str(addrs[0])
    cert, key = _leaf(ca, cn, days, ExtendedKeyUsageOID.SERVER_AUTH, sans=sans)
    return _write_pair(out_dir, stem, cert, key)


def _leaf(
    ca: CA,
    cn: str,
    days: int,
    usage: x509.ObjectIdentifier,
    *,
    sans: Sequence[x509.GeneralName] = (),
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    _check_days(days)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    not_after = min(now + timedelta(days=days), ca.cert.not_valid_after_utc)  # never outlive the CA
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([_common_name(cn)]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(digital_signature=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return builder.sign(ca.key, hashes.SHA256()), key


def _common_name(cn: str) -> x509.NameAttribute:
    """The CN attribute, even beyond RFC 5280's 64-character bound.

    AWS thing names reach 128 characters and the broker takes the identity from the CN alone
    (``use_identity_as_username``), so the CN must hold the whole name. OpenSSL reads and verifies
    such certificates; only ``cryptography``'s builder enforces the bound, hence ``_validate``.
    """
    if len(cn) <= 64:
        return x509.NameAttribute(NameOID.COMMON_NAME, cn)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return x509.NameAttribute(NameOID.COMMON_NAME, cn, _validate=False)


def _key_usage(
    *, digital_signature: bool = False, key_cert_sign: bool = False, crl_sign: bool = False
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _check_days(days: int) -> None:
    if not isinstance(days, int) or days < 1:
        raise CertificateError(f"validity must be a positive number of days, not {days!r}")


def _unique(items: Iterable[_T]) -> list[_T]:
    return list(dict.fromkeys(items))
