"""The gateway survives a broker restart: it reconnects, resubscribes and serves devices again."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.fleet import Fleet, thing_arn
from tests.harness import free_port, in_ci, unique
from tests.mqtt_device import Device


def start_mosquitto(conf: Path, port: int) -> subprocess.Popen[bytes]:
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(exe).exists():
        if in_ci():
            pytest.fail("mosquitto is not installed and CI=true")
        pytest.skip("mosquitto not installed")
    proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("mosquitto did not start")


def first_answer(dev: Device, suffix: str, attempts: int = 60) -> tuple[str, dict]:
    for _ in range(attempts):
        try:
            return dev.request(suffix, timeout=0.5)
        except Exception:
            continue
    raise TimeoutError(f"no answer to {suffix}")


def test_gateway_reconnects_after_broker_restart(backends, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n")
    broker = start_mosquitto(conf, port)
    srv = backends.server(
        env={"FLEETJOBS_MQTT_URL": f"mqtt://127.0.0.1:{port}", "FLEETJOBS_MQTT_CLIENT_ID": unique("gw")}
    ).start()
    try:
        iot = srv.client("iot")
        fleet = Fleet(iot)
        thing = fleet.things(1)[0]
        job_id = fleet.job([thing_arn(thing)])
        dev = Device("127.0.0.1", port, thing)
        kind, doc = first_answer(dev, "start-next")
        assert kind == "accepted" and doc["execution"]["jobId"] == job_id
        dev.close()
        broker.terminate()
        broker.wait(timeout=10)
        broker = start_mosquitto(conf, port)
        # A fresh device connection after the restart: the gateway is back and answers.
        dev = Device("127.0.0.1", port, thing)
        kind, doc = first_answer(dev, f"{job_id}/update")
        assert kind == "rejected" and doc["code"] == "InvalidRequest"  # no status given: refused, but answered
        kind, _ = dev.request(f"{job_id}/update", {"status": "SUCCEEDED"})
        assert kind == "accepted"
        dev.close()
        assert iot.describe_job(jobId=job_id)["job"]["status"] == "COMPLETED"
    finally:
        srv.stop()
        broker.terminate()
        broker.wait(timeout=10)
