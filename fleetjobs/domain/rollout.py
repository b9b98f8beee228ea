"""Rollout, abort and retry rules (JOBS_API.md §4.9, §4.10, §3 AbortConfig), free of I/O.

Releases are a credit account: credit accrues at the current rate per minute and each whole unit
releases one execution.  The account (credit, time of last accrual) lives on the job row, so a
restarted or different instance carries on exactly where the last one stopped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fleetjobs.domain.cron import MaintenanceWindow
from fleetjobs.domain.job_config import parse_schedule_time

# Credit never exceeds one minute of releases: after a pause (maintenance window, every instance
# down) a rollout resumes at its rate instead of bursting the whole backlog.
MAX_CREDIT_MINUTES = 1.0
# An exponential rate that depends on succeeded things can rise at any moment: look again this often.
REEVALUATE_SECONDS = 5.0


@dataclass(frozen=True)
class RolloutConfig:
    maximum_per_minute: int | None
    base_rate: int | None
    increment_factor: float
    notified_step: int | None
    succeeded_step: int | None

    @classmethod
    def of(cls, config: Mapping[str, Any] | None) -> RolloutConfig | None:
        """None when the job has no rollout limit (every target is released at once)."""
        rollout = (config or {}).get("jobExecutionsRolloutConfig") or {}
        exponential = rollout.get("exponentialRate") or {}
        if not rollout.get("maximumPerMinute") and not exponential:
            return None
        criteria = exponential.get("rateIncreaseCriteria") or {}
        return cls(
            maximum_per_minute=rollout.get("maximumPerMinute"),
            base_rate=exponential.get("baseRatePerMinute"),
            increment_factor=float(exponential.get("incrementFactor") or 1.0),
            notified_step=criteria.get("numberOfNotifiedThings"),
            succeeded_step=criteria.get("numberOfSucceededThings"),
        )

    def rate(self, notified: int, succeeded: int) -> float:
        """Executions per minute now: the base rate times the factor once per threshold reached,
        never above ``maximumPerMinute`` (AWS's example: base 50, factor 2, every 1000 notified:
        50, 100 at 1000, 200 at 2000, 400 at 3000)."""
        if self.base_rate is None:
            return float(self.maximum_per_minute or 0)
        steps = 0
        if self.notified_step:
            steps = notified // self.notified_step
        elif self.succeeded_step:
            steps = succeeded // self.succeeded_step
        rate = self.base_rate * self.increment_factor ** min(steps, 1000)
        if self.maximum_per_minute:
            rate = min(rate, float(self.maximum_per_minute))
        return rate

    @property
    def depends_on_successes(self) -> bool:
        return self.base_rate is not None and not self.notified_step and bool(self.succeeded_step)


def accrue(credit: float, since: float | None, now: float, rate_per_minute: float) -> float:
    """Credit after accruing from ``since`` to ``now``; a fresh rollout starts with one unit so the
    first execution goes out at once."""
    if since is None:
        return 1.0
    elapsed = max(0.0, now - since)
    cap = max(1.0, rate_per_minute * MAX_CREDIT_MINUTES)
    return min(cap, credit + rate_per_minute * elapsed / 60.0)


def seconds_until_next(credit: float, rate_per_minute: float) -> float:
    """When the next whole unit of credit will be there."""
    if rate_per_minute <= 0:
        return math.inf
    missing = 1.0 - (credit - math.floor(credit)) if credit < 1.0 else 0.0
    return missing * 60.0 / rate_per_minute


# -- abort ------------------------------------------------------------------------------------------

FAILURE_STATUSES: dict[str, tuple[str, ...]] = {
    "FAILED": ("FAILED",),
    "REJECTED": ("REJECTED",),
    "TIMED_OUT": ("TIMED_OUT",),
}
FAILURE_STATUSES["ALL"] = ("FAILED", "REJECTED", "TIMED_OUT")
EXECUTED_STATUSES = ("SUCCEEDED", "FAILED", "REJECTED", "TIMED_OUT")


@dataclass(frozen=True)
class AbortDecision:
    failure_type: str
    failures: int
    executed: int
    threshold: float

    @property
    def comment(self) -> str:
        return (
            f"Aborted: {self.failures} of {self.executed} executed things "
            f"{'failed' if self.failure_type == 'ALL' else self.failure_type} "
            f"({100.0 * self.failures / self.executed:.2f}% >= {self.threshold:g}%)."
        )


def abort_decision(config: Mapping[str, Any] | None, counts: Mapping[str, int]) -> AbortDecision | None:
    """The first criterion met, if any.  ``counts`` maps execution status -> executions.

    Executed things are those that reached an outcome (succeeded, failed, rejected, timed out);
    a criterion fires once at least ``minNumberOfExecutedThings`` have, and the failures of its
    type are at least ``thresholdPercentage`` of them.
    """
    criteria = ((config or {}).get("abortConfig") or {}).get("criteriaList") or []
    executed = sum(counts.get(s, 0) for s in EXECUTED_STATUSES)
    for c in criteria:
        if executed < int(c.get("minNumberOfExecutedThings") or 1) or executed == 0:
            continue
        failures = sum(counts.get(s, 0) for s in FAILURE_STATUSES.get(c.get("failureType", "ALL"), ()))
        threshold = float(c.get("thresholdPercentage") or 0)
        if failures > 0 and failures * 100.0 >= threshold * executed:
            return AbortDecision(c.get("failureType", "ALL"), failures, executed, threshold)
    return None


# -- retry ------------------------------------------------------------------------------------------


def may_retry(config: Mapping[str, Any] | None, status: str, failed_retries: int, timed_out_retries: int) -> bool:
    """Is a FAILED / TIMED_OUT execution re-queued?  Retries are counted per failure type; an
    ``ALL`` criterion bounds both together, a specific one its own type."""
    if status not in ("FAILED", "TIMED_OUT"):
        return False
    criteria = {
        c["failureType"]: int(c.get("numberOfRetries") or 0)
        for c in ((config or {}).get("jobExecutionsRetryConfig") or {}).get("criteriaList") or []
    }
    used = failed_retries if status == "FAILED" else timed_out_retries
    if status in criteria:
        return used < criteria[status]
    if "ALL" in criteria:
        return failed_retries + timed_out_retries < criteria["ALL"]
    return False


# -- schedules (schedulingConfig) --------------------------------------------------------------------


def windows_of(config: dict[str, Any] | None) -> list[MaintenanceWindow]:
    sched = (config or {}).get("schedulingConfig") or {}
    return [MaintenanceWindow.from_config(w) for w in sched.get("maintenanceWindows") or []]


def end_time_of(config: dict[str, Any] | None) -> float | None:
    end = ((config or {}).get("schedulingConfig") or {}).get("endTime")
    return parse_schedule_time(end, "endTime") if end else None


def start_time_of(config: dict[str, Any] | None) -> float | None:
    start = ((config or {}).get("schedulingConfig") or {}).get("startTime")
    return parse_schedule_time(start) if start else None


def needs_engine(config: dict[str, Any] | None) -> bool:
    """Does the job's rollout wait on the clock (staged, scheduled, windowed or ending)?"""
    sched = (config or {}).get("schedulingConfig") or {}
    return RolloutConfig.of(config) is not None or bool(
        sched.get("startTime") or sched.get("maintenanceWindows") or sched.get("endTime")
    )
