"""Cron evaluation and maintenance-window arithmetic, checked against hand-worked calendars.

Every expected date below was read off a printed calendar, not computed by the code under test:
a scheduler that opens a rollout on the wrong day is a silent failure that no server test catches.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from fleetjobs.domain.cron import (
    CronExpression,
    MaintenanceWindow,
    next_window_start,
    open_window_end,
    upcoming_starts,
)
from fleetjobs.domain.errors import InvalidRequest


def ts(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: float = 0) -> float:
    whole = int(second)
    micro = round((second - whole) * 1_000_000)
    return datetime(year, month, day, hour, minute, whole, micro, tzinfo=UTC).timestamp()


def nxt(expression: str, after: float) -> float | None:
    return CronExpression.parse(expression).next_after(after)


def firings(expression: str, after: float, count: int) -> list[float]:
    cron = CronExpression.parse(expression)
    out: list[float] = []
    t = after
    for _ in range(count):
        fired = cron.next_after(t)
        assert fired is not None
        out.append(fired)
        t = fired
    return out


def window(expression: str, minutes: int) -> MaintenanceWindow:
    return MaintenanceWindow(CronExpression.parse(expression), minutes)


# -- basics: strictly after, minute resolution -----------------------------------------------------


def test_weekly_aws_form() -> None:
    # 2025-01-01 is a Wednesday; the first Sunday after it is the 5th.
    assert nxt("cron(0 2 ? * SUN *)", ts(2025, 1, 1)) == ts(2025, 1, 5, 2)


def test_next_after_is_strict() -> None:
    assert nxt("cron(0 2 ? * SUN *)", ts(2025, 1, 5, 2)) == ts(2025, 1, 12, 2)
    assert nxt("cron(0 2 ? * SUN *)", ts(2025, 1, 5, 1, 59, 59.5)) == ts(2025, 1, 5, 2)


def test_minute_resolution_discards_seconds() -> None:
    every_minute = "cron(* * * * ? *)"
    assert nxt(every_minute, ts(2025, 1, 1, 12)) == ts(2025, 1, 1, 12, 1)
    assert nxt(every_minute, ts(2025, 1, 1, 12, 0, 59.9)) == ts(2025, 1, 1, 12, 1)
    assert nxt(every_minute, ts(2025, 12, 31, 23, 59, 30)) == ts(2026, 1, 1, 0, 0)


def test_result_is_a_whole_minute_float() -> None:
    fired = nxt("cron(17 3 * * ? *)", ts(2025, 1, 1, 0, 0, 12.25))
    assert isinstance(fired, float)
    assert fired == ts(2025, 1, 1, 3, 17)
    assert fired % 60 == 0


def test_bare_six_fields_and_case() -> None:
    assert nxt("0 2 ? * sun *", ts(2025, 1, 1)) == ts(2025, 1, 5, 2)
    assert nxt("  CRON(0 2 ? * Sun *)  ", ts(2025, 1, 1)) == ts(2025, 1, 5, 2)


# -- wildcards , - * / -----------------------------------------------------------------------------


def test_list() -> None:
    assert firings("cron(0,30 9 * * ? *)", ts(2025, 1, 1, 9), 3) == [
        ts(2025, 1, 1, 9, 30),
        ts(2025, 1, 2, 9, 0),
        ts(2025, 1, 2, 9, 30),
    ]


def test_range() -> None:
    assert firings("cron(0 8-10 * * ? *)", ts(2025, 1, 1, 9, 30), 3) == [
        ts(2025, 1, 1, 10),
        ts(2025, 1, 2, 8),
        ts(2025, 1, 2, 9),
    ]


def test_star_step() -> None:
    assert nxt("cron(*/15 * * * ? *)", ts(2025, 1, 1, 12, 7)) == ts(2025, 1, 1, 12, 15)
    assert nxt("cron(*/15 * * * ? *)", ts(2025, 1, 1, 12, 45)) == ts(2025, 1, 1, 13, 0)


def test_start_step_runs_to_top_of_range() -> None:
    # 5/10 is 5,15,25,35,45,55.
    assert nxt("cron(5/10 * * * ? *)", ts(2025, 1, 1, 12, 6)) == ts(2025, 1, 1, 12, 15)
    assert nxt("cron(5/10 * * * ? *)", ts(2025, 1, 1, 12, 55)) == ts(2025, 1, 1, 13, 5)


def test_range_step() -> None:
    # 10-30/5 is 10,15,20,25,30.
    assert nxt("cron(10-30/5 * * * ? *)", ts(2025, 1, 1, 12, 11)) == ts(2025, 1, 1, 12, 15)
    assert nxt("cron(10-30/5 * * * ? *)", ts(2025, 1, 1, 12, 30)) == ts(2025, 1, 1, 13, 10)


def test_hour_step_and_list_of_ranges() -> None:
    assert firings("cron(0 0/6 * * ? *)", ts(2025, 1, 1, 1), 4) == [
        ts(2025, 1, 1, 6),
        ts(2025, 1, 1, 12),
        ts(2025, 1, 1, 18),
        ts(2025, 1, 2, 0),
    ]
    assert firings("cron(0 1-2,22-23 * * ? *)", ts(2025, 1, 1, 3), 3) == [
        ts(2025, 1, 1, 22),
        ts(2025, 1, 1, 23),
        ts(2025, 1, 2, 1),
    ]


def test_month_names_and_numbers() -> None:
    assert nxt("cron(0 0 1 JAN,jul ? *)", ts(2025, 1, 1)) == ts(2025, 7, 1)
    assert nxt("cron(0 0 1 MAR-MAY ? *)", ts(2025, 4, 1)) == ts(2025, 5, 1)
    assert nxt("cron(0 0 1 MAR-MAY ? *)", ts(2025, 5, 1)) == ts(2026, 3, 1)
    assert nxt("cron(0 0 1 12 ? *)", ts(2025, 1, 1)) == ts(2025, 12, 1)


def test_day_of_month_missing_from_short_months_is_skipped() -> None:
    # April has 30 days, so the next 31st after 1 April 2025 is 31 May.
    assert nxt("cron(0 0 31 * ? *)", ts(2025, 4, 1)) == ts(2025, 5, 31)


# -- day-of-week numbering -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("day_of_week", "expected_day"),
    [
        ("1", 5),  # AWS: 1 = Sunday
        ("2", 6),  # Monday
        ("7", 4),  # Saturday
        ("SUN", 5),
        ("sat", 4),
        ("MON-FRI", 2),  # Thursday 2 January is the first weekday after Wednesday midnight
    ],
)
def test_aws_day_of_week_numbering(day_of_week: str, expected_day: int) -> None:
    assert nxt(f"cron(0 0 ? * {day_of_week} *)", ts(2025, 1, 1)) == ts(2025, 1, expected_day)


def test_aws_weekday_range_skips_weekend() -> None:
    # Friday 3 January 2025 09:00 -> Monday 6 January.
    assert nxt("cron(0 9 ? * MON-FRI *)", ts(2025, 1, 3, 9)) == ts(2025, 1, 6, 9)


def test_aws_day_of_week_step() -> None:
    # 1/2 is 1,3,5,7: Sunday, Tuesday, Thursday, Saturday.
    assert firings("cron(0 0 ? * 1/2 *)", ts(2025, 1, 1), 4) == [
        ts(2025, 1, 2),
        ts(2025, 1, 4),
        ts(2025, 1, 5),
        ts(2025, 1, 7),
    ]


@pytest.mark.parametrize(
    ("day_of_week", "expected_day"),
    [
        ("0", 5),  # Unix: 0 = Sunday
        ("7", 5),  # and 7 = Sunday too
        ("1", 6),  # Monday
        ("6", 4),  # Saturday
        ("SUN", 5),
        ("sat", 4),
    ],
)
def test_unix_day_of_week_numbering(day_of_week: str, expected_day: int) -> None:
    assert nxt(f"0 0 * * {day_of_week}", ts(2025, 1, 1)) == ts(2025, 1, expected_day)


def test_unix_day_of_week_range_through_seven() -> None:
    # 5-7 is Friday, Saturday, Sunday.
    assert firings("0 0 * * 5-7", ts(2025, 1, 1), 4) == [
        ts(2025, 1, 3),
        ts(2025, 1, 4),
        ts(2025, 1, 5),
        ts(2025, 1, 10),
    ]


def test_unix_five_fields_has_no_year_limit() -> None:
    assert nxt("59 23 31 12 *", ts(2199, 12, 31, 23, 59)) == ts(2200, 12, 31, 23, 59)


# -- the ? rules and how the two day fields combine ------------------------------------------------


def test_question_mark_in_day_of_week_leaves_day_of_month_alone() -> None:
    assert firings("cron(0 0 13 * ? *)", ts(2025, 1, 1), 2) == [ts(2025, 1, 13), ts(2025, 2, 13)]


def test_question_mark_in_day_of_month_leaves_day_of_week_alone() -> None:
    assert firings("cron(0 0 ? * FRI *)", ts(2025, 1, 1), 2) == [ts(2025, 1, 3), ts(2025, 1, 10)]


def test_both_day_fields_restricted_means_either() -> None:
    # Fridays of January 2025 are 3, 10, 17; the 13th is a Monday.
    expected = [ts(2025, 1, 3), ts(2025, 1, 10), ts(2025, 1, 13), ts(2025, 1, 17)]
    assert firings("cron(0 0 13 * 6 *)", ts(2025, 1, 1), 4) == expected
    assert firings("0 0 13 * 5", ts(2025, 1, 1), 4) == expected


def test_star_day_of_month_lets_day_of_week_restrict() -> None:
    assert firings("cron(0 0 * * 6 *)", ts(2025, 1, 1), 3) == [ts(2025, 1, 3), ts(2025, 1, 10), ts(2025, 1, 17)]
    assert firings("0 0 * * 5", ts(2025, 1, 1), 2) == [ts(2025, 1, 3), ts(2025, 1, 10)]


def test_star_day_of_week_lets_day_of_month_restrict() -> None:
    assert firings("cron(0 0 13 * * *)", ts(2025, 1, 1), 2) == [ts(2025, 1, 13), ts(2025, 2, 13)]
    assert firings("0 0 13 * *", ts(2025, 1, 1), 2) == [ts(2025, 1, 13), ts(2025, 2, 13)]


def test_both_day_fields_star_means_every_day() -> None:
    assert firings("cron(0 0 * * * *)", ts(2025, 1, 31), 2) == [ts(2025, 2, 1), ts(2025, 2, 2)]


def test_question_mark_accepted_in_five_field_form() -> None:
    assert nxt("0 0 ? * 1", ts(2025, 1, 1)) == ts(2025, 1, 6)


def test_both_day_fields_question_mark_refused() -> None:
    with pytest.raises(InvalidRequest, match="cannot both be '\\?'"):
        CronExpression.parse("cron(0 0 ? * ? *)")


# -- L, LW, W --------------------------------------------------------------------------------------


def test_last_day_of_month() -> None:
    assert nxt("cron(0 0 L * ? *)", ts(2025, 2, 1)) == ts(2025, 2, 28)
    assert nxt("cron(0 0 L * ? *)", ts(2024, 2, 1)) == ts(2024, 2, 29)
    assert nxt("cron(0 0 L * ? *)", ts(2025, 2, 28)) == ts(2025, 3, 31)
    assert nxt("cron(0 0 L * ? *)", ts(2025, 4, 1)) == ts(2025, 4, 30)


def test_last_weekday_of_month() -> None:
    # 30 November 2025 is a Sunday -> Friday 28th.
    assert nxt("cron(0 0 LW * ? *)", ts(2025, 11, 1)) == ts(2025, 11, 28)
    # 31 May 2025 is a Saturday -> Friday 30th.
    assert nxt("cron(0 0 LW * ? *)", ts(2025, 5, 1)) == ts(2025, 5, 30)
    # 31 March 2025 is a Monday -> itself.
    assert nxt("cron(0 0 lw * ? *)", ts(2025, 3, 1)) == ts(2025, 3, 31)


def test_nearest_weekday_saturday_first_moves_forward_to_monday() -> None:
    # 1 March 2025 is a Saturday; Friday 28 February would leave the month, so Monday 3rd.
    assert nxt("cron(0 0 1W * ? *)", ts(2025, 2, 4)) == ts(2025, 3, 3)


def test_nearest_weekday_sunday_last_moves_back_to_friday() -> None:
    # 31 August 2025 is a Sunday; Monday 1 September would leave the month, so Friday 29th.
    assert nxt("cron(0 0 31W * ? *)", ts(2025, 8, 1)) == ts(2025, 8, 29)


def test_nearest_weekday_mid_month() -> None:
    # 15 March 2025 is a Saturday -> Friday 14th; 15 June 2025 is a Sunday -> Monday 16th.
    assert nxt("cron(0 0 15W * ? *)", ts(2025, 3, 1)) == ts(2025, 3, 14)
    assert nxt("cron(0 0 15W * ? *)", ts(2025, 6, 1)) == ts(2025, 6, 16)
    # 15 January 2025 is a Wednesday -> itself.
    assert nxt("cron(0 0 15W * ? *)", ts(2025, 1, 1)) == ts(2025, 1, 15)


def test_nearest_weekday_sunday_first_and_saturday_last() -> None:
    # 1 June 2025 is a Sunday -> Monday 2nd; 30 August 2025 is a Saturday -> Friday 29th.
    assert nxt("cron(0 0 1W * ? *)", ts(2025, 5, 2)) == ts(2025, 6, 2)
    assert nxt("cron(0 0 30W * ? *)", ts(2025, 8, 1)) == ts(2025, 8, 29)


def test_nearest_weekday_of_missing_day_skips_the_month() -> None:
    # No 31st in September; 31 October 2025 is a Friday.
    assert nxt("cron(0 0 31W * ? *)", ts(2025, 9, 1)) == ts(2025, 10, 31)


def test_nearest_weekday_can_land_before_the_start_point() -> None:
    # 15W in March 2025 is Friday 14th, so from the 14th 12:00 the next one is in April (Tuesday 15th).
    assert nxt("cron(0 0 15W * ? *)", ts(2025, 3, 14, 12)) == ts(2025, 4, 15)


# -- # and dL in day-of-week -----------------------------------------------------------------------


def test_nth_weekday() -> None:
    # Fridays of January 2025: 3, 10, 17 -> the third is the 17th.
    assert nxt("cron(0 0 ? * 6#3 *)", ts(2025, 1, 1)) == ts(2025, 1, 17)
    # Mondays of January 2025: 6, 13 -> the second is the 13th.
    assert nxt("cron(0 0 ? * MON#2 *)", ts(2025, 1, 1)) == ts(2025, 1, 13)
    # Unix numbering: 5 = Friday.
    assert nxt("0 0 * * 5#3", ts(2025, 1, 1)) == ts(2025, 1, 17)


def test_fifth_weekday_skips_months_without_one() -> None:
    # October 2025 has Fridays 3..31; November (7..28) and December (5..26) have only four;
    # January 2026 has 2..30.
    assert nxt("cron(0 0 ? * 6#5 *)", ts(2025, 10, 1)) == ts(2025, 10, 31)
    assert nxt("cron(0 0 ? * 6#5 *)", ts(2025, 11, 1)) == ts(2026, 1, 30)


def test_last_given_weekday() -> None:
    # Thursdays of January 2025: 2..30; of October 2025: 2..30; of November 2025: 6..27.
    assert nxt("cron(0 0 ? * 5L *)", ts(2025, 1, 1)) == ts(2025, 1, 30)
    assert nxt("cron(0 0 ? * 5L *)", ts(2025, 10, 30)) == ts(2025, 11, 27)
    assert nxt("cron(0 0 ? * THUL *)", ts(2025, 1, 1)) == ts(2025, 1, 30)


def test_bare_last_in_day_of_week_is_saturday() -> None:
    assert nxt("cron(0 0 ? * L *)", ts(2025, 1, 1)) == ts(2025, 1, 4)


# -- years and the search horizon ------------------------------------------------------------------


def test_year_field() -> None:
    assert nxt("cron(0 0 1 1 ? 2027)", ts(2025, 1, 1)) == ts(2027, 1, 1)
    assert nxt("cron(0 0 LW * ? 2027-2030)", ts(2025, 1, 1)) == ts(2027, 1, 29)  # 31 Jan 2027 is a Sunday


def test_year_in_the_past_never_fires() -> None:
    assert nxt("cron(0 0 1 1 ? 2020)", ts(2025, 1, 1)) is None
    assert nxt("cron(0 0 * * ? 2024)", ts(2024, 12, 31, 0)) is None


def test_last_possible_fire_time() -> None:
    assert nxt("CRON(59 23 31 12 ? 2199)", ts(2199, 12, 31, 23, 58)) == ts(2199, 12, 31, 23, 59)
    assert nxt("CRON(59 23 31 12 ? 2199)", ts(2199, 12, 31, 23, 59)) is None
    assert nxt("cron(* * * * ? *)", ts(2199, 12, 31, 23, 59)) is None


def test_far_future_year_is_beyond_the_horizon() -> None:
    assert nxt("cron(0 0 1 1 ? 2040)", ts(2025, 1, 1)) is None


def test_impossible_date_never_fires() -> None:
    assert nxt("cron(0 0 30 2 ? *)", ts(2025, 1, 1)) is None


def test_leap_day() -> None:
    assert nxt("cron(0 0 29 2 ? *)", ts(2025, 1, 1)) == ts(2028, 2, 29)
    assert nxt("cron(0 0 29 2 ? *)", ts(2024, 2, 29)) == ts(2028, 2, 29)
    assert nxt("cron(30 12 29 FEB ? *)", ts(2024, 2, 29, 12)) == ts(2024, 2, 29, 12, 30)
    # 2100 is not a leap year: eight years from 2096 to 2104.
    assert nxt("cron(0 0 29 2 ? *)", ts(2096, 3, 1)) == ts(2104, 2, 29)


def test_rare_expressions_are_fast() -> None:
    started = time.perf_counter()
    for _ in range(20):
        assert nxt("cron(0 0 29 2 ? *)", ts(2025, 3, 1)) == ts(2028, 2, 29)
        assert nxt("cron(0 0 ? * 6#5 *)", ts(2025, 11, 1)) == ts(2026, 1, 30)
        assert nxt("cron(0 0 31 2 ? *)", ts(2025, 3, 1)) is None
    assert (time.perf_counter() - started) / 20 < 0.02


# -- parsing ---------------------------------------------------------------------------------------


def test_parse_is_immutable_and_comparable() -> None:
    cron = CronExpression.parse("cron(0 2 ? * SUN *)")
    with pytest.raises(AttributeError):
        cron.text = "cron(0 3 ? * SUN *)"  # type: ignore[misc]
    assert cron == CronExpression.parse("cron(0 2 ? * SUN *)")
    assert hash(cron) == hash(CronExpression.parse("cron(0 2 ? * SUN *)"))


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        (None, "Maintenance window startTime 'None' is not a cron expression."),
        (
            "cron(0 0 * * ?)",
            "Maintenance window startTime 'cron(0 0 * * ?)' must have six fields: "
            "cron(minutes hours day-of-month month day-of-week year).",
        ),
        (
            "0 0 * *",
            "Maintenance window startTime '0 0 * *' must be a cron expression with 5 or 6 fields, "
            "e.g. cron(0 2 ? * SUN *).",
        ),
        ("cron(0 24 ? * MON *)", "Maintenance window startTime 'cron(0 24 ? * MON *)': invalid hours field '24'."),
        ("cron(0 0 ? * 0 *)", "Maintenance window startTime 'cron(0 0 ? * 0 *)': invalid day-of-week field '0'."),
        ("0 0 * * 8", "Maintenance window startTime '0 0 * * 8': invalid day-of-week field '8'."),
        (
            "cron(0 0 32W * ? *)",
            "Maintenance window startTime 'cron(0 0 32W * ? *)': invalid day-of-month field '32W'.",
        ),
        (
            "cron(0 0 ? * MON#6 *)",
            "Maintenance window startTime 'cron(0 0 ? * MON#6 *)': invalid day-of-week field 'MON#6'.",
        ),
        ("cron(? 0 ? * MON *)", "Maintenance window startTime 'cron(? 0 ? * MON *)': invalid minutes field '?'."),
        ("cron(0 0 ? * MON 1969)", "Maintenance window startTime 'cron(0 0 ? * MON 1969)': invalid year field '1969'."),
        (
            "cron(10-5 0 ? * MON *)",
            "Maintenance window startTime 'cron(10-5 0 ? * MON *)': invalid minutes field '10-5'.",
        ),
        ("cron(0/0 0 ? * MON *)", "Maintenance window startTime 'cron(0/0 0 ? * MON *)': invalid minutes field '0/0'."),
        ("cron(² 0 ? * MON *)", "Maintenance window startTime 'cron(² 0 ? * MON *)': invalid minutes field '²'."),
        (
            "cron(0 0 ? * ? *)",
            "Maintenance window startTime 'cron(0 0 ? * ? *)': day-of-month and day-of-week cannot both be '?'.",
        ),
    ],
)
def test_parse_errors(expression: str, message: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        CronExpression.parse(expression)
    assert caught.value.message == message


# -- maintenance windows ---------------------------------------------------------------------------

DAILY_2AM = "cron(0 2 * * ? *)"
DAILY_230AM = "cron(30 2 * * ? *)"


def test_from_config() -> None:
    built = MaintenanceWindow.from_config({"startTime": "cron(0 2 ? * SUN *)", "durationInMinutes": 60})
    assert built == MaintenanceWindow(CronExpression.parse("cron(0 2 ? * SUN *)"), 60)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"durationInMinutes": 60}, "requires a startTime"),
        ({"startTime": DAILY_2AM}, "requires durationInMinutes"),
        ({"startTime": DAILY_2AM, "durationInMinutes": 0}, "positive integer"),
        ({"startTime": DAILY_2AM, "durationInMinutes": "60"}, "positive integer"),
        ({"startTime": DAILY_2AM, "durationInMinutes": True}, "positive integer"),
        ({"startTime": "every sunday", "durationInMinutes": 60}, "must be a cron expression"),
    ],
)
def test_from_config_refuses(config: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        MaintenanceWindow.from_config(config)


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (ts(2025, 1, 1, 1, 59, 59), None),
        (ts(2025, 1, 1, 2, 0), ts(2025, 1, 1, 3, 0)),  # start is inclusive
        (ts(2025, 1, 1, 2, 30), ts(2025, 1, 1, 3, 0)),
        (ts(2025, 1, 1, 2, 59, 59.999), ts(2025, 1, 1, 3, 0)),
        (ts(2025, 1, 1, 3, 0), None),  # end is exclusive
        (ts(2025, 1, 1, 12, 0), None),
    ],
)
def test_open_window_end_boundaries(now: float, expected: float | None) -> None:
    assert open_window_end([window(DAILY_2AM, 60)], now) == expected


def test_open_window_end_overlapping_windows_takes_latest_end() -> None:
    windows = [window(DAILY_2AM, 60), window(DAILY_230AM, 60)]
    assert open_window_end(windows, ts(2025, 1, 1, 2, 15)) == ts(2025, 1, 1, 3, 0)
    assert open_window_end(windows, ts(2025, 1, 1, 2, 45)) == ts(2025, 1, 1, 3, 30)
    assert open_window_end(windows, ts(2025, 1, 1, 3, 0)) == ts(2025, 1, 1, 3, 30)
    assert open_window_end(windows, ts(2025, 1, 1, 3, 30)) is None


def test_open_window_end_overlapping_occurrences_of_one_window() -> None:
    # Hourly, 90 minutes long: at 02:15 both 01:00-02:30 and 02:00-03:30 are open.
    assert open_window_end([window("cron(0 * * * ? *)", 90)], ts(2025, 1, 1, 2, 15)) == ts(2025, 1, 1, 3, 30)


def test_open_window_spanning_midnight_and_year_end() -> None:
    # Wednesday 31 December 2025 23:00 for two hours.
    late = window("cron(0 23 ? * WED *)", 120)
    assert open_window_end([late], ts(2026, 1, 1, 0, 30)) == ts(2026, 1, 1, 1, 0)
    assert open_window_end([late], ts(2026, 1, 1, 1, 0)) is None


def test_open_window_end_with_no_windows() -> None:
    assert open_window_end([], ts(2025, 1, 1)) is None


def test_next_window_start() -> None:
    windows = [window(DAILY_2AM, 60), window(DAILY_230AM, 60)]
    assert next_window_start(windows, ts(2025, 1, 1, 0)) == ts(2025, 1, 1, 2, 0)
    assert next_window_start(windows, ts(2025, 1, 1, 2, 0)) == ts(2025, 1, 1, 2, 30)  # strictly after
    assert next_window_start(windows, ts(2025, 1, 1, 2, 30)) == ts(2025, 1, 2, 2, 0)
    assert next_window_start([], ts(2025, 1, 1)) is None


def test_next_window_start_ignores_windows_that_never_fire_again() -> None:
    expired = window("cron(0 0 1 1 ? 2020)", 60)
    assert next_window_start([expired], ts(2025, 1, 1)) is None
    assert next_window_start([expired, window(DAILY_2AM, 60)], ts(2025, 1, 1)) == ts(2025, 1, 1, 2)


def test_upcoming_starts_interleaves_windows_in_order() -> None:
    windows = [window(DAILY_230AM, 30), window(DAILY_2AM, 60)]
    assert upcoming_starts(windows, ts(2025, 1, 1), 4) == [
        (ts(2025, 1, 1, 2, 0), ts(2025, 1, 1, 3, 0)),
        (ts(2025, 1, 1, 2, 30), ts(2025, 1, 1, 3, 0)),
        (ts(2025, 1, 2, 2, 0), ts(2025, 1, 2, 3, 0)),
        (ts(2025, 1, 2, 2, 30), ts(2025, 1, 2, 3, 0)),
    ]


def test_upcoming_starts_defaults_to_seven_and_is_strictly_after_now() -> None:
    starts = upcoming_starts([window("cron(0 2 ? * SUN *)", 60)], ts(2025, 1, 5, 2))
    assert [start for start, _ in starts] == [
        ts(2025, 1, 12, 2),
        ts(2025, 1, 19, 2),
        ts(2025, 1, 26, 2),
        ts(2025, 2, 2, 2),
        ts(2025, 2, 9, 2),
        ts(2025, 2, 16, 2),
        ts(2025, 2, 23, 2),
    ]
    assert all(end - start == 3600 for start, end in starts)


def test_upcoming_starts_n_and_exhaustion() -> None:
    daily = window(DAILY_2AM, 60)
    assert upcoming_starts([daily], ts(2025, 1, 1), 0) == []
    assert len(upcoming_starts([daily], ts(2025, 1, 1), 3)) == 3
    assert upcoming_starts([], ts(2025, 1, 1)) == []
    # Only two occurrences remain before the year field runs out.
    ending = window("cron(0 0 30-31 12 ? 2199)", 60)
    assert upcoming_starts([ending], ts(2199, 12, 1), 7) == [
        (ts(2199, 12, 30), ts(2199, 12, 30, 1)),
        (ts(2199, 12, 31), ts(2199, 12, 31, 1)),
    ]


def test_upcoming_starts_lists_duplicate_windows_once() -> None:
    windows = [window(DAILY_2AM, 60), window(DAILY_2AM, 60)]
    assert upcoming_starts(windows, ts(2025, 1, 1), 2) == [
        (ts(2025, 1, 1, 2), ts(2025, 1, 1, 3)),
        (ts(2025, 1, 2, 2), ts(2025, 1, 2, 3)),
    ]
