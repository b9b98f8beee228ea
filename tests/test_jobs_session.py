"""``fleetjobs.device.jobs_session`` against a real ``fleetjobs serve`` over real MQTT.

Every test runs on both backends and both brokers (the embedded one, and Mosquitto with fleetjobs
as a client). A sniffer, an ordinary MQTT client on the same broker, records what goes over the
wire, so that the tests check the bytes the session sends, not only what it says it did. To lose
answers on purpose the server is paused with SIGSTOP (a server of these tests' own).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import aiomqtt
import pytest

from fleetjobs.device.jobs_session import (
    Accepted,
    Backoff,
    JobsSession,
    ListNotification,
    NextNotification,
    Rejected,
    RetryPolicy,
    SessionConfig,
)
from tests.conftest import Backend, start_mosquitto
from tests.fleet import DOC, thing_arn
from tests.harness import Server, unique
from tests.mqtt_device import Device


def session_config(srv: Server, thing: str, **kw: Any) -> SessionConfig:
    kw.setdefault("retry", RetryPolicy(response_timeout=5.0, attempts=5, backoff=Backoff(0.05, 0.2)))
    return SessionConfig(thing_name=thing, mqtt_url=f"mqtt://127.0.0.1:{srv.mqtt_port}", **kw)


def thing_with_job(srv: Server) -> tuple[str, str]:
    iot = srv.client("iot")
    thing, job = unique("js"), unique("job")
    iot.create_thing(thingName=thing)
    iot.create_job(jobId=job, targets=[thing_arn(thing)], document=DOC)
    return thing, job


def execution(srv: Server, job: str, thing: str) -> dict[str, Any]:
    return srv.client("iot").describe_job_execution(jobId=job, thingName=thing)["execution"]


async def until(condition: Callable[[], bool], seconds: float = 10) -> None:
    for _ in range(int(seconds / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition never met")


class Sniffer:
    """Everything the broker delivers on some of a thing's topics, in order of arrival."""

    def __init__(self, port: int, filters: list[str]) -> None:
        self.port = port
        self.filters = filters
        self.seen: list[tuple[str, bytes]] = []

    def sent(self, topic: str) -> list[bytes]:
        return [p for t, p in self.seen if t == topic]

    def answers(self, topic: str) -> list[tuple[str, dict[str, Any]]]:
        return [(t.rsplit("/", 1)[1], json.loads(p)) for t, p in self.seen if t.startswith(topic + "/")]

    async def until(self, condition: Callable[[], bool], seconds: float = 10) -> None:
        for _ in range(int(seconds / 0.02)):
            if condition():
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"never seen; seen: {self.seen}")


@asynccontextmanager
async def sniffing(port: int, *filters: str) -> AsyncIterator[Sniffer]:
    sniffer = Sniffer(port, list(filters))
    async with aiomqtt.Client("127.0.0.1", port, identifier=unique("sniffer")) as client:
        await client.subscribe([(f, 1) for f in filters])

        async def collect() -> None:
            async for m in client.messages:
                sniffer.seen.append((m.topic.value, bytes(m.payload)))  # type: ignore[arg-type]

        task = asyncio.create_task(collect())
        try:
            yield sniffer
        finally:
            task.cancel()
            await asyncio.wait({task})


# -- servers of these tests' own (paused, or throttled hard) ---------------------------------------------------


def _wait_answering(srv: Server) -> None:
    probe = Device("127.0.0.1", srv.mqtt_port, unique("probe"))
    try:
        for _ in range(50):
            try:
                probe.request("get", timeout=0.5)
                return
            except Exception:
                continue
        raise RuntimeError(f"MQTT gateway never answered:\n{srv.log()}")
    finally:
        probe.close()


@pytest.fixture(scope="module", params=["embedded", "mosquitto"])
def own_servers(
    request: pytest.FixtureRequest, backends: Backend, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., Server]]:
    """Makes servers nobody else uses. On Mosquitto each gets a broker of its own too: two gateways
    on one broker would both answer every request."""
    brokers: list[Any] = []
    servers: list[Server] = []

    def make(*args: str) -> Server:
        if request.param == "mosquitto":
            port, broker = start_mosquitto(tmp_path_factory.mktemp("mosquitto"))
            brokers.append(broker)
            env = {"FLEETJOBS_MQTT_URL": f"mqtt://127.0.0.1:{port}", "FLEETJOBS_MQTT_CLIENT_ID": unique("gw")}
            srv = backends.server(extra_args=list(args), env=env).start()
            srv.mqtt_port = port
        else:
            srv = backends.server(extra_args=list(args)).start()
        servers.append(srv)
        _wait_answering(srv)
        return srv

    yield make
    for srv in servers:
        srv.stop()
    for broker in brokers:
        broker.terminate()
        broker.wait(timeout=10)


@pytest.fixture(scope="module")
def pausable_server(own_servers: Callable[..., Server]) -> Server:
    return own_servers()


@pytest.fixture(scope="module")
def throttled_server(own_servers: Callable[..., Server]) -> Server:
    return own_servers("--device-requests-per-second", "1")  # burst 2


@contextmanager
def paused(srv: Server) -> Iterator[None]:
    """The server (and its embedded broker, if any) stops answering until the block ends."""
    assert srv.proc is not None
    os.kill(srv.proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(srv.proc.pid, signal.SIGCONT)


# -- correlation --------------------------------------------------------------------------------------------------


def test_answers_are_matched_by_client_token(mqtt_server: Server) -> None:
    """Concurrent requests on one topic, whose answers differ, each get their own, while another
    client floods the same answer topics with answers under foreign tokens."""
    thing, job = thing_with_job(mqtt_server)
    topics = JobsSession(session_config(mqtt_server, thing)).topics
    describe = topics.describe(job)

    async def scenario() -> tuple[list[Accepted[Any] | Rejected], JobsSession]:
        async with (
            JobsSession(session_config(mqtt_server, thing)) as jobs,
            aiomqtt.Client("127.0.0.1", mqtt_server.mqtt_port, identifier=unique("intruder")) as intruder,
        ):
            stop = asyncio.Event()

            async def flood() -> None:
                n = 0
                while not stop.is_set():
                    n += 1
                    bogus = {"clientToken": f"stray-{n}", "execution": {"jobId": "bogus"}, "queuedJobs": []}
                    await intruder.publish(f"{describe}/accepted", json.dumps(bogus), qos=1)
                    await intruder.publish(f"{topics.get}/accepted", json.dumps(bogus), qos=1)
                    await intruder.publish(f"{describe}/rejected", json.dumps({**bogus, "code": "ResourceNotFound"}))
                    await asyncio.sleep(0.002)

            flooding = asyncio.create_task(flood())
            await asyncio.sleep(0.1)  # the flood is under way before the first request
            try:
                requests = [jobs.describe(job, include_document=i % 2 == 0) for i in range(8)]
                results: list[Accepted[Any] | Rejected] = list(await asyncio.gather(*requests, jobs.get_pending()))
            finally:
                stop.set()
                await flooding
            return results, jobs

    results, jobs = asyncio.run(asyncio.wait_for(scenario(), 60))
    *described, pending = results
    for i, result in enumerate(described):
        assert isinstance(result, Accepted), result
        assert result.answer["execution"]["jobId"] == job
        assert ("jobDocument" in result.answer["execution"]) == (i % 2 == 0), (i, result)
    assert isinstance(pending, Accepted)
    assert [s["jobId"] for s in pending.answer["queuedJobs"]] == [job]
    assert jobs.stats["accepted"] == 9 and jobs.stats["retries"] == 0
    assert jobs.stats["stray_answers"] > 0  # the intruder's answers reached the session, and were dropped


def test_only_its_token_on_its_topic_is_an_answer(pausable_server: Server) -> None:
    """While the server is paused (so its answer cannot come first), three impostors reach the
    session: a foreign token on the right topic, the right token on another request's topic, the
    right token with no such request in flight on another job's topic. All are dropped; the
    request ends with the server's answer once the server resumes."""
    srv = pausable_server
    if "FLEETJOBS_MQTT_URL" not in srv.env:
        pytest.skip("the embedded broker is in the paused process: impostors could not come first")
    thing, job = thing_with_job(srv)
    topics = JobsSession(session_config(srv, thing)).topics
    describe = topics.describe(job)

    async def scenario() -> tuple[Accepted[Any] | Rejected, JobsSession]:
        async with (
            JobsSession(session_config(srv, thing)) as jobs,
            sniffing(srv.mqtt_port, describe) as sniffer,
            aiomqtt.Client("127.0.0.1", srv.mqtt_port, identifier=unique("intruder")) as intruder,
        ):
            with paused(srv):
                task = asyncio.create_task(jobs.describe(job))
                await sniffer.until(lambda: len(sniffer.sent(describe)) == 1)
                token = json.loads(sniffer.sent(describe)[0])["clientToken"]
                impostors = [
                    (f"{describe}/accepted", {"clientToken": "someone-else", "execution": {"jobId": "foreign"}}),
                    (f"{topics.get}/accepted", {"clientToken": token, "queuedJobs": []}),
                    (f"{topics.describe('other-job')}/rejected", {"clientToken": token, "code": "ResourceNotFound"}),
                ]
                for topic, doc in impostors:
                    await intruder.publish(topic, json.dumps(doc), qos=1)
                await until(lambda: jobs.stats["stray_answers"] == 3)
                assert not task.done()
            return await task, jobs

    result, jobs = asyncio.run(asyncio.wait_for(scenario(), 30))
    assert isinstance(result, Accepted), result
    assert result.answer["execution"]["jobId"] == job
    assert jobs.stats["requests"] == 1  # the server's answer came within the response timeout


def test_each_logical_request_gets_a_new_token(mqtt_server: Server) -> None:
    """Two identical updates are two requests: two tokens, and the server applies both."""
    thing, job = thing_with_job(mqtt_server)
    update = JobsSession(session_config(mqtt_server, thing)).topics.update(job)
    before = execution(mqtt_server, job, thing)["versionNumber"]

    async def scenario() -> list[bytes]:
        async with (
            JobsSession(session_config(mqtt_server, thing)) as jobs,
            sniffing(mqtt_server.mqtt_port, update) as sniffer,
        ):
            for _ in range(2):
                result = await jobs.update(job, "IN_PROGRESS", status_details={"step": "same"})
                assert isinstance(result, Accepted), result
            await sniffer.until(lambda: len(sniffer.sent(update)) == 2)
            return sniffer.sent(update)

    sent = asyncio.run(asyncio.wait_for(scenario(), 30))
    tokens = {json.loads(p)["clientToken"] for p in sent}
    assert len(tokens) == 2
    assert execution(mqtt_server, job, thing)["versionNumber"] == before + 2


# -- the retry contract -------------------------------------------------------------------------------------------


def test_a_retry_after_a_lost_answer_is_the_same_request_and_applies_once(pausable_server: Server) -> None:
    """The server is paused, so the first attempts get no answer in time and are sent again: every
    send is the same bytes (same clientToken), the server applies the first and answers the others
    from its record, and the execution's versionNumber moves once (a fresh token per send would
    move it once per send, and have the retried SUCCEEDED rejected)."""
    srv = pausable_server
    thing, job = thing_with_job(srv)
    update = JobsSession(session_config(srv, thing)).topics.update(job)
    retry = RetryPolicy(response_timeout=0.3, attempts=20, backoff=Backoff(0.05, 0.1))

    async def lose_answers(jobs: JobsSession, status: str, details: dict[str, str]) -> Accepted[Any] | Rejected:
        sends = jobs.stats["requests"]
        with paused(srv):
            task = asyncio.create_task(jobs.update(job, status, status_details=details))
            await until(lambda: jobs.stats["requests"] >= sends + 3)  # three sends: two of them retries
        return await task

    async def scenario() -> tuple[list[Accepted[Any] | Rejected], int, Sniffer, JobsSession]:
        async with (
            JobsSession(session_config(srv, thing, retry=retry)) as jobs,
            sniffing(srv.mqtt_port, update, f"{update}/+") as sniffer,
        ):
            started = await jobs.start_next()
            assert isinstance(started, Accepted) and started.answer["execution"]["jobId"] == job
            v1 = started.answer["execution"]["versionNumber"]
            progress = await lose_answers(jobs, "IN_PROGRESS", {"step": "retried"})
            await sniffer.until(lambda: len(sniffer.answers(update)) == len(sniffer.sent(update)))
            now = await asyncio.to_thread(execution, srv, job, thing)
            assert now["versionNumber"] == v1 + 1, (v1, now)  # applied once, however many sends
            assert now["statusDetails"]["detailsMap"] == {"step": "retried"}
            done = await lose_answers(jobs, "SUCCEEDED", {"step": "done"})
            await sniffer.until(lambda: len(sniffer.answers(update)) == len(sniffer.sent(update)))
            return [progress, done], v1, sniffer, jobs

    (progress, done), v1, sniffer, jobs = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert isinstance(progress, Accepted) and isinstance(done, Accepted)
    assert jobs.stats["timeouts"] >= 4 and jobs.stats["retries"] >= 4
    sent = sniffer.sent(update)
    by_status: dict[str, list[bytes]] = {}
    for payload in sent:
        by_status.setdefault(json.loads(payload)["status"], []).append(payload)
    for status, payloads in by_status.items():
        assert len(payloads) >= 3 and len(set(payloads)) == 1, (status, payloads)  # byte-for-byte the same
    # Every send was answered as the first was: accepted, none an InvalidStateTransition.
    answers = sniffer.answers(update)
    assert len(answers) == len(sent) and {outcome for outcome, _ in answers} == {"accepted"}, answers
    final = execution(srv, job, thing)
    assert (final["status"], final["versionNumber"]) == ("SUCCEEDED", v1 + 2)


def test_a_request_lost_with_the_connection_is_sent_again_after_reconnecting(pausable_server: Server) -> None:
    """The connection drops while a start-next waits for its answer, which the server then sends
    to nobody (the session is clean). Back online, the session sends the very same bytes again and
    gets the answer the server gave the first send."""
    srv = pausable_server
    thing, job = thing_with_job(srv)
    start_next = JobsSession(session_config(srv, thing)).topics.start_next
    retry = RetryPolicy(response_timeout=1.0, attempts=10, backoff=Backoff(0.05, 0.1))

    async def scenario() -> tuple[Accepted[Any] | Rejected, Sniffer, JobsSession]:
        async with (
            JobsSession(session_config(srv, thing, retry=retry)) as jobs,
            sniffing(srv.mqtt_port, start_next, f"{start_next}/+") as sniffer,
        ):
            with paused(srv):
                task = asyncio.create_task(jobs.start_next(status_details={"step": "once"}))
                await until(lambda: jobs.stats["requests"] == 1)
                await asyncio.sleep(0.1)
                await jobs.disconnect()  # the first send's answer will find nobody
            await sniffer.until(lambda: len(sniffer.answers(start_next)) == 1)  # the first send was handled
            await jobs.connect()
            result = await task
            await sniffer.until(lambda: len(sniffer.answers(start_next)) == len(sniffer.sent(start_next)))
            return result, sniffer, jobs

    result, sniffer, jobs = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert isinstance(result, Accepted), result
    assert result.answer["execution"]["jobId"] == job and result.answer["execution"]["versionNumber"] == 2
    sent = sniffer.sent(start_next)
    assert len(sent) >= 2 and len(set(sent)) == 1, sent
    answers = sniffer.answers(start_next)
    assert [a["execution"]["versionNumber"] for _, a in answers] == [2] * len(sent)  # one start, replayed
    assert jobs.stats["reconnects"] == 1 and jobs.stats["retries"] >= 1
    assert execution(srv, job, thing)["versionNumber"] == 2


def test_throttled_requests_are_retried_with_the_same_bytes(throttled_server: Server) -> None:
    """One request a second (burst 2) and six gets at once: the throttled ones are sent again,
    unchanged, until they get through; the caller sees only accepted answers."""
    srv = throttled_server
    thing = unique("js")
    srv.client("iot").create_thing(thingName=thing)
    get = JobsSession(session_config(srv, thing)).topics.get
    retry = RetryPolicy(response_timeout=5.0, attempts=12, backoff=Backoff(0.3, 1.0))

    async def scenario() -> tuple[list[Accepted[Any] | Rejected], Sniffer, JobsSession]:
        async with (
            JobsSession(session_config(srv, thing, retry=retry)) as jobs,
            sniffing(srv.mqtt_port, get, f"{get}/+") as sniffer,
        ):
            gets = [jobs.get_pending() for _ in range(6)]
            results: list[Accepted[Any] | Rejected] = list(await asyncio.gather(*gets))
            await sniffer.until(lambda: len(sniffer.answers(get)) == len(sniffer.sent(get)))
            return results, sniffer, jobs

    results, sniffer, jobs = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert all(isinstance(r, Accepted) for r in results), results
    codes = [a.get("code") for outcome, a in sniffer.answers(get) if outcome == "rejected"]
    assert codes and set(codes) == {"RequestThrottled"}
    assert jobs.stats["throttled"] == len(codes) and jobs.stats["retries"] >= len(codes)
    by_token: dict[str, set[bytes]] = {}
    for payload in sniffer.sent(get):
        by_token.setdefault(json.loads(payload)["clientToken"], set()).add(payload)
    assert len(by_token) == 6 and all(len(p) == 1 for p in by_token.values())  # six requests, resent unchanged
    assert len(sniffer.sent(get)) == 6 + len(codes)


def test_other_rejections_are_returned_not_retried(mqtt_server: Server) -> None:
    """VersionMismatch and InvalidStateTransition are answers: returned with their code and
    executionState after exactly one send each."""
    thing, job = thing_with_job(mqtt_server)
    update = JobsSession(session_config(mqtt_server, thing)).topics.update(job)

    async def scenario() -> tuple[list[Accepted[Any] | Rejected], int, Sniffer, JobsSession]:
        async with (
            JobsSession(session_config(mqtt_server, thing)) as jobs,
            sniffing(mqtt_server.mqtt_port, update) as sniffer,
        ):
            started = await jobs.start_next()
            assert isinstance(started, Accepted)
            version = started.answer["execution"]["versionNumber"]
            mismatch = await jobs.update(job, "IN_PROGRESS", expected_version=version + 5)
            done = await jobs.update(job, "SUCCEEDED", include_execution_state=True)
            invalid = await jobs.update(job, "IN_PROGRESS")
            await asyncio.sleep(1.0)  # a retry (backoff 0.05 s) would have been sent by now
            return [mismatch, done, invalid], version, sniffer, jobs

    (mismatch, done, invalid), version, sniffer, jobs = asyncio.run(asyncio.wait_for(scenario(), 30))
    assert isinstance(mismatch, Rejected) and mismatch.code == "VersionMismatch"
    assert mismatch.execution_state is not None and mismatch.execution_state["versionNumber"] == version
    assert isinstance(done, Accepted) and done.answer["executionState"]["status"] == "SUCCEEDED"
    assert isinstance(invalid, Rejected) and invalid.code == "InvalidStateTransition"
    assert invalid.execution_state is not None and invalid.execution_state["status"] == "SUCCEEDED"
    assert len(sniffer.sent(update)) == 3  # one send per request
    assert jobs.stats["other_rejections"] == 2 and jobs.stats["retries"] == 0


# -- notifications ------------------------------------------------------------------------------------------------


def test_notify_and_notify_next_reach_the_session(mqtt_server: Server) -> None:
    thing = unique("js")
    iot = mqtt_server.client("iot")
    iot.create_thing(thingName=thing)
    job = unique("job")

    async def scenario() -> list[NextNotification | ListNotification]:
        async with JobsSession(session_config(mqtt_server, thing, notify=True)) as jobs:
            await asyncio.to_thread(iot.create_job, jobId=job, targets=[thing_arn(thing)], document=DOC)
            async with asyncio.timeout(10):
                return [await jobs.next_notification(), await jobs.next_notification()]

    got = asyncio.run(asyncio.wait_for(scenario(), 30))
    nxt = next(n for n in got if isinstance(n, NextNotification))
    listing = next(n for n in got if isinstance(n, ListNotification))
    assert nxt.execution is not None and nxt.execution["jobId"] == job
    assert nxt.execution["jobDocument"] == json.loads(DOC)
    assert [s["jobId"] for s in listing.jobs["QUEUED"]] == [job]


def test_only_the_answers_of_the_requests_it_makes_are_subscribed(mqtt_server: Server) -> None:
    """A session limited to start-next and update (the simulator's) refuses a describe rather than
    waiting for answers it never subscribed to."""
    thing = unique("js")
    limited = session_config(mqtt_server, thing, requests=frozenset({"start-next", "update"}))
    assert JobsSession(limited).topics.subscriptions(limited.requests, notify=False, notify_next=True) == [
        f"$aws/things/{thing}/jobs/start-next/+",
        f"$aws/things/{thing}/jobs/+/update/+",
        f"$aws/things/{thing}/jobs/notify-next",
    ]

    async def scenario() -> None:
        async with JobsSession(limited) as jobs:
            with pytest.raises(ValueError):
                await jobs.describe("some-job")

    asyncio.run(asyncio.wait_for(scenario(), 30))
