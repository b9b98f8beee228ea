"""``fleetjobs serve`` with worker processes (``--workers``, default ``auto``: one per core on
PostgreSQL): the supervisor, the shared HTTP port, the device traffic through worker 0's embedded
broker, and dying together."""

from __future__ import annotations

import http.client
import os
import signal
import time
from typing import Any

import psutil
import pytest

from tests.fleet import Fleet, thing_arn
from tests.harness import Server, unique
from tests.mqtt_device import Device


def workers_of(srv: Server) -> list[psutil.Process]:
    """The supervisor's worker processes (multiprocessing's resource tracker is not one)."""
    assert srv.proc is not None
    children = psutil.Process(srv.proc.pid).children()
    return [c for c in children if "resource_tracker" not in " ".join(c.cmdline())]


def wait_until(check: Any, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.1)


@pytest.fixture
def pg_workers(backends):  # type: ignore[no-untyped-def]
    if backends.kind != "postgres":
        pytest.skip("auto gives one process on SQLite (test_auto_is_one_process_on_sqlite)")
    srv = backends.server(env={"FLEETJOBS_WORKERS": "auto"}).start()
    # Health answers once one worker is up; the banner comes once all are.
    wait_until(lambda: "worker processes" in srv.output())
    return srv


def test_auto_is_one_process_on_sqlite(backends) -> None:  # type: ignore[no-untyped-def]
    if backends.kind != "sqlite":
        pytest.skip("the PostgreSQL default is test_auto_runs_one_worker_per_core_on_postgres")
    srv = backends.server(env={"FLEETJOBS_WORKERS": "auto"}).start()
    assert workers_of(srv) == []
    assert "worker processes" not in srv.output()
    srv.client("iot").create_thing(thingName=unique("t"))


def test_auto_runs_one_worker_per_core_on_postgres(pg_workers: Server) -> None:
    cores = len(os.sched_getaffinity(0))
    assert len(workers_of(pg_workers)) == cores
    # The banner comes once every worker is up (health answers as soon as the first one is).
    assert cores == 1 or wait_until(lambda: f"{cores} worker processes" in pg_workers.output())


def test_connections_are_spread_over_the_workers(pg_workers: Server) -> None:
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one core: one worker")
    conns = []
    for _ in range(40):
        c = http.client.HTTPConnection("127.0.0.1", pg_workers.port, timeout=10)
        c.request("GET", "/_fleetjobs/health")
        assert c.getresponse().read()
        conns.append(c)  # kept open: its worker still holds it
    try:
        holding = [
            sum(
                1
                for n in w.net_connections(kind="tcp")
                if n.status == psutil.CONN_ESTABLISHED and n.laddr.port == pg_workers.port
            )
            for w in workers_of(pg_workers)
        ]
        assert sum(holding) == 40
        assert all(h > 0 for h in holding), holding
    finally:
        for c in conns:
            c.close()


def test_devices_are_served_whichever_worker_takes_the_api_call(pg_workers: Server) -> None:
    """CreateJob may land on any worker; worker 0's gateway reads the device requests, every
    worker's gateway publishes its own notices."""
    iot = pg_workers.client("iot")
    data = pg_workers.client("iot-jobs-data")
    fleet = Fleet(iot)
    things = fleet.things(6)
    devices = [Device("127.0.0.1", pg_workers.mqtt_port, t) for t in things]
    try:
        devices[0].until_answered()
        for d in devices:
            d.client.subscribe(f"{d.base}/notify-next", qos=1)
        time.sleep(0.5)
        job_ids = [fleet.job([thing_arn(t)]) for t in things]  # six calls, spread over the workers
        for d, job_id in zip(devices, job_ids, strict=True):
            _, doc = d.wait_for(lambda t, _d: t.endswith("/notify-next"), timeout=20)
            assert doc["execution"]["jobId"] == job_id
        for d, job_id in zip(devices, job_ids, strict=True):
            outcome, doc = d.request("start-next")
            assert outcome == "accepted" and doc["execution"]["jobId"] == job_id
            # The HTTPS device API, on whichever worker: its change is still announced over MQTT.
            data.update_job_execution(jobId=job_id, thingName=d.thing, status="SUCCEEDED")
            d.wait_for(lambda t, doc: t.endswith("/notify-next") and "execution" not in doc, 20)
        for job_id in job_ids:
            assert iot.describe_job(jobId=job_id)["job"]["jobProcessDetails"]["numberOfSucceededThings"] == 1
    finally:
        for d in devices:
            d.close()


def test_a_worker_that_dies_is_started_again(pg_workers: Server) -> None:
    iot = pg_workers.client("iot")
    before = workers_of(pg_workers)
    victim = before[-1]
    victim.send_signal(signal.SIGKILL)
    victim.wait(10)
    # The others answer meanwhile; the supervisor starts a new one.
    iot.create_thing(thingName=unique("t"))
    after = wait_until(lambda: (w := workers_of(pg_workers)) and len(w) == len(before) and victim not in w and w)
    assert victim.pid not in {w.pid for w in after}
    wait_until(lambda: "worker" in pg_workers.log() and "starting it again" in pg_workers.log())
    assert iot.list_things(maxResults=1)["things"]


def test_killing_the_supervisor_ends_every_worker(pg_workers: Server) -> None:
    workers = workers_of(pg_workers)
    assert workers
    pg_workers.stop(kill=True)
    _, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive, [p.pid for p in alive]
    # Nothing holds the port: the same server starts again on it, with its state.
    pg_workers.start()
    assert pg_workers.client("iot").list_things()["things"] is not None


def test_sigterm_stops_the_workers_gracefully(pg_workers: Server) -> None:
    workers = workers_of(pg_workers)
    assert pg_workers.proc is not None
    pg_workers.stop()
    assert pg_workers.proc.returncode == 0, pg_workers.log()
    _, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive
    assert "Traceback" not in pg_workers.output()


def test_workers_setting_is_checked(backends, tmp_path) -> None:  # type: ignore[no-untyped-def]
    for value, message in (("0", "between 1 and 64"), ("many", "a number or auto")):
        srv = Server(data_dir=tmp_path / value, env={"FLEETJOBS_WORKERS": value})
        with pytest.raises(RuntimeError):
            srv.start(timeout=20)
        assert message in srv.output()
