"""``$aws/events/job/...`` and ``$aws/events/jobExecution/...``, switched by UpdateEventConfigurations."""

from __future__ import annotations

import json
import queue
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from tests.fleet import Fleet, thing_arn
from tests.harness import unique


class EventListener:
    def __init__(self, port: int, job_ids: list[str] | None = None) -> None:
        self.events: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=unique("events"))
        self.client.on_message = lambda _c, _u, m: self.events.put((m.topic, json.loads(m.payload)))
        done = threading.Event()
        self.client.on_subscribe = lambda *a, **k: done.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.client.subscribe([("$aws/events/job/#", 1), ("$aws/events/jobExecution/#", 1)])
        assert done.wait(10)

    def wait(self, topic: str, timeout: float = 10) -> dict[str, Any]:
        """The next event on ``topic``; any other event for the same job arriving first is a failure."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                got, doc = self.events.get(timeout=0.2)
            except queue.Empty:
                continue
            if got == topic:
                return doc
            job = topic.split("/")[3]
            assert got.split("/")[3] != job, f"unexpected {got} before {topic}"
        raise TimeoutError(topic)

    def close(self) -> None:
        self.client.disconnect()  # first: the network thread ends at once
        self.client.loop_stop()


@pytest.fixture
def listener(mqtt_server):  # type: ignore[no-untyped-def]
    lst = EventListener(mqtt_server.mqtt_port)
    yield lst
    lst.close()


def test_event_configurations_round_trip(mqtt_server) -> None:  # type: ignore[no-untyped-def]
    iot = mqtt_server.client("iot")
    iot_raw = mqtt_server.client("iot", validate=False)
    iot.update_event_configurations(eventConfigurations={"JOB": {"Enabled": True}, "THING": {"Enabled": False}})
    out = iot.describe_event_configurations()
    assert out["eventConfigurations"]["JOB"] == {"Enabled": True}
    assert out["eventConfigurations"]["THING"] == {"Enabled": False}
    assert out["eventConfigurations"]["CERTIFICATE"] == {"Enabled": False}
    assert "lastModifiedDate" in out
    with pytest.raises(iot.exceptions.InvalidRequestException):
        iot_raw.update_event_configurations(eventConfigurations={"NOT_A_TYPE": {"Enabled": True}})
    assert iot.describe_event_configurations()["eventConfigurations"]["JOB"] == {"Enabled": True}


def test_job_and_execution_events(mqtt_server, listener) -> None:  # type: ignore[no-untyped-def]
    iot = mqtt_server.client("iot")
    device = mqtt_server.client("iot-jobs-data")
    iot.update_event_configurations(eventConfigurations={"JOB": {"Enabled": True}, "JOB_EXECUTION": {"Enabled": True}})
    fleet = Fleet(iot)
    things = fleet.things(2)
    job_id = fleet.job([thing_arn(t) for t in things], description="events")
    device.start_next_pending_job_execution(thingName=things[0])
    device.update_job_execution(jobId=job_id, thingName=things[0], status="SUCCEEDED", statusDetails={"ok": "yes"})
    ev = listener.wait(f"$aws/events/jobExecution/{job_id}/succeeded")
    assert ev["eventType"] == "JOB_EXECUTION" and ev["operation"] == "succeeded" and ev["status"] == "SUCCEEDED"
    assert ev["thingArn"] == thing_arn(things[0]) and ev["statusDetails"] == {"ok": "yes"} and ev["eventId"]
    iot.cancel_job_execution(jobId=job_id, thingName=things[1])
    ev = listener.wait(f"$aws/events/jobExecution/{job_id}/canceled")
    assert ev["status"] == "CANCELED" and ev["thingArn"] == thing_arn(things[1])
    done = listener.wait(f"$aws/events/job/{job_id}/completed")
    assert done["eventType"] == "JOB" and done["status"] == "COMPLETED" and done["description"] == "events"
    assert done["jobProcessDetails"]["numberOfSucceededThings"] == 1
    assert done["jobProcessDetails"]["numberOfCanceledThings"] == 1
    assert done["targets"] == [thing_arn(t) for t in things] and "completedAt" in done

    iot.delete_job(jobId=job_id)
    assert listener.wait(f"$aws/events/job/{job_id}/deletion_in_progress")["status"] == "DELETION_IN_PROGRESS"
    assert listener.wait(f"$aws/events/job/{job_id}/deleted")["status"] == "DELETED"

    other = fleet.job([thing_arn(things[0])])
    iot.cancel_job(jobId=other, comment="operator")
    assert listener.wait(f"$aws/events/job/{other}/cancellation_in_progress")["operation"] == "cancellation_in_progress"
    # A bulk change still reports each execution's own event.
    execution = listener.wait(f"$aws/events/jobExecution/{other}/canceled")
    assert execution["status"] == "CANCELED" and execution["thingArn"] == thing_arn(things[0])
    canceled = listener.wait(f"$aws/events/job/{other}/canceled")
    assert canceled["status"] == "CANCELED" and canceled["jobProcessDetails"]["numberOfCanceledThings"] == 1


def test_disabled_events_are_not_published(mqtt_server, listener) -> None:  # type: ignore[no-untyped-def]
    iot = mqtt_server.client("iot")
    device = mqtt_server.client("iot-jobs-data")
    iot.update_event_configurations(eventConfigurations={"JOB": {"Enabled": True}, "JOB_EXECUTION": {"Enabled": False}})
    fleet = Fleet(iot)
    thing = fleet.things(1)[0]
    job_id = fleet.job([thing_arn(thing)])
    device.update_job_execution(jobId=job_id, thingName=thing, status="REJECTED")
    # One transaction recorded both events, published in order: the execution event (switched off)
    # would have come first, so its absence before the job's completion proves it was not published.
    listener.wait(f"$aws/events/job/{job_id}/completed")


def test_deleting_a_thing_reports_its_executions_removed(mqtt_server, listener) -> None:  # type: ignore[no-untyped-def]
    iot = mqtt_server.client("iot")
    iot.update_event_configurations(eventConfigurations={"JOB_EXECUTION": {"Enabled": True}})
    fleet = Fleet(iot)
    gone, stays = fleet.things(2)
    job_id = fleet.job([thing_arn(gone), thing_arn(stays)])
    iot.delete_thing(thingName=gone)
    ev = listener.wait(f"$aws/events/jobExecution/{job_id}/removed")
    assert ev["status"] == "REMOVED" and ev["thingArn"] == thing_arn(gone)
