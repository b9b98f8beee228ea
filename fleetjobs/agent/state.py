"""The agent's durable local state: one JSON file, written atomically (temp file, fsync, rename).

``current``: the job being run (jobId, executionNumber, step index, whether the step had started,
download offset, a reboot in flight); ``finished``: ``"jobId#executionNumber"`` -> the final status
and statusDetails, so that a finished execution is never run twice (its final report is re-sent
instead when the server offers it again, e.g. because the report was lost).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

MAX_FINISHED = 1000


def key(job_id: str, execution_number: int | None) -> str:
    return f"{job_id}#{execution_number or 0}"


class AgentState:
    def __init__(self, state_dir: Path) -> None:
        self.dir = Path(state_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "state.json"
        self.data: dict[str, Any] = {"current": None, "finished": {}}
        if self.path.exists():
            loaded = json.loads(self.path.read_text() or "{}")
            self.data.update(loaded)

    @property
    def current(self) -> dict[str, Any] | None:
        return self.data.get("current")

    @current.setter
    def current(self, value: dict[str, Any] | None) -> None:
        self.data["current"] = value
        self.save()

    def update_current(self, **changes: Any) -> None:
        if self.data.get("current") is None:
            return
        self.data["current"].update(changes)
        self.save()

    def finished(self, job_id: str, execution_number: int | None) -> dict[str, Any] | None:
        return self.data["finished"].get(key(job_id, execution_number))

    def finish(self, job_id: str, execution_number: int | None, status: str, details: dict[str, str]) -> None:
        """Record the final outcome and drop the current job, in one write."""
        finished = self.data["finished"]
        finished[key(job_id, execution_number)] = {"status": status, "statusDetails": details}
        while len(finished) > MAX_FINISHED:
            finished.pop(next(iter(finished)))
        self.data["current"] = None
        self.save()

    def save(self) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".state-", suffix=".json")
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(self.data, fh, indent=1, sort_keys=True)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
