"""Cron expressions and maintenance windows for job rollouts (JOBS_API.md §9 Q11).

AWS IoT Jobs takes maintenance-window start times as EventBridge/Quartz cron expressions
(``cron(min hour day-of-month month day-of-week year)``) but never says which dialect it really
implements, so we also accept the same six fields bare and classic five-field Unix cron.  One
grammar lives here so that what CreateJob accepts is exactly what the scheduler can evaluate.

Everything is pure: times are float epoch seconds in UTC, passed in by the caller, so that
scheduling decisions can be tested at exact boundaries without a clock or a server.
"""

from __future__ import annotations

import calendar
import datetime as dt
import heapq
import math
import re
from bisect import bisect_left
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fleetjobs.domain.errors import InvalidRequest

__all__ = ["CronExpression", "MaintenanceWindow", "next_window_start", "open_window_end", "upcoming_starts"]

# How far ahead next_after looks, in whole calendar months.  Eight years rather than five so that
# a leap-day expression always finds its next 29 February, even across the non-leap year 2100
# (2096 -> 2104); anything rarer than that is, for a maintenance window, as good as never.
_HORIZON_MONTHS = 8 * 12
_EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()
_MAX_ORDINAL = dt.date.max.toordinal()
_SATURDAY = 6  # day-of-week indexes below count from Sunday = 0

_MONTHS = {m: i + 1 for i, m in enumerate("JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC".split())}
_AWS_DAYS = {d: i + 1 for i, d in enumerate("SUN MON TUE WED THU FRI SAT".split())}
_UNIX_DAYS = {d: i for i, d in enumerate("SUN MON TUE WED THU FRI SAT".split())}
_WRAPPED = re.compile(r"cron\((.*)\)", re.IGNORECASE | re.DOTALL)
_NEAREST_WEEKDAY = re.compile(r"\d{1,2}W")
_NTH_WEEKDAY = re.compile(r"(\w+)#([1-5])")
_LAST_WEEKDAY = re.compile(r"(\w+)L")


class _Field:
    """Range and vocabulary of one position; ``special`` marks the day fields, the only ones
    where ``?``, ``L``, ``W`` and ``#`` mean anything."""

    __slots__ = ("hi", "lo", "name", "names", "special")

    def __init__(self, name: str, lo: int, hi: int, names: Mapping[str, int] | None = None, special: str = "") -> None:
        self.name = name
        self.lo = lo
        self.hi = hi
        self.names = names or {}
        self.special = special


_AWS_FIELDS = (
    _Field("minutes", 0, 59),
    _Field("hours", 0, 23),
    _Field("day-of-month", 1, 31, special="dom"),
    _Field("month", 1, 12, _MONTHS),
    _Field("day-of-week", 1, 7, _AWS_DAYS, special="dow"),
    _Field("year", 1970, 2199),
)
_UNIX_FIELDS = (
    _Field("minutes", 0, 59),
    _Field("hours", 0, 23),
    _Field("day-of-month", 1, 31, special="dom"),
    _Field("month", 1, 12, _MONTHS),
    _Field("day-of-week", 0, 7, _UNIX_DAYS, special="dow"),
)


@dataclass(frozen=True)
class _DayRule:
    """One day field, reduced to what it selects in a given month.

    ``kind`` is ``set`` (``values`` are days of month, or Sunday-based weekdays for
    ``weekdays``), ``last`` (L), ``last-weekday`` (LW), ``nearest-weekday`` (nW, ``n`` = the
    day), ``nth`` (d#n, ``values`` = {d}) or ``last-of`` (dL, ``values`` = {d}).  ``restricts``
    is False for ``*`` and ``?``: Unix cron ORs the two day fields only when both restrict.
    """

    kind: str
    values: frozenset[int] = frozenset()
    n: int = 0
    restricts: bool = True

    def days(self, first_weekday: int, last_day: int) -> set[int]:
        """Days of a month (whose 1st falls on Sunday-based ``first_weekday``) this rule selects."""
        if self.kind == "set":
            return {d for d in self.values if d <= last_day}
        if self.kind == "weekdays":
            return {d for d in range(1, last_day + 1) if (first_weekday + d - 1) % 7 in self.values}
        if self.kind == "last":
            return {last_day}
        if self.kind == "last-weekday":
            return {_nearest_weekday(last_day, first_weekday, last_day)}
        if self.kind == "nearest-weekday":
            return {_nearest_weekday(self.n, first_weekday, last_day)} if self.n <= last_day else set()
        (weekday,) = self.values
        first = 1 + (weekday - first_weekday) % 7
        if self.kind == "nth":
            day = first + 7 * (self.n - 1)
            return {day} if day <= last_day else set()
        # last-of: the final occurrence of that weekday.
        return {first + 7 * ((last_day - first) // 7)}


def _nearest_weekday(day: int, first_weekday: int, last_day: int) -> int:
    """Quartz ``W``: move a weekend day to the closest Monday-Friday without leaving the month,
    which is why a Saturday 1st goes forward to Monday 3rd and a Sunday 31st back to Friday 29th."""
    weekday = (first_weekday + day - 1) % 7
    if weekday == _SATURDAY:
        return day + 2 if day == 1 else day - 1
    if weekday == 0:
        return day - 2 if day == last_day else day + 1
    return day


@dataclass(frozen=True)
class CronExpression:
    """A parsed maintenance-window start time; parse once, then ask for fire times cheaply.

    Fire times have minute resolution.  ``years`` is None for five-field Unix cron, which has
    no year field.
    """

    text: str
    minutes_of_day: tuple[int, ...]
    months: frozenset[int]
    years: frozenset[int] | None
    day_of_month: _DayRule
    day_of_week: _DayRule

    @classmethod
    def parse(cls, text: str) -> CronExpression:
        """Parse ``text`` or raise :class:`InvalidRequest` naming the first offending field."""
        if not isinstance(text, str):
            raise InvalidRequest(f"Maintenance window startTime '{text}' is not a cron expression.")
        stripped = text.strip()
        wrapped = _WRAPPED.fullmatch(stripped)
        fields = (wrapped.group(1) if wrapped else stripped).split()
        if wrapped and len(fields) != 6:
            raise InvalidRequest(
                f"Maintenance window startTime '{text}' must have six fields: "
                "cron(minutes hours day-of-month month day-of-week year)."
            )
        if len(fields) not in (5, 6):
            raise InvalidRequest(
                f"Maintenance window startTime '{text}' must be a cron expression with 5 or 6 fields, "
                "e.g. cron(0 2 ? * SUN *)."
            )
        aws_style = len(fields) == 6
        specs = _AWS_FIELDS if aws_style else _UNIX_FIELDS
        parsed: list[Any] = []
        for value, spec in zip(fields, specs, strict=True):
            if spec.special == "dom":
                result: Any = _parse_day_of_month(value, spec)
            elif spec.special == "dow":
                result = _parse_day_of_week(value, spec, aws_style)
            else:
                result = _parse_list(value, spec)
            if result is None:
                raise InvalidRequest(f"Maintenance window startTime '{text}': invalid {spec.name} field '{value}'.")
            parsed.append(result)
        if fields[2] == "?" and fields[4] == "?":
            raise InvalidRequest(
                f"Maintenance window startTime '{text}': day-of-month and day-of-week cannot both be '?'."
            )
        minutes, hours, dom, months, dow = parsed[:5]
        return cls(
            text=text,
            minutes_of_day=tuple(sorted(h * 60 + m for h in hours for m in minutes)),
            months=frozenset(months),
            years=frozenset(parsed[5]) if aws_style else None,
            day_of_month=dom,
            day_of_week=dow,
        )

    def next_after(self, t: float) -> float | None:
        """First fire time strictly after ``t``; None if there is none within eight years."""
        return next(self._fire_times(t), None)

    def _days(self, year: int, month: int) -> list[int]:
        first_weekday, last_day = calendar.monthrange(year, month)
        first_weekday = (first_weekday + 1) % 7  # calendar counts from Monday = 0
        dom, dow = self.day_of_month, self.day_of_week
        if dom.restricts and dow.restricts:
            days = dom.days(first_weekday, last_day) | dow.days(first_weekday, last_day)
        elif dom.restricts:
            days = dom.days(first_weekday, last_day)
        elif dow.restricts:
            days = dow.days(first_weekday, last_day)
        else:
            days = set(range(1, last_day + 1))
        return sorted(days)

    def _fire_times(self, t: float) -> Iterator[float]:
        """Fire times strictly after ``t`` in order, walking months and days rather than minutes
        so that rare expressions (29 February, a fifth Friday) cost at most a hundred month steps."""
        if math.isnan(t) or t == math.inf or not self.minutes_of_day:
            return
        first_minute = math.floor(t / 60) + 1 if t != -math.inf else (1 - _EPOCH_ORDINAL) * 1440
        ordinal = _EPOCH_ORDINAL + first_minute // 1440
        if ordinal < 1:
            first_minute, ordinal = (1 - _EPOCH_ORDINAL) * 1440, 1
        if ordinal > _MAX_ORDINAL:
            return
        start_day = dt.date.fromordinal(ordinal)
        start_minute_of_day = first_minute % 1440
        last_year = max(self.years) if self.years is not None else dt.MAXYEAR
        year, month = start_day.year, start_day.month
        for _ in range(_HORIZON_MONTHS + 1):
            if year > last_year:
                return
            if (self.years is None or year in self.years) and month in self.months:
                for day in self._days(year, month):
                    date = dt.date(year, month, day)
                    if date < start_day:
                        continue
                    lo = bisect_left(self.minutes_of_day, start_minute_of_day) if date == start_day else 0
                    base = (date.toordinal() - _EPOCH_ORDINAL) * 86400
                    for minute_of_day in self.minutes_of_day[lo:]:
                        yield float(base + minute_of_day * 60)
            month += 1
            if month > 12:
                year, month = year + 1, 1


def _value(text: str, spec: _Field) -> int | None:
    # isdecimal rather than isdigit: int() refuses superscripts and the like that isdigit admits.
    if text.isdecimal():
        n = int(text)
    elif text.upper() in spec.names:
        n = spec.names[text.upper()]
    else:
        return None
    return n if spec.lo <= n <= spec.hi else None


def _parse_list(value: str, spec: _Field) -> set[int] | None:
    """Field values selected by a ``,``-separated list of ``*``, ``a``, ``a-b`` each with an
    optional ``/step`` (``a/step`` runs to the top of the range, as in Quartz)."""
    selected: set[int] = set()
    for item in value.split(","):
        base, slash, step_text = item.partition("/")
        if slash and not (step_text.isdecimal() and int(step_text) >= 1):
            return None
        step = int(step_text) if slash else 1
        if base == "*":
            lo, hi = spec.lo, spec.hi
        else:
            lo_text, dash, hi_text = base.partition("-")
            lo_value = _value(lo_text, spec)
            if lo_value is None:
                return None
            lo = lo_value
            if dash:
                hi_value = _value(hi_text, spec)
                if hi_value is None or hi_value < lo:
                    return None
                hi = hi_value
            else:
                hi = spec.hi if slash else lo
        selected.update(range(lo, hi + 1, step))
    return selected


def _parse_day_of_month(value: str, spec: _Field) -> _DayRule | None:
    if value == "?":
        return _DayRule("set", restricts=False)
    upper = value.upper()
    if upper == "L":
        return _DayRule("last")
    if upper == "LW":
        return _DayRule("last-weekday")
    if _NEAREST_WEEKDAY.fullmatch(upper):
        day = _value(upper[:-1], spec)
        return None if day is None else _DayRule("nearest-weekday", n=day)
    days = _parse_list(value, spec)
    return None if days is None else _DayRule("set", frozenset(days), restricts=value != "*")


def _parse_day_of_week(value: str, spec: _Field, aws_style: bool) -> _DayRule | None:
    def weekday(n: int) -> int:
        # AWS counts 1 = Sunday .. 7 = Saturday; Unix 0 = Sunday .. 6 = Saturday, with 7 = Sunday too.
        return n - 1 if aws_style else n % 7

    if value == "?":
        return _DayRule("weekdays", restricts=False)
    upper = value.upper()
    if upper == "L":
        # Quartz: a bare L in day-of-week is the last day of the week, Saturday.
        return _DayRule("weekdays", frozenset({_SATURDAY}))
    nth = _NTH_WEEKDAY.fullmatch(upper)
    if nth:
        day = _value(nth.group(1), spec)
        return None if day is None else _DayRule("nth", frozenset({weekday(day)}), n=int(nth.group(2)))
    last = _LAST_WEEKDAY.fullmatch(upper)
    if last:
        day = _value(last.group(1), spec)
        if day is not None:
            return _DayRule("last-of", frozenset({weekday(day)}))
    days = _parse_list(value, spec)
    if days is None:
        return None
    return _DayRule("weekdays", frozenset(weekday(d) for d in days), restricts=value != "*")


@dataclass(frozen=True)
class MaintenanceWindow:
    """A recurring span during which a scheduled job may roll out to devices."""

    start: CronExpression
    duration_minutes: int

    @classmethod
    def from_config(cls, d: Mapping[str, Any]) -> MaintenanceWindow:
        """Build from a ``schedulingConfig.maintenanceWindows`` entry, as stored on the job."""
        start_time = d.get("startTime")
        if not start_time:
            raise InvalidRequest("A maintenance window requires a startTime (cron expression).")
        duration = d.get("durationInMinutes")
        if duration is None:
            raise InvalidRequest("A maintenance window requires durationInMinutes.")
        if isinstance(duration, bool) or not isinstance(duration, int) or duration < 1:
            raise InvalidRequest(f"Maintenance window durationInMinutes '{duration}' must be a positive integer.")
        return cls(CronExpression.parse(start_time), duration)

    @property
    def duration_seconds(self) -> float:
        return self.duration_minutes * 60.0


def open_window_end(windows: Sequence[MaintenanceWindow], now: float) -> float | None:
    """If ``now`` is inside any window (start <= now < start + duration), the latest end among the
    open windows; else None.  The latest, because a rollout may continue as long as any window
    covering ``now`` (or a later occurrence of the same window that has already begun) lasts."""
    latest: float | None = None
    for window in windows:
        length = window.duration_seconds
        # An occurrence covers now exactly when it starts in (now - length, now].
        for start in window.start._fire_times(now - length):
            if start > now:
                break
            if latest is None or start + length > latest:
                latest = start + length
    return latest


def next_window_start(windows: Sequence[MaintenanceWindow], now: float) -> float | None:
    """Earliest start strictly after ``now`` across all windows, for waking the scheduler."""
    starts = [s for s in (w.start.next_after(now) for w in windows) if s is not None]
    return min(starts, default=None)


def upcoming_starts(windows: Sequence[MaintenanceWindow], now: float, n: int = 7) -> list[tuple[float, float]]:
    """The next ``n`` (start, end) occurrences strictly after ``now`` across all windows, sorted,
    as DescribeJob shows them in ``scheduledJobRollouts``.  Identical occurrences of duplicated
    windows are listed once, since they are not distinct rollout opportunities."""
    if n <= 0:
        return []
    streams = [_occurrences(w, now) for w in windows]
    result: list[tuple[float, float]] = []
    for occurrence in heapq.merge(*streams):
        if result and result[-1] == occurrence:
            continue
        result.append(occurrence)
        if len(result) == n:
            break
    return result


def _occurrences(window: MaintenanceWindow, after: float) -> Iterator[tuple[float, float]]:
    # A function of its own so that each stream binds its own window (a nested generator
    # expression would see only the loop's last one).
    length = window.duration_seconds
    for start in window.start._fire_times(after):
        yield start, start + length
