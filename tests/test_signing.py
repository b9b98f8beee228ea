"""Code signing: ``fleetjobs keys init`` / ``fleetjobs sign`` and ``signing.verify`` (what a device runs)."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from fleetjobs.security import signing

FLEETJOBS = str(Path(sys.executable).with_name("fleetjobs"))


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETJOBS_")}
    return subprocess.run([FLEETJOBS, *args], capture_output=True, text=True, timeout=60, env=env)


def test_keys_init_sign_verify(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    proc = run_cli("keys", "init", "--out", str(keys))
    assert proc.returncode == 0, proc.stderr
    key, cert = keys / "signing.key", keys / "signing.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    parsed = x509.load_pem_x509_certificate(cert.read_bytes())
    assert ExtendedKeyUsageOID.CODE_SIGNING in parsed.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    again = run_cli("keys", "init", "--out", str(keys))
    assert again.returncode == 1 and "exists" in again.stderr

    firmware = tmp_path / "fw.bin"
    data = os.urandom(100_000)
    firmware.write_bytes(data)
    proc = run_cli("sign", str(firmware), "--key", str(key), "--cert", str(cert))
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["hashAlgorithm"] == "SHA256" and doc["signatureAlgorithm"] == "ECDSA"
    assert doc["sha256"] == hashlib.sha256(data).hexdigest()
    assert doc["certificate"] == cert.read_text()

    assert signing.verify(data, doc["signature"], doc["certificate"])
    assert signing.verify(firmware, doc["signature"], doc["certificate"].encode())
    tampered = bytearray(data)
    tampered[12345] ^= 0x01
    assert not signing.verify(bytes(tampered), doc["signature"], doc["certificate"])
    assert not signing.verify(data + b"\0", doc["signature"], doc["certificate"])
    assert not signing.verify(data, doc["signature"][:-4] + "AAA=", doc["certificate"])
    assert not signing.verify(data, "not base64!", doc["certificate"])
    assert not signing.verify(data, doc["signature"], "not a certificate")

    # another key pair's certificate does not verify it
    _, other_cert = signing.init_keys(tmp_path / "other")
    assert not signing.verify(data, doc["signature"], other_cert.read_text())
    # and a certificate that is not the key's is refused when signing
    mismatch = run_cli("sign", str(firmware), "--key", str(key), "--cert", str(other_cert))
    assert mismatch.returncode == 1 and "not the signing key's" in mismatch.stderr


def test_sign_bytes_without_certificate(tmp_path: Path) -> None:
    key, cert = signing.init_keys(tmp_path)
    doc = signing.sign(b"hello", key)
    assert "certificate" not in doc
    assert signing.verify(b"hello", doc["signature"], cert.read_text())
    assert not signing.verify(b"hellO", doc["signature"], cert.read_text())
