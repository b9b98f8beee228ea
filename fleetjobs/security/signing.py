"""Code signing of job artifacts: ECDSA P-256 over SHA-256, as AWS IoT's custom code signing.

``init_keys`` makes a signing key (0600) and a self-signed X.509 certificate (key usage
digitalSignature, extended key usage codeSigning); ``sign`` produces the ``codesign``-style
JSON a job document or a package version's attributes carry; ``verify`` is what a device runs.
Devices must pin the certificate (or its public key) they trust: ``verify`` checks that the
signature was made by the given certificate's key, not who that certificate belongs to.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fleetjobs.security.certs import CERT_MODE, KEY_MODE, write_atomic

KEY_FILE = "signing.key"
CERT_FILE = "signing.pem"
DAYS = 3650
_CHUNK = 1024 * 1024


class SigningError(Exception):
    """A signing operation that cannot be done as asked (the CLI prints the message)."""


def init_keys(
    out_dir: Path, *, common_name: str = "fleetjobs code signing", days: int = DAYS, force: bool = False
) -> tuple[Path, Path]:
    """Write ``signing.key`` (EC P-256, 0600) and ``signing.pem`` (self-signed) in ``out_dir``."""
    out_dir = Path(out_dir)
    key_path, cert_path = out_dir / KEY_FILE, out_dir / CERT_FILE
    if not force and (key_path.exists() or cert_path.exists()):
        raise SigningError(f"{key_path} or {cert_path} exists already (--force to replace them)")
    if days < 1:
        raise SigningError("days must be at least 1")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_atomic(
        key_path,
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
        KEY_MODE,
    )
    write_atomic(cert_path, cert.public_bytes(serialization.Encoding.PEM), CERT_MODE)
    return key_path, cert_path


def _digest(data: bytes | str | Path) -> bytes:
    if isinstance(data, bytes):
        return hashlib.sha256(data).digest()
    h = hashlib.sha256()
    with open(data, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.digest()


def _load_key(key: bytes | str | Path) -> ec.EllipticCurvePrivateKey:
    pem = key if isinstance(key, bytes) else Path(key).read_bytes()
    try:
        loaded = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as e:
        raise SigningError(f"cannot read the signing key: {e}") from e
    if not isinstance(loaded, ec.EllipticCurvePrivateKey):
        raise SigningError("the signing key is not an ECDSA key")
    return loaded


def sign(
    data: bytes | str | Path, key: bytes | str | Path, certificate: bytes | str | Path | None = None
) -> dict[str, Any]:
    """Sign the bytes (or the file at a path).  ``key``: PEM bytes or a path; ``certificate`` likewise
    (checked to match the key) or None (then no ``certificate`` in the result)."""
    private = _load_key(key)
    digest = _digest(data)
    signature = private.sign(digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
    result: dict[str, Any] = {
        "signature": base64.b64encode(signature).decode(),
        "hashAlgorithm": "SHA256",
        "signatureAlgorithm": "ECDSA",
        "sha256": digest.hex(),
    }
    if certificate is not None:
        pem = certificate if isinstance(certificate, bytes) else Path(certificate).read_bytes()
        try:
            cert = x509.load_pem_x509_certificate(pem)
        except ValueError as e:
            raise SigningError(f"cannot read the certificate: {e}") from e
        if cert.public_key() != private.public_key():
            raise SigningError("the certificate is not the signing key's")
        result["certificate"] = cert.public_bytes(serialization.Encoding.PEM).decode()
    return result


def verify(data: bytes | str | Path, signature_b64: str, certificate_pem: str | bytes) -> bool:
    """True if ``signature_b64`` is an ECDSA-SHA256 signature of the data by the certificate's key."""
    try:
        pem = certificate_pem.encode() if isinstance(certificate_pem, str) else certificate_pem
        public = x509.load_pem_x509_certificate(pem).public_key()
        signature = base64.b64decode(signature_b64, validate=True)
    except (ValueError, TypeError, binascii.Error):
        return False
    if not isinstance(public, ec.EllipticCurvePublicKey):
        return False
    try:
        public.verify(signature, _digest(data), ec.ECDSA(utils.Prehashed(hashes.SHA256())))
    except InvalidSignature:
        return False
    return True
