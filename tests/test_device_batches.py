"""Device requests that arrive together are applied in batches (one transaction each), over a real
broker and both databases.  To make requests arrive together, the server is paused (SIGSTOP) while
devices publish, then resumed: everything queued at the broker reaches the gateway at once.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tests.fleet import Fleet, group_arn
from tests.harness import Server, unique
from tests.mqtt_device import Device


@contextmanager
def paused(server: Server) -> Iterator[None]:
    assert server.proc is not None
    server.proc.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        server.proc.send_signal(signal.SIGCONT)


def ready(port: int) -> None:
    probe = Device("127.0.0.1", port, unique("probe"))
    try:
        probe.until_answered()
    finally:
        probe.close()


def run_job(iot: Any, fleet: Fleet, n: int) -> tuple[list[str], str]:
    things = fleet.things(n)
    job_id = fleet.job([group_arn(fleet.group("g", things))])
    return things, job_id


def test_requests_of_one_thing_keep_their_order_in_a_batch(mqtt_server, device_factory) -> None:  # type: ignore[no-untyped-def]
    """Each device sends start-next and two updates that only succeed in that order (each names the
    version the previous one produced), all before any answer; 20 devices at once."""
    iot = mqtt_server.client("iot")
    fleet = Fleet(iot)
    things, job_id = run_job(iot, fleet, 20)
    devices = [device_factory(t) for t in things]
    waits = []
    with paused(mqtt_server):
        for dev in devices:
            waits.append(dev.send("start-next", {}))
            waits.append(dev.send(f"{job_id}/update", {"status": "IN_PROGRESS", "expectedVersion": 2}))
            waits.append(dev.send(f"{job_id}/update", {"status": "SUCCEEDED", "expectedVersion": 3}))
    answers = [w(timeout=30) for w in waits]
    assert [kind for kind, _ in answers] == ["accepted"] * len(waits), [d for k, d in answers if k != "accepted"]
    job = iot.describe_job(jobId=job_id)["job"]
    assert job["status"] == "COMPLETED"
    assert job["jobProcessDetails"]["numberOfSucceededThings"] == 20


def test_one_bad_request_in_a_batch_is_rejected_alone(mqtt_server, device_factory) -> None:  # type: ignore[no-untyped-def]
    iot = mqtt_server.client("iot")
    fleet = Fleet(iot)
    things, job_id = run_job(iot, fleet, 10)
    devices = [device_factory(t) for t in things]
    with paused(mqtt_server):
        good = [d.send("start-next", {}) for d in devices[1:]]
        stale = devices[0].send(f"{job_id}/update", {"status": "IN_PROGRESS", "expectedVersion": 7})
        wrong = devices[0].send(f"{job_id}/update", {"status": "CANCELED"})  # not a status a device may set
        devices[0].client.publish(f"{devices[0].base}/start-next", b"{not json", qos=1)
    kind, doc = stale(timeout=30)
    assert kind == "rejected" and doc["code"] == "VersionMismatch"
    kind, doc = wrong(timeout=30)
    assert kind == "rejected" and doc["code"] == "InvalidRequest"
    _, doc = devices[0].wait_for(lambda t, d: t.endswith("/start-next/rejected"), timeout=30)
    assert doc["code"] == "InvalidJson"
    for wait, thing in zip(good, things[1:], strict=True):
        kind, doc = wait(timeout=30)
        assert kind == "accepted" and doc["execution"]["jobId"] == job_id
        assert iot.describe_job_execution(jobId=job_id, thingName=thing)["execution"]["status"] == "IN_PROGRESS"
    untouched = iot.describe_job_execution(jobId=job_id, thingName=things[0])["execution"]
    assert (untouched["status"], untouched["versionNumber"]) == ("QUEUED", 1)


def test_kill_mid_batch_loses_no_acknowledged_request_and_applies_none_twice(backends, private_mosquitto) -> None:  # type: ignore[no-untyped-def]
    """200 devices each send start-next and a progress update (naming version 2) at once; fleetjobs
    is killed (-9) while it works through them and started again on the same data.  Every request
    is answered, and every execution moved exactly twice (version 3), none three times."""
    port = private_mosquitto
    env = {"FLEETJOBS_MQTT_URL": f"mqtt://127.0.0.1:{port}", "FLEETJOBS_MQTT_CLIENT_ID": unique("gw")}
    srv = backends.server(env=env).start()
    restarted = None
    devices: list[Device] = []
    try:
        iot = srv.client("iot")
        fleet = Fleet(iot)
        ready(port)
        things, job_id = run_job(iot, fleet, 200)
        devices = [Device("127.0.0.1", port, t) for t in things]
        waits = []
        with paused(srv):
            for dev in devices:
                waits.append(dev.send("start-next", {}))
                progress = {"status": "IN_PROGRESS", "expectedVersion": 2, "statusDetails": {"step": "1"}}
                waits.append(dev.send(f"{job_id}/update", progress))
        time.sleep(0.3)  # part of the flood is being handled
        srv.stop(kill=True)
        restarted = Server(data_dir=srv.data_dir, database_url=srv.database_url, port=srv.port, env=env).start()
        backends._servers.append(restarted)
        answers = [w(timeout=60) for w in waits]
        assert [k for k, _ in answers] == ["accepted"] * len(waits), [d for k, d in answers if k != "accepted"][:3]
        versions = {
            t: restarted.client("iot").describe_job_execution(jobId=job_id, thingName=t)["execution"]["versionNumber"]
            for t in things
        }
        assert set(versions.values()) == {3}, {t: v for t, v in versions.items() if v != 3}
    finally:
        for dev in devices:
            dev.close()
        srv.stop()
        if restarted is not None:
            restarted.stop()
