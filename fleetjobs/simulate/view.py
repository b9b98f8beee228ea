"""The live view of a simulated fleet: a rich table when rich is installed and stderr is a terminal,
else one compact line per interval."""

from __future__ import annotations

import sys
from typing import Any


class NoDisplay:
    def update(self, snap: dict[str, Any], rps: float, elapsed: float, job: dict[str, Any] | None) -> None:
        pass

    def close(self) -> None:
        pass


def _job_line(job: dict[str, Any] | None) -> str:
    if not job:
        return ""
    d = job.get("jobProcessDetails") or {}
    parts = [f"job {job.get('jobId')} {job.get('status')}"]
    if job.get("reasonCode"):
        parts.append(f"({job['reasonCode']})")
    for k, label in (
        ("numberOfQueuedThings", "queued"),
        ("numberOfInProgressThings", "in progress"),
        ("numberOfSucceededThings", "succeeded"),
        ("numberOfFailedThings", "failed"),
        ("numberOfRejectedThings", "rejected"),
        ("numberOfCanceledThings", "canceled"),
        ("numberOfTimedOutThings", "timed out"),
    ):
        if d.get(k):
            parts.append(f"{label} {d[k]}")
    return " ".join(parts)


class TextDisplay(NoDisplay):
    def __init__(self, devices: int) -> None:
        self.devices = devices

    def update(self, snap: dict[str, Any], rps: float, elapsed: float, job: dict[str, Any] | None) -> None:
        line = (
            f"[{elapsed:6.1f}s] connected {snap.get('connected', 0)}/{self.devices} "
            f"queued {snap.get('state_queued', 0)} in-progress {snap.get('state_in_progress', 0)} "
            f"offline {snap.get('state_offline', 0)} | succeeded {snap.get('succeeded', 0)} "
            f"failed {snap.get('failed', 0)} rejected {snap.get('rejected', 0)} "
            f"abandoned {snap.get('abandoned', 0)} | {rps:.0f} req/s throttled {snap.get('throttled', 0)}"
        )
        if job:
            line += " | " + _job_line(job)
        print(line, file=sys.stderr, flush=True)


class RichDisplay(NoDisplay):
    def __init__(self, devices: int) -> None:
        from rich.console import Console
        from rich.live import Live

        self.devices = devices
        self.console = Console(stderr=True)
        self.live = Live(console=self.console, auto_refresh=False, transient=False)
        self.live.start()

    def update(self, snap: dict[str, Any], rps: float, elapsed: float, job: dict[str, Any] | None) -> None:
        from rich.table import Table

        t = Table(title=f"fleetjobs simulate: {self.devices} devices, {elapsed:.0f}s", show_header=True)
        t.add_column("devices", justify="left")
        t.add_column("", justify="right")
        t.add_column("executions (device view)", justify="left")
        t.add_column("", justify="right")
        t.add_column("requests", justify="left")
        t.add_column("", justify="right")
        g = snap.get
        rows = [
            ("connected", g("connected", 0), "started", g("executions_started", 0), "per second", int(rps)),
            ("queued", g("state_queued", 0), "[green]succeeded", g("succeeded", 0), "total", g("requests", 0)),
            ("in progress", g("state_in_progress", 0), "[red]failed", g("failed", 0), "throttled", g("throttled", 0)),
            ("offline", g("state_offline", 0), "[yellow]rejected", g("rejected", 0), "retries", g("retries", 0)),
            ("idle", g("state_idle", 0), "abandoned", g("abandoned", 0), "timeouts", g("timeouts", 0)),
        ]
        for r in rows:
            t.add_row(*(str(x) for x in r))
        if job:
            t.caption = _job_line(job)
        self.live.update(t, refresh=True)

    def close(self) -> None:
        self.live.stop()


def make_display(kind: str, devices: int) -> NoDisplay:
    if kind == "none":
        return NoDisplay()
    if kind in ("rich", "auto"):
        try:
            import rich  # noqa: F401

            if kind == "rich" or sys.stderr.isatty():
                return RichDisplay(devices)
        except ImportError:
            pass
    return TextDisplay(devices)
