"""The gateway survives a broker restart: it reconnects, resubscribes and serves devices again."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.fleet import Fleet, group_arn, thing_arn
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


def broker_and_server(
    backends: Any, tmp_path: Path, extra_conf: str = ""
) -> tuple[Path, int, subprocess.Popen[bytes], Any]:
    """A Mosquitto of the test's own (plain, anonymous; restartable from ``conf`` on ``port``) and a
    server joined to it: (conf, port, broker, server)."""
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n{extra_conf}")
    broker = start_mosquitto(conf, port)
    srv = backends.server(
        env={"FLEETJOBS_MQTT_URL": f"mqtt://127.0.0.1:{port}", "FLEETJOBS_MQTT_CLIENT_ID": unique("gw")}
    ).start()
    return conf, port, broker, srv


def first_answer(dev: Device, suffix: str, attempts: int = 60) -> tuple[str, dict]:
    for _ in range(attempts):
        try:
            return dev.request(suffix, timeout=0.5)
        except Exception:
            continue
    raise TimeoutError(f"no answer to {suffix}")


def test_gateway_reconnects_after_broker_restart(backends, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    conf, port, broker, srv = broker_and_server(backends, tmp_path)
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


class Observer:
    """Hears every thing's notify-next; subscribes again on every (re)connect, as a device does."""

    def __init__(self, port: int) -> None:
        import json
        import threading

        import paho.mqtt.client as mqtt

        self.notified: dict[str, set[str]] = {}
        self._lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=unique("observer"))
        self.client.reconnect_delay_set(min_delay=0.05, max_delay=0.2)

        def on_connect(client: Any, *_: Any) -> None:
            client.subscribe("$aws/things/+/jobs/notify-next", qos=1)

        def on_message(_client: Any, _userdata: Any, msg: Any) -> None:
            doc = json.loads(msg.payload)
            execution = doc.get("execution") or {}
            with self._lock:
                self.notified.setdefault(execution.get("jobId", ""), set()).add(msg.topic.split("/")[2])

        self.client.on_connect = on_connect
        self.client.on_message = on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def things_told_of(self, job_id: str) -> set[str]:
        with self._lock:
            return set(self.notified.get(job_id, set()))

    def close(self) -> None:
        self.client.disconnect()  # first: the network thread ends at once
        self.client.loop_stop()


def test_no_notify_next_is_lost_when_the_broker_dies_mid_notification(backends, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A 500-thing job is created while the broker hangs (SIGSTOP), so its notifications are in
    flight when the broker is killed; after the restart every thing is told of the job."""
    conf, port, broker, srv = broker_and_server(backends, tmp_path, "max_queued_messages 100000\n")
    observer = Observer(port)
    try:
        iot = srv.client("iot")
        fleet = Fleet(iot)
        probe = Device("127.0.0.1", port, unique("probe"))
        probe.until_answered()  # the gateway is connected
        probe.close()
        things = fleet.things(500)
        group = fleet.group("all", things)
        broker.send_signal(signal.SIGSTOP)
        job_id = fleet.job([group_arn(group)])
        time.sleep(1.0)  # the drain takes the notice and publishes into the hung broker
        broker.kill()
        broker.wait(timeout=10)
        broker = start_mosquitto(conf, port)
        deadline = time.monotonic() + 90
        while observer.things_told_of(job_id) != set(things) and time.monotonic() < deadline:
            time.sleep(0.2)
        missing = set(things) - observer.things_told_of(job_id)
        assert not missing, f"{len(missing)} things never heard notify-next, e.g. {sorted(missing)[:3]}"
    finally:
        observer.close()
        srv.stop()
        broker.kill()
        broker.wait(timeout=10)


def test_a_device_change_made_while_the_broker_is_away_is_announced_after(backends, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """An HTTPS update while the gateway has no broker: its notify-next (the next job) is kept as a
    durable notice and published once the broker is back, instead of being dropped."""
    conf, port, broker, srv = broker_and_server(backends, tmp_path)
    observer = None
    try:
        iot, data = srv.client("iot"), srv.client("iot-jobs-data")
        fleet = Fleet(iot)
        thing = fleet.things(1)[0]
        first = fleet.job([thing_arn(thing)])
        second = fleet.job([thing_arn(thing)])
        data.start_next_pending_job_execution(thingName=thing)
        observer = Observer(port)
        broker.terminate()
        broker.wait(timeout=10)
        deadline = time.monotonic() + 30
        while "MQTT connection lost" not in srv.output():  # the gateway knows: nothing can be published
            assert time.monotonic() < deadline
            time.sleep(0.05)
        data.update_job_execution(jobId=first, thingName=thing, status="SUCCEEDED")  # $next is now `second`
        broker = start_mosquitto(conf, port)
        deadline = time.monotonic() + 30
        while thing not in observer.things_told_of(second):
            assert time.monotonic() < deadline, f"notify-next of {second} never came:\n{srv.log()}"
            time.sleep(0.1)
    finally:
        if observer is not None:
            observer.close()
        srv.stop()
        broker.terminate()
        broker.wait(timeout=10)
