"""Device requests survive a ``kill -9`` of fleetjobs: the gateway's persistent QoS 1 session
keeps them at the broker, and a request is acknowledged only after it has been handled."""

from __future__ import annotations

from tests.fleet import Fleet, thing_arn
from tests.harness import Server, unique
from tests.mqtt_device import Device


def test_requests_sent_while_fleetjobs_is_down_are_answered_after_restart(backends, private_mosquitto) -> None:  # type: ignore[no-untyped-def]
    mosquitto = private_mosquitto
    env = {"FLEETJOBS_MQTT_URL": f"mqtt://127.0.0.1:{mosquitto}", "FLEETJOBS_MQTT_CLIENT_ID": unique("gw")}
    srv = backends.server(env=env).start()
    iot = srv.client("iot")
    fleet = Fleet(iot)
    thing = fleet.things(1)[0]
    job_id = fleet.job([thing_arn(thing)])
    dev = Device("127.0.0.1", mosquitto, thing)
    try:
        dev.until_answered()  # the gateway is up; then take the job
        kind, doc = dev.request("start-next", timeout=15)
        assert kind == "accepted" and doc["execution"]["jobId"] == job_id
        srv.stop(kill=True)
        # While fleetjobs is down the device reports progress; the broker keeps the request.
        pending = dev.send(f"{job_id}/update", {"status": "IN_PROGRESS", "statusDetails": {"percent": "40"}})
        restarted = Server(data_dir=srv.data_dir, database_url=srv.database_url, port=srv.port, env=env).start()
        backends._servers.append(restarted)
        kind, doc = pending(timeout=30)
        assert kind == "accepted"
        kind, doc = dev.request(f"{job_id}/update", {"status": "SUCCEEDED", "includeJobExecutionState": True})
        assert kind == "accepted" and doc["executionState"]["versionNumber"] == 4
        ex = restarted.client("iot").describe_job_execution(jobId=job_id, thingName=thing)["execution"]
        assert ex["status"] == "SUCCEEDED" and ex["statusDetails"] == {"detailsMap": {"percent": "40"}}
    finally:
        dev.close()
        srv.stop()
        if "restarted" in locals():
            restarted.stop()


def test_notifications_of_changes_made_with_no_gateway_up_are_published_later(backends, private_mosquitto) -> None:  # type: ignore[no-untyped-def]
    """A job created by an instance with no MQTT at all: the notice waits in the database until
    an instance with a gateway (here a later one, over the same data) publishes it."""
    mosquitto = private_mosquitto
    offline = backends.server(env={"FLEETJOBS_EMBEDDED_BROKER": "false"}).start()
    iot = offline.client("iot")
    fleet = Fleet(iot)
    thing = fleet.things(1)[0]
    dev = Device("127.0.0.1", mosquitto, thing)
    online = None
    try:
        job_id = fleet.job([thing_arn(thing)])
        offline.stop()
        env = {"FLEETJOBS_MQTT_URL": f"mqtt://127.0.0.1:{mosquitto}", "FLEETJOBS_MQTT_CLIENT_ID": unique("gw")}
        online = Server(data_dir=offline.data_dir, database_url=offline.database_url, env=env).start()
        backends._servers.append(online)
        _, doc = dev.wait_for(lambda t, d: t.endswith("/notify-next") and "execution" in d, timeout=30)
        assert doc["execution"]["jobId"] == job_id and doc["execution"]["jobDocument"]
        _, doc = dev.wait_for(lambda t, d: t.endswith("/notify"), timeout=30)
        assert [j["jobId"] for j in doc["jobs"]["QUEUED"]] == [job_id]
    finally:
        dev.close()
        offline.stop()
        if online is not None:
            online.stop()
