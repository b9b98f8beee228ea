"""``fleetjobs simulate``: virtual devices against a real server over real MQTT."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from typing import Any

from fleetjobs.simulate import FleetConfig, FleetSummary, register_fleet, run_fleet, thing_names
from tests.fleet import DOC, group_arn
from tests.harness import ACCESS_KEY_ID, SECRET_ACCESS_KEY, unique


def config(server: Any, devices: int, **kw: Any) -> FleetConfig:
    prefix = unique("sim")
    base: dict[str, Any] = dict(
        devices=devices,
        prefix=prefix,
        group=f"{prefix}-g",
        endpoint_url=server.endpoint,
        access_key_id=ACCESS_KEY_ID,
        secret_access_key=SECRET_ACCESS_KEY,
        mqtt_url=f"mqtt://127.0.0.1:{server.mqtt_port}",
        work_seconds=0.2,
        work_distribution="uniform",
        until_idle=True,
        idle_seconds=1.0,
        interval=0.25,
        request_timeout=10,
        seed=7,
        register_threads=8,  # the harness' boto3 client keeps 10 connections
    )
    base.update(kw)
    return FleetConfig(**base)


def run(cfg: FleetConfig, iot: Any, **job: Any) -> tuple[FleetSummary, dict[str, Any]]:
    """Register the fleet, create a job on its group, run the devices until the job is over and they are idle."""
    assert register_fleet(cfg, iot) == cfg.devices
    job_id = unique("simjob")
    iot.create_job(jobId=job_id, targets=[group_arn(cfg.group)], document=DOC, **job)
    cfg.register, cfg.watch_job, cfg.duration = False, job_id, 60.0
    summary = asyncio.run(run_fleet(cfg))
    return summary, iot.describe_job(jobId=job_id)["job"]


def test_counts_match_describe_job(mqtt_server: Any) -> None:
    iot = mqtt_server.client("iot")
    cfg = config(mqtt_server, 50, failure_rate=0.2)
    summary, job = run(cfg, iot)
    d = job["jobProcessDetails"]
    assert summary.stopped_by == "idle", summary
    assert summary.connected == 50
    assert job["status"] == "COMPLETED"
    assert summary.succeeded + summary.failed == 50
    assert (summary.succeeded, summary.failed) == (d["numberOfSucceededThings"], d["numberOfFailedThings"])
    assert 3 <= summary.failed <= 20
    assert summary.requests >= 50 * 3 and summary.requests_per_second > 0
    assert summary.job is not None and summary.job["status"] == "COMPLETED"
    assert sorted(iot.list_things_in_thing_group(thingGroupName=cfg.group)["things"]) == thing_names(cfg)


def test_abort_threshold_stops_a_bad_rollout(mqtt_server: Any) -> None:
    iot = mqtt_server.client("iot")
    cfg = config(mqtt_server, 100, failure_rate=0.5)
    summary, job = run(
        cfg,
        iot,
        jobExecutionsRolloutConfig={"maximumPerMinute": 600},
        abortConfig={
            "criteriaList": [
                {
                    "failureType": "FAILED",
                    "action": "CANCEL",
                    "thresholdPercentage": 10,
                    "minNumberOfExecutedThings": 10,
                }
            ]
        },
    )
    d = job["jobProcessDetails"]
    assert job["status"] == "CANCELED", job
    assert job["reasonCode"] == "ABORTED_BY_ABORT_CONFIG"
    assert summary.stopped_by == "idle", summary
    # The devices' view agrees with the server's, and most of the fleet never ran the bad update.
    assert summary.failed == d["numberOfFailedThings"] >= 1
    assert summary.succeeded == d["numberOfSucceededThings"]
    assert summary.executions_started <= 50, summary
    # Things the rollout never reached have no execution at all.
    assert sum(v for k, v in d.items() if k.startswith("numberOf") and k.endswith("Things")) <= 50, d


def test_offline_devices_come_back_and_finish(mqtt_server: Any) -> None:
    iot = mqtt_server.client("iot")
    cfg = config(mqtt_server, 20, offline_rate=0.5, offline_seconds=1.0, latency_ms=20, reject_rate=0.1)
    summary, job = run(cfg, iot)
    d = job["jobProcessDetails"]
    assert summary.offline_events >= 3 and summary.reconnects >= summary.offline_events
    assert job["status"] == "COMPLETED"
    assert summary.succeeded + summary.rejected == 20 and summary.abandoned == 0
    assert (summary.succeeded, summary.rejected) == (d["numberOfSucceededThings"], d.get("numberOfRejectedThings", 0))


def test_cli_json_summary(mqtt_server: Any) -> None:
    prefix = unique("cli")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "fleetjobs",
            "simulate",
            "--devices",
            "5",
            "--prefix",
            prefix,
            "--group",
            f"{prefix}-g",
            "--endpoint-url",
            mqtt_server.endpoint,
            "--access-key-id",
            ACCESS_KEY_ID,
            "--secret-access-key",
            SECRET_ACCESS_KEY,
            "--mqtt-url",
            f"mqtt://127.0.0.1:{mqtt_server.mqtt_port}",
            "--duration",
            "2",
            "--display",
            "text",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["registered"] == 5 and summary["connected"] == 5
    assert summary["stopped_by"] == "duration"
    assert "connected 5/5" in out.stderr
    things = mqtt_server.client("iot").list_things_in_thing_group(thingGroupName=f"{prefix}-g")["things"]
    assert len(things) == 5
