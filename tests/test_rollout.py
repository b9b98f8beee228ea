"""The rollout engine (JOBS_API.md §3, §4.7-§4.11): staged and exponential rollouts, abort criteria,
in-progress and step timers, retries, scheduling (startTime, endTime/endBehavior, maintenance windows)
and snapshot completion.

Every test runs against one server per module and backend started with ``--manual-clock``: time only
moves through ``POST /_fleetjobs/clock``, whose answer comes back once all rollout work due at the new
time has been done.  Tests never assume an absolute time (earlier tests move the clock): they read it.
Devices act through the ``iot-jobs-data`` HTTPS API, as real devices would.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import json
import math
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.fleet import Fleet, details, executions, group_arn, thing_arn, thing_names
from tests.harness import Server

START_EPOCH = 1_800_000_000  # 2027-01-15T08:00:00Z
MINUTE = 60
DAY = 86_400
EXECUTED = ("numberOfSucceededThings", "numberOfFailedThings", "numberOfRejectedThings", "numberOfTimedOutThings")


# -- the manual clock -------------------------------------------------------------------------------


def _clock(server: Server, body: dict[str, float] | None = None) -> dict[str, Any]:
    url = f"{server.endpoint}/_fleetjobs/clock"
    if body is None:
        req = urllib.request.Request(url)
    else:
        req = urllib.request.Request(
            url, data=json.dumps(body).encode(), method="POST", headers={"Content-Type": "application/json"}
        )
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.load(r)


def now(server: Server) -> float:
    return float(_clock(server)["now"])


def advance(server: Server, seconds: float) -> float:
    """Move the clock forward; returns once everything due at the new time has been done."""
    return float(_clock(server, {"advance": seconds})["now"])


def advance_to(server: Server, when: float) -> float:
    current = now(server)
    assert when >= current, f"the clock never goes back in these tests ({when} < {current})"
    return advance(server, when - current)


def advance_stepwise(server: Server, seconds: float, step: float) -> float:
    """Advance in steps no longer than ``step`` (a staged rollout never banks more than a minute)."""
    t = now(server)
    end = t + seconds
    while t < end:
        t = advance(server, min(step, end - t))
    return t


def hhmm(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M")


def next_minute(epoch: float) -> float:
    return math.ceil(epoch / MINUTE) * MINUTE


# -- fixtures -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clock_server(backends) -> Iterator[Server]:  # type: ignore[no-untyped-def]
    srv = backends.server(extra_args=["--manual-clock", str(START_EPOCH)]).start()
    yield srv
    srv.stop()


@pytest.fixture
def iot(clock_server: Server):  # type: ignore[no-untyped-def]
    return clock_server.client("iot")


@pytest.fixture
def device(clock_server: Server):  # type: ignore[no-untyped-def]
    return clock_server.client("iot-jobs-data")


@pytest.fixture
def fleet(iot) -> Fleet:  # type: ignore[no-untyped-def]
    return Fleet(iot)


def make_group(server: Server, fleet: Fleet, n: int, workers: int = 8) -> tuple[str, list[str]]:
    """A thing group of ``n`` new things, created over a few parallel clients (a target list holds at
    most 100 ARNs, so large staged rollouts target a group)."""
    group = fleet.group("big")
    names = [f"{fleet.prefix}-m{i:05d}" for i in range(n)]
    clients = [server.client("iot") for _ in range(workers)]

    def create(k: int) -> None:
        for name in names[k::workers]:
            clients[k].create_thing(thingName=name)
            clients[k].add_thing_to_thing_group(thingGroupName=group, thingName=name)

    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        list(pool.map(create, range(workers)))
    return group, names


def arns(things: list[str]) -> list[str]:
    return [thing_arn(t) for t in things]


def job(iot: Any, job_id: str) -> dict[str, Any]:
    return iot.describe_job(jobId=job_id)["job"]


def status_of(iot: Any, job_id: str, thing: str) -> str:
    return iot.describe_job_execution(jobId=job_id, thingName=thing)["execution"]["status"]


def released_count(d: dict[str, Any]) -> int:
    """Executions that exist, whatever their state (each target has at most one here)."""
    return sum(
        d.get(k, 0)
        for k in (
            "numberOfQueuedThings",
            "numberOfInProgressThings",
            "numberOfCanceledThings",
            "numberOfRemovedThings",
            *EXECUTED,
        )
    )


def queued_things(iot: Any, job_id: str) -> list[str]:
    return thing_names(executions(iot, job_id, status="QUEUED"))


def run(device: Any, job_id: str, thing: str, outcome: str) -> None:
    """The device starts its next pending execution (this job's) and reports ``outcome``."""
    started = device.start_next_pending_job_execution(thingName=thing)["execution"]
    assert started["jobId"] == job_id and started["status"] == "IN_PROGRESS"
    device.update_job_execution(jobId=job_id, thingName=thing, status=outcome)


def start(device: Any, job_id: str, thing: str, **kwargs: Any) -> dict[str, Any]:
    started = device.start_next_pending_job_execution(thingName=thing, **kwargs)["execution"]
    assert started["jobId"] == job_id and started["status"] == "IN_PROGRESS"
    return started


# -- staged rollout: constant rate --------------------------------------------------------------------


def test_constant_rate_over_a_simulated_hour(clock_server: Server, iot, fleet: Fleet) -> None:
    rate = 10  # per minute: 1.67 per 10 s step, so fractional credit carries over between steps
    group, things = make_group(clock_server, fleet, 630)
    job_id = fleet.job([group_arn(group)], jobExecutionsRolloutConfig={"maximumPerMinute": rate})
    advance(clock_server, 0)
    # The first execution is released at once; the rest are not there yet.
    d = details(iot, job_id)
    assert d["numberOfQueuedThings"] == 1
    assert d["processingTargets"]
    assert len(executions(iot, job_id)) == 1
    for step in range(1, 361):
        advance(clock_server, 10)
        t = 10 * step
        j = job(iot, job_id)
        d = j["jobProcessDetails"]
        expected = 1 + rate * t / 60
        tolerance = max(1.0, 0.02 * expected)
        assert abs(d["numberOfQueuedThings"] - expected) <= tolerance, (t, d["numberOfQueuedThings"], expected)
        assert d.get("processingTargets"), t
        assert j["isConcurrent"] is True and j["status"] == "IN_PROGRESS", t
    total = details(iot, job_id)["numberOfQueuedThings"]
    assert abs(total - 601) <= max(1, 0.02 * 601)
    # Released executions (and only those) are listed.
    assert len(executions(iot, job_id)) == total
    # At most one minute of credit is banked: a ten-minute jump releases one minute's worth.
    advance(clock_server, 600)
    after_jump = details(iot, job_id)["numberOfQueuedThings"]
    assert 0 < after_jump - total <= rate + 1
    # Then the rest at the rate; once every target is released the rollout is over.
    advance_stepwise(clock_server, 120, 10)
    j = job(iot, job_id)
    assert j["jobProcessDetails"]["numberOfQueuedThings"] == len(things)
    assert "processingTargets" not in j["jobProcessDetails"]
    assert j["isConcurrent"] is False
    assert j["status"] == "IN_PROGRESS"  # executions are still queued


def test_staged_rollout_releases_only_queued_executions_listed_per_target(clock_server: Server, iot, fleet) -> None:
    things = fleet.things(10)
    job_id = fleet.job(arns(things), jobExecutionsRolloutConfig={"maximumPerMinute": 2})
    advance(clock_server, 0)
    listed = executions(iot, job_id)
    assert len(listed) == 1 and listed[0]["jobExecutionSummary"]["status"] == "QUEUED"
    advance(clock_server, 29)
    assert len(executions(iot, job_id)) == 1  # 2/min: the second one is due at +30 s
    advance(clock_server, 1)
    assert len(executions(iot, job_id)) == 2
    advance_stepwise(clock_server, 60, 10)
    released = executions(iot, job_id)
    assert len(released) == 4
    assert len(set(thing_names(released))) == 4
    # Unreleased targets have no execution at all.
    unreleased = set(things) - set(thing_names(released))
    for thing in unreleased:
        with pytest.raises(iot.exceptions.ResourceNotFoundException):
            iot.describe_job_execution(jobId=job_id, thingName=thing)


# -- exponential rollout ---------------------------------------------------------------------------------


def _first_time_reaching(server: Server, iot: Any, job_id: str, marks: list[int], limit: float) -> dict[int, float]:
    """Advance 1 s at a time; the elapsed time at which the released count first reached each mark."""
    t0 = now(server)
    reached: dict[int, float] = {}
    t = t0
    while len(reached) < len(marks):
        t = advance(server, 1)
        n = details(iot, job_id)["numberOfQueuedThings"]
        for m in marks:
            if m not in reached and n >= m:
                reached[m] = t - t0
        assert t - t0 < limit, (reached, n)
    return reached


def test_exponential_rate_steps_on_notified_things_capped_by_maximum(clock_server: Server, iot, fleet) -> None:
    things = fleet.things(100)
    job_id = fleet.job(
        arns(things),
        jobExecutionsRolloutConfig={
            "maximumPerMinute": 100,
            "exponentialRate": {
                "baseRatePerMinute": 10,
                "incrementFactor": 2,
                "rateIncreaseCriteria": {"numberOfNotifiedThings": 10},
            },
        },
    )
    advance(clock_server, 0)
    assert details(iot, job_id)["numberOfQueuedThings"] == 1
    reached = _first_time_reaching(clock_server, iot, job_id, [10, 20, 30, 40, 70, 100], limit=400)
    # rate = 10 * 2^floor(released / 10), at most 100/min:
    # 1 -> 10 at 10/min (9 things: 54 s); 10 -> 20 at 20/min (30 s); 20 -> 30 at 40/min (15 s);
    # 30 -> 40 at 80/min (7.5 s); then min(160, 100) = 100/min: 40 -> 70 and 70 -> 100 in 18 s each
    # (uncapped, 70 -> 100 would take 30 / 320 min = 5.6 s).
    expected = {10: 54, 20: 84, 30: 99, 40: 106.5, 70: 124.5, 100: 142.5}
    for mark, at in expected.items():
        assert abs(reached[mark] - at) <= 2, (mark, reached)
    spans = [(10, 20, 30), (20, 30, 15), (30, 40, 7.5), (40, 70, 18), (70, 100, 18)]
    for lo, hi, seconds in spans:
        assert abs((reached[hi] - reached[lo]) - seconds) <= 2, (lo, hi, reached)


def test_exponential_rate_steps_on_succeeded_things(clock_server: Server, iot, device, fleet) -> None:
    group, _ = make_group(clock_server, fleet, 70)
    job_id = fleet.job(
        [group_arn(group)],
        jobExecutionsRolloutConfig={
            "exponentialRate": {
                "baseRatePerMinute": 10,
                "incrementFactor": 2,
                "rateIncreaseCriteria": {"numberOfSucceededThings": 3},
            },
        },
    )
    advance(clock_server, 0)
    assert released_count(details(iot, job_id)) == 1
    advance_stepwise(clock_server, 60, 10)
    n1 = released_count(details(iot, job_id))
    assert abs(n1 - 11) <= 1  # base rate: 10/min
    # Notified things alone do not raise the rate: another minute, another ~10.
    advance_stepwise(clock_server, 60, 10)
    n2 = released_count(details(iot, job_id))
    assert abs((n2 - n1) - 10) <= 1
    # Three successes: 20/min.
    for thing in queued_things(iot, job_id)[:3]:
        run(device, job_id, thing, "SUCCEEDED")
    advance_stepwise(clock_server, 60, 10)
    n3 = released_count(details(iot, job_id))
    assert abs((n3 - n2) - 20) <= 1
    # Six successes: 40/min.
    for thing in queued_things(iot, job_id)[:3]:
        run(device, job_id, thing, "SUCCEEDED")
    advance_stepwise(clock_server, 30, 10)
    n4 = released_count(details(iot, job_id))
    assert abs((n4 - n3) - 20) <= 1
    assert details(iot, job_id)["numberOfSucceededThings"] == 6


# -- abort ------------------------------------------------------------------------------------------------


def _abort_job(fleet: Fleet, things: list[str], failure_type: str, pct: float, min_executed: int, **kw: Any) -> str:
    return fleet.job(
        arns(things),
        abortConfig={
            "criteriaList": [
                {
                    "failureType": failure_type,
                    "action": "CANCEL",
                    "thresholdPercentage": pct,
                    "minNumberOfExecutedThings": min_executed,
                }
            ]
        },
        **kw,
    )


def _assert_aborted(iot: Any, job_id: str) -> dict[str, Any]:
    j = job(iot, job_id)
    assert j["status"] == "CANCELED"
    assert j["reasonCode"] == "ABORTED_BY_ABORT_CONFIG"
    assert j.get("comment")
    return j


def test_abort_fires_exactly_at_the_outcome_crossing_the_threshold(clock_server: Server, iot, device, fleet) -> None:
    things = fleet.things(14)
    job_id = _abort_job(fleet, things, "FAILED", 50, 10)
    # One device is still working when the job aborts: it is left alone.
    start(device, job_id, things[13])
    outcomes = ["SUCCEEDED"] * 4 + ["FAILED"] * 5  # 9 executed, 5 failed: below the minimum of 10
    for thing, outcome in zip(things, outcomes, strict=False):
        run(device, job_id, thing, outcome)
        assert job(iot, job_id)["status"] == "IN_PROGRESS", thing
    # The 10th outcome is a failure: 6 of 10 = 60% >= 50%.
    run(device, job_id, things[9], "FAILED")
    j = _assert_aborted(iot, job_id)
    d = j["jobProcessDetails"]
    assert d["numberOfFailedThings"] == 6 and d["numberOfSucceededThings"] == 4
    assert d["numberOfCanceledThings"] == 3  # things[10..12] were queued
    assert d["numberOfQueuedThings"] == 0 and d["numberOfInProgressThings"] == 1
    for thing in things[10:13]:
        assert status_of(iot, job_id, thing) == "CANCELED"
    assert status_of(iot, job_id, things[13]) == "IN_PROGRESS"
    # ... and may still finish.
    device.update_job_execution(jobId=job_id, thingName=things[13], status="SUCCEEDED")
    j = job(iot, job_id)
    assert j["status"] == "CANCELED" and j["jobProcessDetails"]["numberOfSucceededThings"] == 5


def test_abort_minimum_counts_executed_things_not_failures(clock_server: Server, iot, device, fleet) -> None:
    things = fleet.things(12)
    job_id = _abort_job(fleet, things, "FAILED", 50, 10)
    for thing in things[:9]:
        run(device, job_id, thing, "FAILED")  # 100% failed, but only 9 executed
    assert job(iot, job_id)["status"] == "IN_PROGRESS"
    run(device, job_id, things[9], "SUCCEEDED")  # 9 of 10 failed
    _assert_aborted(iot, job_id)
    assert status_of(iot, job_id, things[10]) == "CANCELED"


def test_abort_threshold_is_inclusive(clock_server: Server, iot, device, fleet) -> None:
    things = fleet.things(11)
    job_id = _abort_job(fleet, things, "FAILED", 50, 10)
    for thing, outcome in zip(things, ["SUCCEEDED"] * 5 + ["FAILED"] * 4, strict=False):
        run(device, job_id, thing, outcome)
    assert job(iot, job_id)["status"] == "IN_PROGRESS"
    run(device, job_id, things[9], "FAILED")  # 5 of 10 = exactly 50%
    _assert_aborted(iot, job_id)


def test_abort_not_triggered_below_threshold_job_completes(clock_server: Server, iot, device, fleet) -> None:
    things = fleet.things(12)
    job_id = _abort_job(fleet, things, "FAILED", 50, 10)
    outcomes = ["SUCCEEDED"] * 6 + ["FAILED"] * 4 + ["FAILED", "SUCCEEDED"]
    # 10 executed: 4 failed (40%); 11: 5 (45%); 12: 5 (41.7%) -- never 50%.
    for thing, outcome in zip(things, outcomes, strict=True):
        run(device, job_id, thing, outcome)
        assert job(iot, job_id)["status"] != "CANCELED", thing
    j = job(iot, job_id)
    assert j["status"] == "COMPLETED"
    assert "reasonCode" not in j
    assert j["jobProcessDetails"]["numberOfFailedThings"] == 5


def test_abort_rejected_criterion_ignores_failed(clock_server: Server, iot, device, fleet) -> None:
    things = fleet.things(10)
    job_id = _abort_job(fleet, things, "REJECTED", 50, 4)
    for thing in things[:4]:
        run(device, job_id, thing, "FAILED")
    assert job(iot, job_id)["status"] == "IN_PROGRESS"  # 4 executed, 0 rejected
    run(device, job_id, things[4], "REJECTED")
    run(device, job_id, things[5], "REJECTED")
    run(device, job_id, things[6], "REJECTED")
    assert job(iot, job_id)["status"] == "IN_PROGRESS"  # 3 of 7 rejected
    device.update_job_execution(jobId=job_id, thingName=things[7], status="REJECTED")  # straight from QUEUED
    _assert_aborted(iot, job_id)  # 4 of 8 = 50%
    assert [status_of(iot, job_id, t) for t in things[8:]] == ["CANCELED", "CANCELED"]


def test_abort_all_counts_timeouts_and_fires_from_the_clock(clock_server: Server, iot, device, fleet) -> None:
    things = fleet.things(6)
    job_id = _abort_job(fleet, things, "ALL", 50, 4, timeoutConfig={"inProgressTimeoutInMinutes": 1})
    run(device, job_id, things[0], "SUCCEEDED")
    run(device, job_id, things[1], "SUCCEEDED")
    run(device, job_id, things[2], "REJECTED")
    assert job(iot, job_id)["status"] == "IN_PROGRESS"  # 3 executed: below the minimum
    start(device, job_id, things[3])
    advance(clock_server, 59)
    assert job(iot, job_id)["status"] == "IN_PROGRESS"
    advance(clock_server, 1)  # times out: 2 of 4 (REJECTED + TIMED_OUT) = 50%
    j = _assert_aborted(iot, job_id)
    assert j["jobProcessDetails"]["numberOfTimedOutThings"] == 1
    assert j["jobProcessDetails"]["numberOfCanceledThings"] == 2


def test_abort_during_staged_rollout_never_releases_the_rest(clock_server: Server, iot, device, fleet) -> None:
    things = fleet.things(20)
    job_id = _abort_job(fleet, things, "FAILED", 50, 2, jobExecutionsRolloutConfig={"maximumPerMinute": 5})
    advance(clock_server, 0)
    advance_stepwise(clock_server, 60, 10)
    released = queued_things(iot, job_id)
    assert abs(len(released) - 6) <= 1
    start(device, job_id, released[0])
    run(device, job_id, released[1], "FAILED")
    assert job(iot, job_id)["status"] == "IN_PROGRESS"  # 1 executed: below the minimum
    run(device, job_id, released[2], "FAILED")
    j = _assert_aborted(iot, job_id)
    d = j["jobProcessDetails"]
    assert "processingTargets" not in d and j["isConcurrent"] is False
    assert d["numberOfCanceledThings"] == len(released) - 3
    assert d["numberOfInProgressThings"] == 1 and d["numberOfQueuedThings"] == 0
    advance_stepwise(clock_server, 300, 30)
    assert len(executions(iot, job_id)) == len(released)
    assert details(iot, job_id)["numberOfQueuedThings"] == 0


# -- timers -------------------------------------------------------------------------------------------


def test_in_progress_and_step_timers_follow_the_documented_example(clock_server: Server, iot, device, fleet) -> None:
    """§4.7: 20-min in-progress timer started at T; step 7 min at T+5 -> T+12; step 5 min at T+10 ->
    T+15; step 9 min at T+13 -> capped at T+20."""
    a, b, c, plain, canceled_step, idle = fleet.things(6)
    job_id = fleet.job(arns([a, b, c, plain, canceled_step, idle]), timeoutConfig={"inProgressTimeoutInMinutes": 20})
    t = now(clock_server)
    for thing in (a, b, c, plain, canceled_step):
        ex = start(device, job_id, thing)
        assert ex["approximateSecondsBeforeTimedOut"] == 20 * MINUTE

    def at(minutes: float) -> None:
        advance_to(clock_server, t + minutes * MINUTE)

    def remaining(thing: str) -> int:
        ex = device.describe_job_execution(jobId=job_id, thingName=thing)["execution"]
        assert ex["status"] == "IN_PROGRESS"
        return ex["approximateSecondsBeforeTimedOut"]

    def statuses() -> dict[str, str]:
        return {x: status_of(iot, job_id, x) for x in (a, b, c, plain, canceled_step, idle)}

    at(5)
    for thing in (a, b, c, canceled_step):
        out = device.update_job_execution(
            jobId=job_id, thingName=thing, status="IN_PROGRESS", stepTimeoutInMinutes=7, includeJobExecutionState=True
        )
        assert out["executionState"]["status"] == "IN_PROGRESS"
    assert remaining(a) == 7 * MINUTE
    assert remaining(plain) == 15 * MINUTE
    at(10)
    for thing in (b, c):
        device.update_job_execution(jobId=job_id, thingName=thing, status="IN_PROGRESS", stepTimeoutInMinutes=5)
    device.update_job_execution(jobId=job_id, thingName=canceled_step, status="IN_PROGRESS", stepTimeoutInMinutes=-1)
    assert remaining(a) == 2 * MINUTE
    assert remaining(b) == 5 * MINUTE
    assert remaining(canceled_step) == 10 * MINUTE  # back to the in-progress deadline

    advance_to(clock_server, t + 12 * MINUTE - 1)
    assert remaining(a) == 1
    assert set(statuses().values()) == {"IN_PROGRESS", "QUEUED"}
    at(12)
    s = statuses()
    assert s[a] == "TIMED_OUT"
    assert s[b] == s[c] == s[plain] == s[canceled_step] == "IN_PROGRESS"
    assert details(iot, job_id)["numberOfTimedOutThings"] == 1

    at(13)
    device.update_job_execution(jobId=job_id, thingName=c, status="IN_PROGRESS", stepTimeoutInMinutes=9)
    assert remaining(c) == 7 * MINUTE  # capped: T+20, not T+22

    advance_to(clock_server, t + 15 * MINUTE - 1)
    assert remaining(b) == 1
    at(15)
    s = statuses()
    assert s[b] == "TIMED_OUT" and s[c] == "IN_PROGRESS"

    advance_to(clock_server, t + 20 * MINUTE - 1)
    assert remaining(c) == 1 and remaining(plain) == 1 and remaining(canceled_step) == 1
    at(20)
    s = statuses()
    assert s[c] == s[plain] == s[canceled_step] == "TIMED_OUT"
    assert s[idle] == "QUEUED"  # timers start only at IN_PROGRESS
    d = details(iot, job_id)
    assert d["numberOfTimedOutThings"] == 5 and d["numberOfInProgressThings"] == 0
    # Terminal: the device can no longer update it.
    with pytest.raises(device.exceptions.InvalidStateTransitionException):
        device.update_job_execution(jobId=job_id, thingName=c, status="SUCCEEDED")
    at(60)
    assert status_of(iot, job_id, idle) == "QUEUED"


def test_step_timer_without_in_progress_timer(clock_server: Server, iot, device, fleet) -> None:
    thing, other = fleet.things(2)
    job_id = fleet.job(arns([thing, other]))
    t = now(clock_server)
    ex = start(device, job_id, thing, stepTimeoutInMinutes=3)
    assert ex["approximateSecondsBeforeTimedOut"] == 3 * MINUTE
    start(device, job_id, other)
    assert (
        "approximateSecondsBeforeTimedOut"
        not in device.describe_job_execution(jobId=job_id, thingName=other)["execution"]
    )
    advance_to(clock_server, t + 2 * MINUTE)
    # Each new value replaces the previous one: 3 min from now.
    device.update_job_execution(jobId=job_id, thingName=thing, status="IN_PROGRESS", stepTimeoutInMinutes=3)
    advance_to(clock_server, t + 5 * MINUTE - 1)
    assert status_of(iot, job_id, thing) == "IN_PROGRESS"
    advance(clock_server, 1)
    assert status_of(iot, job_id, thing) == "TIMED_OUT"
    advance(clock_server, 7 * DAY)
    assert status_of(iot, job_id, other) == "IN_PROGRESS"  # no timer at all


# -- retries ------------------------------------------------------------------------------------------


def _retry_summaries(iot: Any, job_id: str, thing: str) -> list[tuple[int, int, str]]:
    out = iot.list_job_executions_for_thing(thingName=thing, jobId=job_id)["executionSummaries"]
    return [
        (
            s["jobExecutionSummary"]["executionNumber"],
            s["jobExecutionSummary"].get("retryAttempt", 0),
            s["jobExecutionSummary"]["status"],
        )
        for s in out
    ]


def test_failed_executions_are_retried_up_to_the_limit(clock_server: Server, iot, device, fleet) -> None:
    thing, other = fleet.things(2)
    job_id = fleet.job(
        arns([thing, other]),
        jobExecutionsRetryConfig={"criteriaList": [{"failureType": "FAILED", "numberOfRetries": 2}]},
    )
    run(device, job_id, other, "SUCCEEDED")
    run(device, job_id, thing, "FAILED")
    assert _retry_summaries(iot, job_id, thing) == [(1, 0, "FAILED"), (2, 1, "QUEUED")]
    ex = iot.describe_job_execution(jobId=job_id, thingName=thing)["execution"]  # the latest one
    assert ex["executionNumber"] == 2 and ex["status"] == "QUEUED"
    assert job(iot, job_id)["status"] == "IN_PROGRESS"  # a retry is pending
    # The device sees the retry as its next pending job.
    started = start(device, job_id, thing)
    assert started["executionNumber"] == 2
    device.update_job_execution(jobId=job_id, thingName=thing, status="FAILED")
    assert _retry_summaries(iot, job_id, thing) == [(1, 0, "FAILED"), (2, 1, "FAILED"), (3, 2, "QUEUED")]
    assert job(iot, job_id)["status"] == "IN_PROGRESS"
    run(device, job_id, thing, "FAILED")
    assert _retry_summaries(iot, job_id, thing) == [(1, 0, "FAILED"), (2, 1, "FAILED"), (3, 2, "FAILED")]
    assert job(iot, job_id)["status"] == "COMPLETED"
    by_job = executions(iot, job_id)
    assert sorted(s["jobExecutionSummary"]["retryAttempt"] for s in by_job if thing_names([s]) == [thing]) == [0, 1, 2]


def test_retry_then_success_completes_the_job(clock_server: Server, iot, device, fleet) -> None:
    (thing,) = fleet.things(1)
    job_id = fleet.job(
        arns([thing]),
        timeoutConfig={"inProgressTimeoutInMinutes": 5},
        jobExecutionsRetryConfig={"criteriaList": [{"failureType": "ALL", "numberOfRetries": 5}]},
    )
    run(device, job_id, thing, "FAILED")
    run(device, job_id, thing, "SUCCEEDED")
    assert _retry_summaries(iot, job_id, thing) == [(1, 0, "FAILED"), (2, 1, "SUCCEEDED")]
    assert job(iot, job_id)["status"] == "COMPLETED"


def test_rejected_is_never_retried(clock_server: Server, iot, device, fleet) -> None:
    (thing,) = fleet.things(1)
    job_id = fleet.job(
        arns([thing]),
        timeoutConfig={"inProgressTimeoutInMinutes": 5},
        jobExecutionsRetryConfig={"criteriaList": [{"failureType": "ALL", "numberOfRetries": 3}]},
    )
    run(device, job_id, thing, "REJECTED")
    assert _retry_summaries(iot, job_id, thing) == [(1, 0, "REJECTED")]
    assert job(iot, job_id)["status"] == "COMPLETED"


def test_timed_out_executions_are_retried(clock_server: Server, iot, device, fleet) -> None:
    (thing,) = fleet.things(1)
    job_id = fleet.job(
        arns([thing]),
        timeoutConfig={"inProgressTimeoutInMinutes": 1},
        jobExecutionsRetryConfig={"criteriaList": [{"failureType": "TIMED_OUT", "numberOfRetries": 1}]},
    )
    start(device, job_id, thing)
    advance(clock_server, 60)
    assert _retry_summaries(iot, job_id, thing) == [(1, 0, "TIMED_OUT"), (2, 1, "QUEUED")]
    assert job(iot, job_id)["status"] == "IN_PROGRESS"
    # A queued retry never times out by itself.
    advance(clock_server, 3600)
    assert _retry_summaries(iot, job_id, thing)[-1] == (2, 1, "QUEUED")
    start(device, job_id, thing)
    advance(clock_server, 60)
    assert _retry_summaries(iot, job_id, thing) == [(1, 0, "TIMED_OUT"), (2, 1, "TIMED_OUT")]
    assert job(iot, job_id)["status"] == "COMPLETED"


def test_retry_limits_per_failure_type(clock_server: Server, iot, device, fleet) -> None:
    (thing,) = fleet.things(1)
    job_id = fleet.job(
        arns([thing]),
        timeoutConfig={"inProgressTimeoutInMinutes": 1},
        jobExecutionsRetryConfig={
            "criteriaList": [
                {"failureType": "FAILED", "numberOfRetries": 1},
                {"failureType": "TIMED_OUT", "numberOfRetries": 1},
            ]
        },
    )
    run(device, job_id, thing, "FAILED")  # FAILED retry 1 of 1
    start(device, job_id, thing)
    advance(clock_server, 60)  # TIMED_OUT has its own budget
    assert [s[2] for s in _retry_summaries(iot, job_id, thing)] == ["FAILED", "TIMED_OUT", "QUEUED"]
    run(device, job_id, thing, "FAILED")  # FAILED budget spent
    assert _retry_summaries(iot, job_id, thing) == [(1, 0, "FAILED"), (2, 1, "TIMED_OUT"), (3, 2, "FAILED")]
    assert job(iot, job_id)["status"] == "COMPLETED"


def test_retry_all_bounds_both_failure_types_together(clock_server: Server, iot, device, fleet) -> None:
    (thing,) = fleet.things(1)
    job_id = fleet.job(
        arns([thing]),
        timeoutConfig={"inProgressTimeoutInMinutes": 1},
        jobExecutionsRetryConfig={"criteriaList": [{"failureType": "ALL", "numberOfRetries": 2}]},
    )
    run(device, job_id, thing, "FAILED")
    start(device, job_id, thing)
    advance(clock_server, 60)
    assert [s[2] for s in _retry_summaries(iot, job_id, thing)] == ["FAILED", "TIMED_OUT", "QUEUED"]
    run(device, job_id, thing, "FAILED")  # two retries used, of any type
    assert [s[2] for s in _retry_summaries(iot, job_id, thing)] == ["FAILED", "TIMED_OUT", "FAILED"]
    assert job(iot, job_id)["status"] == "COMPLETED"


def test_retry_on_timed_out_needs_no_timeout_config(clock_server: Server, iot, device, fleet) -> None:
    """Without a job timeout, the step timer still times executions out, and they are retried
    (tests/test_timeout_retries.py has the whole story)."""
    (thing,) = fleet.things(1)
    job_id = fleet.job(
        arns([thing]),
        jobExecutionsRetryConfig={"criteriaList": [{"failureType": "TIMED_OUT", "numberOfRetries": 1}]},
    )
    start(device, job_id, thing, stepTimeoutInMinutes=1)
    advance(clock_server, 60)
    assert _retry_summaries(iot, job_id, thing) == [(1, 0, "TIMED_OUT"), (2, 1, "QUEUED")]


def test_abort_cancels_queued_retries(clock_server: Server, iot, device, fleet) -> None:
    things = fleet.things(3)
    job_id = fleet.job(
        arns(things),
        jobExecutionsRetryConfig={"criteriaList": [{"failureType": "FAILED", "numberOfRetries": 3}]},
        abortConfig={
            "criteriaList": [
                {
                    "failureType": "FAILED",
                    "action": "CANCEL",
                    "thresholdPercentage": 100,
                    "minNumberOfExecutedThings": 2,
                }
            ]
        },
    )
    run(device, job_id, things[0], "FAILED")  # retried
    assert [s[2] for s in _retry_summaries(iot, job_id, things[0])] == ["FAILED", "QUEUED"]
    run(device, job_id, things[1], "FAILED")  # 2 of 2 failed: abort
    _assert_aborted(iot, job_id)
    assert _retry_summaries(iot, job_id, things[0])[-1][2] == "CANCELED"
    assert status_of(iot, job_id, things[2]) == "CANCELED"
    assert device.start_next_pending_job_execution(thingName=things[0]).get("execution") is None


# -- scheduling -----------------------------------------------------------------------------------------


def test_scheduled_start_time(clock_server: Server, iot, fleet) -> None:
    things = fleet.things(3)
    t = now(clock_server)
    with pytest.raises(iot.exceptions.InvalidRequestException):
        fleet.job(arns(things), schedulingConfig={"startTime": hhmm(next_minute(t) + 29 * MINUTE)})
    start_at = next_minute(t + 31 * MINUTE)
    job_id = fleet.job(arns(things), schedulingConfig={"startTime": hhmm(start_at)})
    advance(clock_server, 0)
    j = job(iot, job_id)
    assert j["status"] == "SCHEDULED" and j["isConcurrent"] is False
    assert executions(iot, job_id) == []
    assert j["jobProcessDetails"].get("numberOfQueuedThings", 0) == 0
    advance_to(clock_server, start_at - 1)
    assert job(iot, job_id)["status"] == "SCHEDULED"
    assert executions(iot, job_id) == []
    advance(clock_server, 1)
    j = job(iot, job_id)
    assert j["status"] == "IN_PROGRESS"
    assert sorted(thing_names(executions(iot, job_id, status="QUEUED"))) == sorted(things)
    assert j["jobProcessDetails"]["numberOfQueuedThings"] == 3


def _ending_job(clock_server: Server, fleet: Fleet, things: list[str], behavior: str) -> tuple[str, float]:
    """A 1/min staged job whose endTime is ~31 minutes ahead; returns (jobId, endTime epoch)."""
    end = next_minute(now(clock_server) + 31 * MINUTE)
    job_id = fleet.job(
        arns(things),
        jobExecutionsRolloutConfig={"maximumPerMinute": 1},
        schedulingConfig={"endTime": hhmm(end), "endBehavior": behavior},
    )
    advance(clock_server, 0)
    return job_id, end


def _roll_until(clock_server: Server, when: float) -> None:
    while now(clock_server) < when:
        advance(clock_server, min(60, when - now(clock_server)))


def test_end_time_stop_rollout(clock_server: Server, iot, device, fleet) -> None:
    things = fleet.things(40)
    job_id, end = _ending_job(clock_server, fleet, things, "STOP_ROLLOUT")
    _roll_until(clock_server, end - 1)
    released = thing_names(executions(iot, job_id))
    assert 30 <= len(released) <= 33
    start(device, job_id, released[0])
    run(device, job_id, released[1], "SUCCEEDED")
    assert job(iot, job_id)["jobProcessDetails"]["processingTargets"]
    advance(clock_server, 1)
    j = job(iot, job_id)
    assert j["status"] == "IN_PROGRESS"
    assert "processingTargets" not in j["jobProcessDetails"]
    n = len(executions(iot, job_id))
    assert n in (len(released), len(released) + 1)
    # No more releases, queued executions stay queued.
    advance_stepwise(clock_server, 600, 60)
    assert len(executions(iot, job_id)) == n
    queued = queued_things(iot, job_id)
    assert len(queued) == n - 2
    # The job completes once its executions are finished.
    device.update_job_execution(jobId=job_id, thingName=released[0], status="SUCCEEDED")
    for thing in queued[:-1]:
        run(device, job_id, thing, "SUCCEEDED")
    assert job(iot, job_id)["status"] == "IN_PROGRESS"
    run(device, job_id, queued[-1], "FAILED")
    j = job(iot, job_id)
    assert j["status"] == "COMPLETED" and "completedAt" in j


def test_end_time_cancel(clock_server: Server, iot, device, fleet) -> None:
    things = fleet.things(40)
    job_id, end = _ending_job(clock_server, fleet, things, "CANCEL")
    _roll_until(clock_server, end - 1)
    released = thing_names(executions(iot, job_id))
    start(device, job_id, released[0])
    run(device, job_id, released[1], "SUCCEEDED")
    advance(clock_server, 1)
    j = job(iot, job_id)
    assert j["status"] == "CANCELED" and j["forceCanceled"] is False
    d = j["jobProcessDetails"]
    assert "processingTargets" not in d
    assert d["numberOfQueuedThings"] == 0 and d["numberOfInProgressThings"] == 1 and d["numberOfSucceededThings"] == 1
    n = len(executions(iot, job_id))
    assert d["numberOfCanceledThings"] == n - 2
    assert status_of(iot, job_id, released[0]) == "IN_PROGRESS"
    device.update_job_execution(jobId=job_id, thingName=released[0], status="SUCCEEDED")  # may still finish
    advance_stepwise(clock_server, 300, 60)
    assert len(executions(iot, job_id)) == n


def test_end_time_force_cancel(clock_server: Server, iot, device, fleet) -> None:
    things = fleet.things(40)
    job_id, end = _ending_job(clock_server, fleet, things, "FORCE_CANCEL")
    _roll_until(clock_server, end - 1)
    released = thing_names(executions(iot, job_id))
    start(device, job_id, released[0])
    run(device, job_id, released[1], "SUCCEEDED")
    advance(clock_server, 1)
    j = job(iot, job_id)
    assert j["status"] == "CANCELED" and j["forceCanceled"] is True
    d = j["jobProcessDetails"]
    n = len(executions(iot, job_id))
    assert d["numberOfInProgressThings"] == 0 and d["numberOfQueuedThings"] == 0
    assert d["numberOfCanceledThings"] == n - 1 and d["numberOfSucceededThings"] == 1
    ex = iot.describe_job_execution(jobId=job_id, thingName=released[0])["execution"]
    assert ex["status"] == "CANCELED" and ex["forceCanceled"] is True
    with pytest.raises(device.exceptions.InvalidStateTransitionException):
        device.update_job_execution(jobId=job_id, thingName=released[0], status="SUCCEEDED")


def test_scheduled_start_and_end_time_validation(clock_server: Server, iot, fleet) -> None:
    (thing,) = fleet.things(1)
    start_at = next_minute(now(clock_server) + 40 * MINUTE)
    with pytest.raises(iot.exceptions.InvalidRequestException):
        fleet.job(
            arns([thing]), schedulingConfig={"startTime": hhmm(start_at), "endTime": hhmm(start_at + 29 * MINUTE)}
        )
    job_id = fleet.job(
        arns([thing]), schedulingConfig={"startTime": hhmm(start_at), "endTime": hhmm(start_at + 30 * MINUTE)}
    )
    assert job(iot, job_id)["status"] == "SCHEDULED"


def test_maintenance_windows(clock_server: Server, iot, device, fleet) -> None:
    things = fleet.things(8)
    # Tomorrow (by the server's clock) at 08:00 UTC: the next window opens at 10:00.
    day = (int(now(clock_server)) // DAY + 1) * DAY
    advance_to(clock_server, day + 8 * 3600)
    window_start = day + 10 * 3600
    job_id = fleet.job(
        arns(things),
        jobExecutionsRolloutConfig={"maximumPerMinute": 1},
        schedulingConfig={
            "startTime": hhmm(day + 8 * 3600 + 30 * MINUTE),
            "maintenanceWindows": [{"startTime": "cron(0 10 * * ? *)", "durationInMinutes": 5}],
        },
    )
    j = job(iot, job_id)
    assert j["status"] == "SCHEDULED"
    assert j["scheduledJobRollouts"] == [{"startTime": hhmm(window_start + k * DAY)} for k in range(7)]
    # startTime passes outside a window: still SCHEDULED, nothing released.
    advance_to(clock_server, window_start - 1)
    assert job(iot, job_id)["status"] == "SCHEDULED"
    assert executions(iot, job_id) == []
    # The window opens: the rollout starts at its rate.
    advance(clock_server, 1)
    j = job(iot, job_id)
    assert j["status"] == "IN_PROGRESS" and j["isConcurrent"] is True
    assert len(executions(iot, job_id)) == 1
    _roll_until(clock_server, window_start + 5 * MINUTE - 1)
    in_first = len(executions(iot, job_id))
    assert in_first == 5  # +0, +1, +2, +3, +4 minutes
    # The window closes: SCHEDULED again, no releases until the next one.
    advance(clock_server, 1)
    j = job(iot, job_id)
    assert j["status"] == "SCHEDULED" and j["isConcurrent"] is False
    assert j["jobProcessDetails"].get("processingTargets")
    # Devices can still work on what was released.
    run(device, job_id, thing_names(executions(iot, job_id))[0], "SUCCEEDED")
    advance_to(clock_server, window_start + 2 * 3600)
    assert job(iot, job_id)["status"] == "SCHEDULED"
    advance_to(clock_server, window_start + DAY - 1)
    assert job(iot, job_id)["status"] == "SCHEDULED"
    assert len(executions(iot, job_id)) == in_first
    assert job(iot, job_id)["scheduledJobRollouts"][0] == {"startTime": hhmm(window_start + DAY)}
    # The next window: it resumes (at the rate, no burst of banked credit).
    advance(clock_server, 1)
    assert job(iot, job_id)["status"] == "IN_PROGRESS"
    assert len(executions(iot, job_id)) == in_first + 1
    _roll_until(clock_server, window_start + DAY + 2 * MINUTE)
    j = job(iot, job_id)
    assert len(executions(iot, job_id)) == 8
    assert "processingTargets" not in j["jobProcessDetails"]
    for thing in queued_things(iot, job_id):
        run(device, job_id, thing, "SUCCEEDED")
    assert job(iot, job_id)["status"] == "COMPLETED"


# -- snapshot completion -----------------------------------------------------------------------------


def test_snapshot_completes_only_when_every_target_is_released_and_done(
    clock_server: Server, iot, device, fleet
) -> None:
    things = fleet.things(3)
    job_id = fleet.job(arns(things), jobExecutionsRolloutConfig={"maximumPerMinute": 2})
    advance(clock_server, 0)
    (first,) = queued_things(iot, job_id)
    run(device, job_id, first, "SUCCEEDED")
    j = job(iot, job_id)
    # Every released execution is terminal, but targets remain: not complete.
    assert j["status"] == "IN_PROGRESS" and j["jobProcessDetails"]["processingTargets"]
    advance(clock_server, 30)
    (second,) = queued_things(iot, job_id)
    run(device, job_id, second, "FAILED")
    assert job(iot, job_id)["status"] == "IN_PROGRESS"
    advance(clock_server, 30)
    j = job(iot, job_id)
    assert "processingTargets" not in j["jobProcessDetails"] and j["status"] == "IN_PROGRESS"
    (third,) = queued_things(iot, job_id)
    assert {first, second, third} == set(things)
    run(device, job_id, third, "REJECTED")
    j = job(iot, job_id)
    assert j["status"] == "COMPLETED" and "completedAt" in j
    d = j["jobProcessDetails"]
    assert (d["numberOfSucceededThings"], d["numberOfFailedThings"], d["numberOfRejectedThings"]) == (1, 1, 1)


def test_unstaged_job_releases_everything_at_once(iot, fleet: Fleet) -> None:
    things = fleet.things(5)
    job_id = fleet.job(arns(things))
    j = job(iot, job_id)
    assert j["status"] == "IN_PROGRESS" and j["jobProcessDetails"]["numberOfQueuedThings"] == 5
    assert "processingTargets" not in j["jobProcessDetails"] and j["isConcurrent"] is False
