"""The real AWS IoT Device SDK v2 (``awsiotsdk``'s ``IotJobsClient``, MQTT 3.1.1) runs a job.

The connection is plain TCP to the tests' Mosquitto; mutual TLS is covered by the broker
security tests.  Nothing here knows fleetjobs internals: the SDK speaks the AWS topics.
"""

from __future__ import annotations

import json
import queue
import uuid
from typing import Any

from awscrt import mqtt as awscrt_mqtt
from awsiot import iotjobs

from tests.fleet import Fleet, thing_arn

TIMEOUT = 15


def connect(port: int, thing: str) -> Any:
    client = awscrt_mqtt.Client(None, None)
    connection = awscrt_mqtt.Connection(
        client, "127.0.0.1", port, f"{thing}-{uuid.uuid4().hex[:6]}", clean_session=True, keep_alive_secs=30
    )
    connection.connect().result(TIMEOUT)
    return connection


def test_iot_jobs_client_runs_a_job_to_completion(mqtt_server) -> None:  # type: ignore[no-untyped-def]
    iot = mqtt_server.client("iot")
    fleet = Fleet(iot)
    thing = fleet.things(1)[0]
    connection = connect(mqtt_server.mqtt_port, thing)
    jobs = iotjobs.IotJobsClient(connection)
    events: queue.Queue[tuple[str, Any]] = queue.Queue()
    qos = awscrt_mqtt.QoS.AT_LEAST_ONCE
    try:
        subscriptions = [
            jobs.subscribe_to_next_job_execution_changed_events(
                iotjobs.NextJobExecutionChangedSubscriptionRequest(thing_name=thing),
                qos,
                lambda e: events.put(("next", e)),
            ),
            jobs.subscribe_to_start_next_pending_job_execution_accepted(
                iotjobs.StartNextPendingJobExecutionSubscriptionRequest(thing_name=thing),
                qos,
                lambda r: events.put(("started", r)),
            ),
            jobs.subscribe_to_update_job_execution_accepted(
                iotjobs.UpdateJobExecutionSubscriptionRequest(thing_name=thing, job_id="+"),
                qos,
                lambda r: events.put(("updated", r)),
            ),
            jobs.subscribe_to_update_job_execution_rejected(
                iotjobs.UpdateJobExecutionSubscriptionRequest(thing_name=thing, job_id="+"),
                qos,
                lambda r: events.put(("update-rejected", r)),
            ),
        ]
        for future, _ in subscriptions:
            future.result(TIMEOUT)

        def expect(kind: str) -> Any:
            while True:
                got, value = events.get(timeout=TIMEOUT)
                if got == kind:
                    return value
                assert not got.endswith("rejected"), value

        job_id = fleet.job([thing_arn(thing)], document=json.dumps({"operation": "reboot"}))
        changed = expect("next")
        assert changed.execution.job_id == job_id and changed.execution.job_document == {"operation": "reboot"}

        jobs.publish_start_next_pending_job_execution(
            iotjobs.StartNextPendingJobExecutionRequest(thing_name=thing, client_token="c1", step_timeout_minutes=5),
            qos,
        ).result(TIMEOUT)
        started = expect("started")
        assert started.execution.job_id == job_id and started.execution.status == "IN_PROGRESS"
        assert started.client_token == "c1" and started.execution.version_number == 2

        jobs.publish_update_job_execution(
            iotjobs.UpdateJobExecutionRequest(
                thing_name=thing,
                job_id=job_id,
                status=iotjobs.JobStatus.IN_PROGRESS,
                status_details={"percent": "50"},
                expected_version=2,
                client_token="c2",
            ),
            qos,
        ).result(TIMEOUT)
        assert expect("updated").client_token == "c2"

        jobs.publish_update_job_execution(
            iotjobs.UpdateJobExecutionRequest(
                thing_name=thing,
                job_id=job_id,
                status=iotjobs.JobStatus.SUCCEEDED,
                include_job_execution_state=True,
                client_token="c3",
            ),
            qos,
        ).result(TIMEOUT)
        done = expect("updated")
        assert done.execution_state.status == "SUCCEEDED" and done.execution_state.version_number == 4
        # The queue is now empty: notify-next without an execution.
        assert expect("next").execution is None

        job = iot.describe_job(jobId=job_id)["job"]
        assert job["status"] == "COMPLETED" and job["jobProcessDetails"]["numberOfSucceededThings"] == 1
    finally:
        connection.disconnect().result(TIMEOUT)
