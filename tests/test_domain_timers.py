"""Execution timers (fleetjobs.domain.timers) and the device request checks of fleetjobs.domain.execution_state."""

from __future__ import annotations

import math

import pytest

from fleetjobs.domain.errors import InvalidRequest
from fleetjobs.domain.execution_state import (
    TERMINAL,
    check_device_status,
    check_status_details,
    check_step_timeout,
)
from fleetjobs.domain.timers import deadlines_after, earliest, seconds_before_timeout

NOW = 10_000.0


def after(from_status, to_status, *, ipd=None, sd=None, ip_minutes=None, step=None):
    return deadlines_after(
        from_status,
        to_status,
        in_progress_deadline=ipd,
        step_deadline=sd,
        now=NOW,
        in_progress_minutes=ip_minutes,
        step_minutes=step,
    )


# -- deadlines_after --------------------------------------------------------------------------------


def test_start_sets_in_progress_timer_from_now():
    assert after("QUEUED", "IN_PROGRESS", ip_minutes=10) == {"in_progress_deadline": NOW + 600, "timeout_at": NOW + 600}


def test_start_ignores_a_stale_in_progress_deadline():
    assert after("QUEUED", "IN_PROGRESS", ipd=1.0, ip_minutes=10)["in_progress_deadline"] == NOW + 600


def test_start_without_job_timeout_has_no_timer():
    assert after("QUEUED", "IN_PROGRESS", ip_minutes=None) == {"in_progress_deadline": None, "timeout_at": None}


def test_start_with_step_timer_shorter_than_in_progress():
    assert after("QUEUED", "IN_PROGRESS", ip_minutes=10, step=3) == {
        "in_progress_deadline": NOW + 600,
        "step_deadline": NOW + 180,
        "timeout_at": NOW + 180,
    }


def test_step_timer_capped_by_in_progress_deadline():
    assert after("IN_PROGRESS", "IN_PROGRESS", ipd=NOW + 120, step=5) == {
        "step_deadline": NOW + 120,
        "timeout_at": NOW + 120,
    }
    assert after("QUEUED", "IN_PROGRESS", ip_minutes=2, step=5)["step_deadline"] == NOW + 120


def test_step_timer_without_in_progress_timer():
    assert after("IN_PROGRESS", "IN_PROGRESS", step=5) == {"step_deadline": NOW + 300, "timeout_at": NOW + 300}


def test_step_timer_replaces_previous_step_timer():
    assert after("IN_PROGRESS", "IN_PROGRESS", ipd=NOW + 3600, sd=NOW + 60, step=10) == {
        "step_deadline": NOW + 600,
        "timeout_at": NOW + 600,
    }


def test_minus_one_clears_step_timer():
    assert after("IN_PROGRESS", "IN_PROGRESS", ipd=NOW + 900, sd=NOW + 60, step=-1) == {
        "step_deadline": None,
        "timeout_at": NOW + 900,
    }
    assert after("IN_PROGRESS", "IN_PROGRESS", sd=NOW + 60, step=-1) == {"step_deadline": None, "timeout_at": None}


def test_update_without_step_keeps_both_and_recomputes_timeout():
    values = after("IN_PROGRESS", "IN_PROGRESS", ipd=NOW + 900, sd=NOW + 60)
    assert values == {"timeout_at": NOW + 60}
    assert after("IN_PROGRESS", "IN_PROGRESS", ipd=NOW + 900) == {"timeout_at": NOW + 900}


@pytest.mark.parametrize("to_status", sorted(TERMINAL))
@pytest.mark.parametrize("from_status", ["QUEUED", "IN_PROGRESS"])
def test_terminal_status_clears_all_timers(from_status, to_status):
    values = after(from_status, to_status, ipd=NOW + 900, sd=NOW + 60, ip_minutes=10, step=5)
    assert values == {"in_progress_deadline": None, "step_deadline": None, "timeout_at": None}


def test_change_that_touches_no_timer():
    assert after("QUEUED", "QUEUED", ip_minutes=10, step=5) == {}


# -- seconds_before_timeout / earliest --------------------------------------------------------------


@pytest.mark.parametrize(
    ("ipd", "sd", "expected"),
    [
        (NOW + 10.2, None, 11),  # rounds up
        (NOW + 10.0, None, 10),
        (None, NOW + 0.001, 1),
        (NOW + 600, NOW + 30, 30),  # the earlier timer
        (NOW - 5, None, 0),  # never negative
        (NOW, None, 0),
    ],
)
def test_seconds_before_timeout(ipd, sd, expected):
    assert seconds_before_timeout("IN_PROGRESS", ipd, sd, NOW) == expected


@pytest.mark.parametrize("status", ["QUEUED", "SUCCEEDED", "FAILED", "TIMED_OUT", "CANCELED"])
def test_seconds_before_timeout_only_in_progress(status):
    assert seconds_before_timeout(status, NOW + 60, NOW + 30, NOW) is None


def test_seconds_before_timeout_without_timer():
    assert seconds_before_timeout("IN_PROGRESS", None, None, NOW) is None
    assert seconds_before_timeout("IN_PROGRESS", math.inf, None, NOW) is None


@pytest.mark.parametrize(
    ("times", "expected"),
    [((), None), ((None,), None), ((math.inf, None), None), ((5.0, None, math.inf, 3.0), 3.0), ((7.0,), 7.0)],
)
def test_earliest(times, expected):
    assert earliest(*times) == expected


# -- execution_state request checks -----------------------------------------------------------------


def test_status_details_limits():
    assert check_status_details(None) is None
    assert check_status_details({f"k{i}": "x" * 1024 for i in range(10)}) is None
    with pytest.raises(InvalidRequest, match="at most 10 name/value pairs"):
        check_status_details({f"k{i}": "v" for i in range(11)})
    with pytest.raises(InvalidRequest, match="value of 'long' is longer than 1024 characters"):
        check_status_details({"ok": "v", "long": "x" * 1025})


@pytest.mark.parametrize(("minutes", "allow_cancel"), [(None, False), (1, False), (10080, False), (-1, True)])
def test_step_timeout_accepted(minutes, allow_cancel):
    assert check_step_timeout(minutes, allow_cancel=allow_cancel) is None


@pytest.mark.parametrize(
    ("minutes", "allow_cancel", "message"),
    [
        (0, False, r"between 1 and 10080$"),
        (10081, False, r"between 1 and 10080$"),
        (-1, False, r"between 1 and 10080$"),
        (-2, True, r"between 1 and 10080 or -1$"),
        (0, True, r"between 1 and 10080 or -1$"),
    ],
)
def test_step_timeout_refused(minutes, allow_cancel, message):
    with pytest.raises(InvalidRequest, match=message):
        check_step_timeout(minutes, allow_cancel=allow_cancel)


@pytest.mark.parametrize("status", ["IN_PROGRESS", "SUCCEEDED", "FAILED", "REJECTED"])
def test_device_settable_statuses(status):
    assert check_device_status(status) is None


@pytest.mark.parametrize("status", ["QUEUED", "TIMED_OUT", "REMOVED", "CANCELED", "BOGUS"])
def test_device_cannot_set_status(status):
    with pytest.raises(InvalidRequest, match=f"cannot set the status of a job execution to {status}"):
        check_device_status(status)
