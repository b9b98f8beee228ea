"""schedulingConfig helpers of fleetjobs.domain.rollout, and fleetjobs.domain.arns.thing_targets."""

from __future__ import annotations

import datetime as dt

import pytest

from fleetjobs.domain.arns import thing_targets
from fleetjobs.domain.errors import InvalidRequest
from fleetjobs.domain.rollout import end_time_of, needs_engine, start_time_of, windows_of

JAN_2030 = dt.datetime(2030, 1, 1, tzinfo=dt.UTC).timestamp()


def sched(**members):
    return {"schedulingConfig": members}


@pytest.mark.parametrize("config", [None, {}, sched(), sched(maintenanceWindows=None), sched(maintenanceWindows=[])])
def test_no_windows(config):
    assert windows_of(config) == []


def test_windows_of():
    windows = windows_of(
        sched(
            maintenanceWindows=[
                {"startTime": "cron(0 2 ? * SUN *)", "durationInMinutes": 60},
                {"startTime": "30 4 * * *", "durationInMinutes": 1440},
            ]
        )
    )
    assert [(w.start.text, w.duration_minutes, w.duration_seconds) for w in windows] == [
        ("cron(0 2 ? * SUN *)", 60, 3600.0),
        ("30 4 * * *", 1440, 86400.0),
    ]
    assert windows[0].start.minutes_of_day == (120,)


@pytest.mark.parametrize(
    ("window", "message"),
    [
        ({"durationInMinutes": 60}, "requires a startTime"),
        ({"startTime": "cron(0 2 ? * SUN *)"}, "requires durationInMinutes"),
        ({"startTime": "cron(0 2 ? * SUN *)", "durationInMinutes": 0}, "must be a positive integer"),
    ],
)
def test_invalid_window(window, message):
    with pytest.raises(InvalidRequest, match=message):
        windows_of(sched(maintenanceWindows=[window]))


@pytest.mark.parametrize(("fn", "member"), [(start_time_of, "startTime"), (end_time_of, "endTime")])
def test_start_and_end_time(fn, member):
    assert fn(None) is None
    assert fn(sched()) is None
    assert fn(sched(**{member: ""})) is None
    assert fn(sched(**{member: "2030-01-01T00:00"})) == JAN_2030
    assert fn(sched(**{member: "2030-01-01T00:30Z"})) == JAN_2030 + 1800
    with pytest.raises(InvalidRequest, match=f"schedulingConfig.{member} '2030-01-01T00:00\\+02:00'"):
        fn(sched(**{member: "2030-01-01T00:00+02:00"}))


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (None, False),
        ({}, False),
        (sched(), False),
        (sched(endBehavior="CANCEL"), False),
        ({"jobExecutionsRolloutConfig": {}}, False),
        ({"jobExecutionsRolloutConfig": {"maximumPerMinute": 10}}, True),
        ({"jobExecutionsRolloutConfig": {"exponentialRate": {"baseRatePerMinute": 5, "incrementFactor": 2}}}, True),
        (sched(startTime="2030-01-01T00:00"), True),
        (sched(endTime="2030-01-01T00:00"), True),
        (sched(maintenanceWindows=[{"startTime": "cron(0 2 ? * SUN *)", "durationInMinutes": 60}]), True),
    ],
)
def test_needs_engine(config, expected):
    assert needs_engine(config) is expected


@pytest.mark.parametrize(
    ("arns", "expected"),
    [
        (None, set()),
        ([], set()),
        (["arn:aws:iot:us-east-1:123456789012:thing/pump-1"], {"pump-1"}),
        (
            [
                "arn:aws:iot:us-east-1:123456789012:thing/a",
                "arn:aws:iot:us-east-1:123456789012:thinggroup/a-group",
                "arn:aws:iot:us-east-1:123456789012:thing/b",
                "arn:aws:iot:us-east-1:123456789012:thing/a",
            ],
            {"a", "b"},
        ),
        (["arn:aws:iot:us-east-1:123456789012:thing/ns:dev:7"], {"ns:dev:7"}),  # thing names may contain ':'
        (["arn:aws:iot:us-east-1:123456789012:thing/"], set()),
        (["arn:aws:iot:us-east-1:123456789012:thinggroup/g"], set()),
    ],
)
def test_thing_targets(arns, expected):
    assert thing_targets(arns) == expected
