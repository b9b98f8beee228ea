"""``fleetjobs agent`` against a ``fleetjobs serve`` over real MQTT (embedded broker and Mosquitto).

The agent runs in-process (``Agent.run_once`` / ``Agent.run`` under ``asyncio.run``) or as the
``fleetjobs agent`` command; jobs are created with boto3 from managed templates and custom documents.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from fleetjobs.agent import Agent, AgentConfig
from fleetjobs.agent.documents import InvalidDocument, parse, split_command
from fleetjobs.security import signing
from tests.fleet import thing_arn
from tests.harness import REGION, free_port, unique
from tests.test_mqtt_broker_restart import start_mosquitto
from tests.test_mqtt_tls import embedded_tls  # noqa: F401 - the fixture

FLEETJOBS = str(Path(sys.executable).with_name("fleetjobs"))
ROLE = "arn:aws:iam::123456789012:role/JobsS3Read"


def template(name: str) -> str:
    return f"arn:aws:iot:{REGION}::jobtemplate/{name}:1.0"


@pytest.fixture
def iot(mqtt_server):  # type: ignore[no-untyped-def]
    return mqtt_server.client("iot")


@pytest.fixture
def thing(iot) -> str:  # type: ignore[no-untyped-def]
    name = unique("agent")
    iot.create_thing(thingName=name)
    return name


def make_agent(mqtt_server: Any, thing: str, state_dir: Path, **kw: Any) -> Agent:
    return Agent(
        AgentConfig(
            thing_name=thing,
            state_dir=state_dir,
            mqtt_url=f"mqtt://127.0.0.1:{mqtt_server.mqtt_port}",
            request_timeout=5,
            **kw,
        )
    )


def once(agent: Agent, timeout: float = 20) -> str | None:
    return asyncio.run(asyncio.wait_for(agent.run_once(), timeout))


def create_job(iot: Any, thing: str, document: Any = None, **kw: Any) -> str:
    job_id = unique("job")
    if document is not None:
        kw["document"] = json.dumps(document)
    iot.create_job(jobId=job_id, targets=[thing_arn(thing)], **kw)
    return job_id


def execution(iot: Any, job_id: str, thing: str) -> dict[str, Any]:
    return iot.describe_job_execution(jobId=job_id, thingName=thing)["execution"]


def details(iot: Any, job_id: str, thing: str) -> dict[str, str]:
    return execution(iot, job_id, thing).get("statusDetails", {}).get("detailsMap", {})


async def until(condition: Any, seconds: float = 15) -> None:
    for _ in range(int(seconds / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition never met")


def run_cli(*args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETJOBS_")}
    proc = subprocess.run([FLEETJOBS, *args], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def put_artifact(mqtt_server: Any, path: Path) -> str:
    out = run_cli("artifacts", "put", str(path), f"agent/{unique('f')}.bin", "--data-dir", str(mqtt_server.data_dir))
    return dict(line.split(": ", 1) for line in out.strip().splitlines())["placeholder"]


def step(name: str, command: str, **extra: Any) -> dict[str, Any]:
    return {"action": {"name": name, "type": "runCommand", "input": {"command": command}, **extra}}


def download_step(url: str, path: Path) -> dict[str, Any]:
    return {
        "action": {
            "name": "Download-File",
            "type": "runHandler",
            "input": {"handler": "download-file.sh", "args": [url, str(path)], "path": "default"},
        }
    }


# -- documents (no server) ------------------------------------------------------------------------


def test_command_splitting_and_document_validation() -> None:
    assert split_command("echo,hello") == ["echo", "hello"]
    assert split_command(r"echo,a\,b,c") == ["echo", "a,b", "c"]
    document = {"version": "1.0", "steps": [step("a", "true", ignoreStepFailure="true")], "finalStep": step("b", "x")}
    plan = parse(document)
    assert [s.name for s in plan.all_steps] == ["a", "b"] and plan.steps[0].ignore_failure
    assert parse({"operation": "reboot"}).steps[0].handler == "reboot.sh"
    for bad in (
        [],
        {"version": "2.0", "steps": [step("a", "true")]},
        {"version": "1.0", "steps": []},
        {"version": "1.0", "steps": [{"action": {"name": "a", "type": "runPython", "input": {}}}]},
        {"version": "1.0", "steps": [step("a", "true", ignoreStepFailure="maybe")]},
        {"version": "1.0", "steps": [step("a", "has space,x")]},
        {"operation": "self-destruct"},
        {"hello": "world"},
    ):
        with pytest.raises(InvalidDocument):
            parse(bad)


# -- against the server -----------------------------------------------------------------------------


def test_run_command_template_succeeds_with_stdout(iot, mqtt_server, thing, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    job = create_job(
        iot, thing, jobTemplateArn=template("AWS-Run-Command"), documentParameters={"command": r"echo,hello\,world"}
    )
    agent = make_agent(mqtt_server, thing, tmp_path / "state")
    assert once(agent) == "SUCCEEDED"
    ex = execution(iot, job, thing)
    assert ex["status"] == "SUCCEEDED"
    assert ex["statusDetails"]["detailsMap"]["stdout"] == "hello,world"
    assert once(agent) is None  # nothing else pending


def test_multi_step_document_with_a_failing_step(iot, mqtt_server, thing, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    marker = tmp_path / "final-ran"
    doc = {
        "version": "1.0",
        "steps": [
            step("tolerated", "false", ignoreStepFailure="true"),
            step("first", "echo,one"),
            step("breaks", "sh,-c,echo partial; echo " + "x" * 2000 + " >&2; echo boom >&2; exit 3"),
            step("never", f"touch,{marker}"),
        ],
        "finalStep": step("cleanup", f"touch,{marker}"),
    }
    job = create_job(iot, thing, doc)
    assert once(make_agent(mqtt_server, thing, tmp_path / "state")) == "FAILED"
    got = details(iot, job, thing)
    assert got["step"] == "breaks"
    assert got["reason"].startswith("step 3 (breaks) failed:") and "status 3" in got["reason"]
    assert got["stdout"] == "partial"
    assert got["stderr"].endswith("x\\nboom") and len(got["stderr"]) == 1024  # newlines escaped
    assert len(got) <= 10
    assert not marker.exists()


def test_bad_documents_are_rejected(iot, mqtt_server, thing, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bad_type = create_job(iot, thing, {"version": "1.0", "steps": [{"action": {"name": "x", "type": "runPython"}}]})
    unknown_op = create_job(iot, thing, {"operation": "self-destruct"})
    agent = make_agent(mqtt_server, thing, tmp_path / "state")
    assert once(agent) == "REJECTED"
    assert once(agent) == "REJECTED"
    assert execution(iot, bad_type, thing)["status"] == "REJECTED"
    assert "invalid job document" in details(iot, bad_type, thing)["reason"]
    assert execution(iot, unknown_op, thing)["status"] == "REJECTED"
    assert "self-destruct" in details(iot, unknown_op, thing)["reason"]


def test_application_templates_run_handler_scripts(iot, mqtt_server, thing, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    handlers = tmp_path / "handlers"
    handlers.mkdir()
    script = handlers / "install-packages.sh"
    script.write_text('#!/bin/sh\necho "user=[$1] installing $2"\n')
    script.chmod(0o700)
    install = create_job(
        iot, thing, jobTemplateArn=template("AWS-Install-Application"), documentParameters={"packages": "pump-fw"}
    )
    restart = create_job(
        iot, thing, jobTemplateArn=template("AWS-Restart-Application"), documentParameters={"services": "pumpd"}
    )
    agent = make_agent(mqtt_server, thing, tmp_path / "state", handler_dir=handlers)
    assert once(agent) == "SUCCEEDED"
    assert details(iot, install, thing)["stdout"] == "user=[] installing pump-fw"
    assert once(agent) == "FAILED"  # no restart-services.sh in the handler dir
    assert "no executable restart-services.sh" in details(iot, restart, thing)["reason"]
    # The old schema: an operation names a handler script (with or without .sh).
    old = create_job(iot, thing, {"operation": "install-packages", "args": ["a", "b"]})
    assert once(agent) == "SUCCEEDED"
    assert details(iot, old, thing)["stdout"] == "user=[] installing a"


def test_download_file_template_through_a_presigned_url(iot, mqtt_server, thing, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    payload = os.urandom(200_000)
    (tmp_path / "fw.bin").write_bytes(payload)
    placeholder = put_artifact(mqtt_server, tmp_path / "fw.bin")
    target = tmp_path / "device" / "firmware.bin"
    job = create_job(
        iot,
        thing,
        jobTemplateArn=template("AWS-Download-File"),
        documentParameters={"downloadUrl": placeholder, "filePath": str(target)},
        presignedUrlConfig={"roleArn": ROLE, "expiresInSec": 300},
    )
    assert once(make_agent(mqtt_server, thing, tmp_path / "state")) == "SUCCEEDED"
    assert target.read_bytes() == payload
    assert not (tmp_path / "device" / "firmware.bin.part").exists()
    assert execution(iot, job, thing)["status"] == "SUCCEEDED"


def test_a_tampered_download_is_refused_and_nothing_installed(iot, mqtt_server, thing, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    payload = os.urandom(50_000)
    (tmp_path / "fw.bin").write_bytes(payload)
    placeholder = put_artifact(mqtt_server, tmp_path / "fw.bin")
    key, cert = signing.init_keys(tmp_path / "keys")
    signed_other = signing.sign(b"the genuine firmware", key, cert)
    target = tmp_path / "device" / "firmware.bin"
    doc = {"version": "1.0", "codesign": signed_other, "steps": [download_step(placeholder, target)]}
    job = create_job(iot, thing, doc, presignedUrlConfig={"roleArn": ROLE, "expiresInSec": 300})
    assert once(make_agent(mqtt_server, thing, tmp_path / "state")) == "FAILED"
    assert not target.exists()
    assert not (tmp_path / "device" / "firmware.bin.part").exists()
    assert "sha256 mismatch" in details(iot, job, thing)["reason"]
    # Without the sha256, the signature itself is checked.
    signed_other.pop("sha256")
    job = create_job(
        iot,
        thing,
        {**doc, "codesign": signed_other},
        presignedUrlConfig={"roleArn": ROLE, "expiresInSec": 300},
    )
    assert once(make_agent(mqtt_server, thing, tmp_path / "state")) == "FAILED"
    assert not target.exists()
    assert "signature verification failed" in details(iot, job, thing)["reason"]


def test_a_finished_job_is_never_run_twice(iot, mqtt_server, thing, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    runs = tmp_path / "runs.txt"
    command = f"sh,-c,echo x >> {runs}"
    job = create_job(iot, thing, jobTemplateArn=template("AWS-Run-Command"), documentParameters={"command": command})
    state = tmp_path / "state"
    crashing = make_agent(mqtt_server, thing, state)

    async def crash(*args: Any) -> None:
        raise RuntimeError("killed before the final report")

    crashing._send_final = crash  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        once(crashing)
    assert runs.read_text() == "x\n"
    assert execution(iot, job, thing)["status"] == "IN_PROGRESS"
    # Restarted with the same state: the server offers the job again; it is reported, not re-run.
    again = make_agent(mqtt_server, thing, state)
    assert once(again) == "SUCCEEDED"
    assert runs.read_text() == "x\n"
    assert execution(iot, job, thing)["status"] == "SUCCEEDED"
    assert once(again) is None


def test_reboot_job_completes_after_the_agent_restarts(iot, mqtt_server, thing, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    rebooted = tmp_path / "rebooted"
    job = create_job(iot, thing, jobTemplateArn=template("AWS-Reboot"))
    state = tmp_path / "state"
    agent = make_agent(mqtt_server, thing, state, reboot_command=["touch", str(rebooted)])
    stop = asyncio.Event()
    asyncio.run(asyncio.wait_for(agent.run(stop), 20))  # returns by itself: the device is rebooting
    assert agent.rebooting and rebooted.exists()
    assert execution(iot, job, thing)["status"] == "IN_PROGRESS"
    assert once(make_agent(mqtt_server, thing, state)) == "SUCCEEDED"
    assert execution(iot, job, thing)["status"] == "SUCCEEDED"
    # With no reboot command the agent records the reboot and stops; restarted, it completes the job.
    job = create_job(iot, thing, {"operation": "reboot"})
    assert once(make_agent(mqtt_server, thing, state)) == "IN_PROGRESS"
    assert execution(iot, job, thing)["status"] == "IN_PROGRESS"
    assert once(make_agent(mqtt_server, thing, state)) == "SUCCEEDED"
    assert execution(iot, job, thing)["status"] == "SUCCEEDED"


def test_a_step_interrupted_by_a_restart_is_reported_failed(iot, mqtt_server, thing, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    job = create_job(iot, thing, {"version": "1.0", "steps": [step("one", "true"), step("long", "sleep,30")]})
    state = tmp_path / "state"
    agent = make_agent(mqtt_server, thing, state)

    async def interrupt() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(agent.run(stop))
        await until(lambda: (agent.state.current or {}).get("step") == 1 and agent.state.current.get("started"))
        stop.set()
        await task

    asyncio.run(asyncio.wait_for(interrupt(), 20))
    assert once(make_agent(mqtt_server, thing, state)) == "FAILED"
    assert details(iot, job, thing)["reason"] == "agent restarted during step 2 (long)"


def test_a_step_over_its_timeout_is_killed(iot, mqtt_server, thing, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    job = create_job(iot, thing, {"version": "1.0", "steps": [step("slow", "sleep,30", stepTimeoutInMinutes=1)]})
    agent = make_agent(mqtt_server, thing, tmp_path / "state", seconds_per_minute=0.5)
    started = time.monotonic()
    assert once(agent) == "FAILED"
    assert time.monotonic() - started < 10
    assert "timed out" in details(iot, job, thing)["reason"]


def test_a_stopped_download_resumes_where_it_stopped(iot, mqtt_server, thing, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    payload = os.urandom(1_000_000)
    (tmp_path / "fw.bin").write_bytes(payload)
    placeholder = put_artifact(mqtt_server, tmp_path / "fw.bin")
    key, cert = signing.init_keys(tmp_path / "keys")
    target = tmp_path / "device" / "firmware.bin"
    part = tmp_path / "device" / "firmware.bin.part"
    codesign = signing.sign(payload, key, cert)
    doc = {"version": "1.0", "codesign": codesign, "steps": [download_step(placeholder, target)]}
    job = create_job(iot, thing, doc, presignedUrlConfig={"roleArn": ROLE, "expiresInSec": 300})
    state = tmp_path / "state"
    slow = make_agent(mqtt_server, thing, state, download_chunk=16 * 1024, download_delay=0.03, progress_interval=0.1)

    async def stop_midway() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(slow.run(stop))
        await until(lambda: part.exists() and part.stat().st_size >= 200_000)
        stop.set()
        await task

    asyncio.run(asyncio.wait_for(stop_midway(), 20))
    stopped_at = part.stat().st_size
    assert 200_000 <= stopped_at < len(payload) and not target.exists()
    got = details(iot, job, thing)
    assert execution(iot, job, thing)["status"] == "IN_PROGRESS" and int(got["bytes"]) > 0
    fast = make_agent(mqtt_server, thing, state)
    assert once(fast) == "SUCCEEDED"
    assert fast.resumed_from == stopped_at
    assert target.read_bytes() == payload


def test_the_agent_command(iot, mqtt_server, thing, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    job = create_job(iot, thing, jobTemplateArn=template("AWS-Run-Command"), documentParameters={"command": "echo,cli"})
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETJOBS_")}
    proc = subprocess.run(
        [
            FLEETJOBS,
            "agent",
            "--thing",
            thing,
            "--mqtt-url",
            f"mqtt://127.0.0.1:{mqtt_server.mqtt_port}",
            "--state-dir",
            str(tmp_path / "state"),
            "--once",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "SUCCEEDED"
    events = [json.loads(line) for line in proc.stderr.splitlines()]
    assert any(e["event"] == "job finished" and e["jobId"] == job and e["status"] == "SUCCEEDED" for e in events)
    assert details(iot, job, thing)["stdout"] == "cli"


def test_a_running_agent_takes_jobs_as_they_are_notified(iot, mqtt_server, thing, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    agent = make_agent(mqtt_server, thing, tmp_path / "state")

    async def scenario() -> list[str]:
        stop = asyncio.Event()
        task = asyncio.create_task(agent.run(stop))
        await until(lambda: agent._client is not None)
        await asyncio.sleep(0.3)  # idle, waiting for notify-next
        jobs = []
        for word in ("one", "two"):
            jobs.append(
                await asyncio.to_thread(
                    create_job,
                    iot,
                    thing,
                    jobTemplateArn=template("AWS-Run-Command"),
                    documentParameters={"command": f"echo,{word}"},
                )
            )
        for job in jobs:
            for _ in range(200):
                if (await asyncio.to_thread(execution, iot, job, thing))["status"] == "SUCCEEDED":
                    break
                await asyncio.sleep(0.05)
        stop.set()
        await task
        return jobs

    jobs = asyncio.run(asyncio.wait_for(scenario(), 20))
    assert [details(iot, job, thing)["stdout"] for job in jobs] == ["one", "two"]
    assert all(execution(iot, job, thing)["status"] == "SUCCEEDED" for job in jobs)


def test_over_mutual_tls_with_a_thing_certificate(embedded_tls, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    iot = embedded_tls.server.client("iot")
    thing = unique("tls")
    iot.create_thing(thingName=thing)
    cert, key = embedded_tls.device_cert(thing)
    job = create_job(iot, thing, jobTemplateArn=template("AWS-Run-Command"), documentParameters={"command": "echo,tls"})
    agent = Agent(
        AgentConfig(
            thing_name=thing,
            state_dir=tmp_path / "state",
            mqtt_url=f"mqtts://localhost:{embedded_tls.port}",
            ca_file=embedded_tls.ca_file,
            cert_file=str(cert),
            key_file=str(key),
            request_timeout=5,
        )
    )
    assert once(agent) == "SUCCEEDED"
    assert details(iot, job, thing)["stdout"] == "tls"


def test_an_idle_agent_reconnects_after_the_broker_restarts(backends, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n")
    broker = start_mosquitto(conf, port)
    srv = backends.server(
        env={"FLEETJOBS_MQTT_URL": f"mqtt://127.0.0.1:{port}", "FLEETJOBS_MQTT_CLIENT_ID": unique("gw")}
    ).start()
    try:
        iot = srv.client("iot")
        thing = unique("agent")
        iot.create_thing(thingName=thing)
        agent = Agent(
            AgentConfig(
                thing_name=thing, state_dir=tmp_path / "state", mqtt_url=f"mqtt://127.0.0.1:{port}", request_timeout=2
            )
        )

        async def scenario() -> str:
            nonlocal broker
            stop = asyncio.Event()
            task = asyncio.create_task(agent.run(stop))
            await until(lambda: agent._client is not None)
            await asyncio.sleep(0.3)
            broker.terminate()
            await asyncio.to_thread(broker.wait, 10)
            await until(lambda: agent._client is None)  # it noticed, though idle
            broker = start_mosquitto(conf, port)
            params = {"command": "true"}
            job = await asyncio.to_thread(
                create_job, iot, thing, jobTemplateArn=template("AWS-Run-Command"), documentParameters=params
            )
            for _ in range(400):
                if (await asyncio.to_thread(execution, iot, job, thing))["status"] == "SUCCEEDED":
                    break
                await asyncio.sleep(0.05)
            stop.set()
            await task
            return job

        job = asyncio.run(asyncio.wait_for(scenario(), 40))
        assert execution(iot, job, thing)["status"] == "SUCCEEDED"
    finally:
        srv.stop()
        broker.terminate()
        broker.wait(timeout=10)


def test_a_job_canceled_with_force_stops_the_running_step(iot, mqtt_server, thing, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    job = create_job(iot, thing, {"version": "1.0", "steps": [step("long", "sleep,30")]})
    agent = make_agent(mqtt_server, thing, tmp_path / "state")

    async def scenario() -> str | None:
        task = asyncio.create_task(agent.run_once())
        await until(lambda: (agent.state.current or {}).get("started"))
        await asyncio.sleep(0.2)
        await asyncio.to_thread(iot.cancel_job, jobId=job, force=True)
        return await task

    started = time.monotonic()
    assert asyncio.run(asyncio.wait_for(scenario(), 20)) == "CANCELED"
    assert time.monotonic() - started < 10
    assert execution(iot, job, thing)["status"] == "CANCELED"
    assert agent.state.current is None and agent.state.finished(job, 1)["status"] == "CANCELED"


async def scripted_aws_jobs(port: int, thing: str, document: dict[str, Any], updates: list[dict[str, Any]]) -> None:
    """What AWS IoT does for one queued execution, on a plain Mosquitto: answer start-next and update."""
    base = f"$aws/things/{thing}/jobs"
    status = "QUEUED"
    async with aiomqtt.Client("127.0.0.1", port, identifier=unique("aws")) as client:
        for suffix in ("start-next", "+/update", "+/get"):
            await client.subscribe(f"{base}/{suffix}", qos=1)
        async for message in client.messages:
            topic = message.topic.value
            request = json.loads(bytes(message.payload))  # type: ignore[arg-type]
            answer: dict[str, Any] = {"timestamp": int(time.time()), "clientToken": request.get("clientToken")}
            if topic.endswith("/start-next") and status in ("QUEUED", "IN_PROGRESS"):
                status = "IN_PROGRESS"
                answer["execution"] = {
                    "jobId": "aws-job-1",
                    "thingName": thing,
                    "jobDocument": document,
                    "status": status,
                    "queuedAt": 1,
                    "startedAt": 2,
                    "lastUpdatedAt": 2,
                    "versionNumber": 2,
                    "executionNumber": 1,
                }
            elif topic.endswith("/update"):
                updates.append(request)
                status = request["status"]
            await client.publish(f"{topic}/accepted", json.dumps(answer), qos=1)


@pytest.fixture
def lone_mosquitto(tmp_path: Path) -> Any:
    """A Mosquitto of this test's own: no fleetjobs gateway on it."""
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n")
    broker = start_mosquitto(conf, port)
    yield port
    broker.terminate()
    broker.wait(timeout=10)


def test_the_agent_speaks_the_aws_topics_to_a_scripted_responder(lone_mosquitto: int, tmp_path: Path) -> None:
    mosquitto = lone_mosquitto
    thing = unique("aws-thing")
    document = {
        "version": "1.0",
        "steps": [
            {
                "action": {
                    "name": "Run-Command",
                    "type": "runCommand",
                    "input": {"command": "echo,from aws"},
                    "runAsUser": "",
                }
            }
        ],
    }
    updates: list[dict[str, Any]] = []
    agent = Agent(AgentConfig(thing_name=thing, state_dir=tmp_path / "state", mqtt_url=f"mqtt://127.0.0.1:{mosquitto}"))

    async def scenario() -> tuple[str | None, str | None]:
        responder = asyncio.create_task(scripted_aws_jobs(mosquitto, thing, document, updates))
        await asyncio.sleep(0.5)  # subscribed
        try:
            return await agent.run_once(), await agent.run_once()
        finally:
            responder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await responder

    assert asyncio.run(asyncio.wait_for(scenario(), 20)) == ("SUCCEEDED", None)
    assert [u["status"] for u in updates] == ["IN_PROGRESS", "SUCCEEDED"]
    assert all(u["clientToken"] and all(isinstance(v, str) for v in u["statusDetails"].values()) for u in updates)
    assert updates[0]["statusDetails"] == {"step": "Run-Command", "stepNumber": "1/1", "progress": "0"}
    assert updates[-1]["statusDetails"]["stdout"] == "from aws"


def test_a_step_timeout_on_the_server_is_timed_out(backends, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The agent sends the step's stepTimeoutInMinutes; the server's step timer (a manual clock
    here) makes the execution TIMED_OUT, and the agent stops the step and reports nothing more."""
    srv = backends.server(extra_args=["--manual-clock", "1800000000"]).start()
    try:
        iot = srv.client("iot")
        thing = unique("agent")
        iot.create_thing(thingName=thing)
        job = create_job(iot, thing, {"version": "1.0", "steps": [step("slow", "sleep,60", stepTimeoutInMinutes=2)]})
        agent = make_agent(srv, thing, tmp_path / "state")

        def advance(seconds: float) -> None:
            req = urllib.request.Request(
                srv.endpoint + "/_fleetjobs/clock", data=json.dumps({"advance": seconds}).encode(), method="POST"
            )
            urllib.request.urlopen(req, timeout=30).read()

        async def scenario() -> str | None:
            task = asyncio.create_task(agent.run_once())
            await until(lambda: execution(iot, job, thing).get("approximateSecondsBeforeTimedOut") == 120)
            await asyncio.to_thread(advance, 119)
            assert execution(iot, job, thing)["status"] == "IN_PROGRESS"
            await asyncio.to_thread(advance, 1)
            return await task

        started = time.monotonic()
        assert asyncio.run(asyncio.wait_for(scenario(), 30)) == "TIMED_OUT"
        assert time.monotonic() - started < 20  # the step was stopped, not waited out
        assert execution(iot, job, thing)["status"] == "TIMED_OUT"
        assert iot.describe_job(jobId=job)["job"]["jobProcessDetails"]["numberOfTimedOutThings"] == 1
    finally:
        srv.stop()


@pytest.mark.parametrize(
    ("template_name", "handler", "parameter", "value"),
    [
        ("AWS-Remove-Application", "remove-packages.sh", "packages", "old-fw"),
        ("AWS-Start-Application", "start-services.sh", "services", "pumpd"),
        ("AWS-Stop-Application", "stop-services.sh", "services", "pumpd"),
        ("AWS-Restart-Application", "restart-services.sh", "services", "pumpd"),
    ],
)
def test_each_service_template_runs_its_handler(  # type: ignore[no-untyped-def]
    iot, mqtt_server, thing, tmp_path: Path, template_name: str, handler: str, parameter: str, value: str
) -> None:
    handlers = tmp_path / "handlers"
    handlers.mkdir()
    script = handlers / handler
    script.write_text(f'#!/bin/sh\necho "{handler} $2"\n')
    script.chmod(0o700)
    job = create_job(iot, thing, jobTemplateArn=template(template_name), documentParameters={parameter: value})
    agent = make_agent(mqtt_server, thing, tmp_path / "state", handler_dir=handlers)
    assert once(agent) == "SUCCEEDED"
    assert details(iot, job, thing)["stdout"] == f"{handler} {value}"
