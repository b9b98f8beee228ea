"""The device agent: the AWS IoT Jobs MQTT API (JOBS_API.md §5) from the device's side.

On start, on each ``notify-next`` and after a reconnection it asks ``start-next``, runs the execution
it is handed (one at a time), reports progress with ``<jobId>/update`` IN_PROGRESS and ends with
SUCCEEDED, FAILED or REJECTED.  Topics, clientTokens, retries and reconnection are
:mod:`fleetjobs.device.jobs_session`'s (its docstring has the retry contract); only the standard
topics are used, so it works against fleetjobs or AWS IoT.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
import unicodedata
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Coroutine
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from fleetjobs.agent import handlers
from fleetjobs.agent.documents import BUILTIN_HANDLERS, InvalidDocument, Plan, Step, parse
from fleetjobs.agent.state import AgentState
from fleetjobs.device.jobs_session import (
    Backoff,
    Connected,
    JobExecution,
    JobsSession,
    JobsSessionError,
    NextNotification,
    Rejected,
    RequestFailed,
    RetryPolicy,
    SessionConfig,
    SessionEvent,
)

if TYPE_CHECKING:
    import aiomqtt

log = logging.getLogger("fleetjobs.agent")
T = TypeVar("T")

GONE_CODES = ("InvalidStateTransition", "ResourceNotFound", "TerminalStateReached")
MAX_DETAILS = 10
TERMINAL = ("SUCCEEDED", "FAILED", "REJECTED", "CANCELED", "TIMED_OUT", "REMOVED")


@dataclass
class AgentConfig:
    thing_name: str
    state_dir: Path
    mqtt_url: str = "mqtt://127.0.0.1:1884"
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    handler_dir: Path | None = None
    reboot_command: list[str] | None = None
    codesign_certificate: str | None = None  # PEM: pin the signer (documents must then be signed by it)
    download_chunk: int = 64 * 1024
    download_delay: float = 0.0  # seconds after each chunk: throttling (tests, slow links)
    progress_interval: float = 1.0  # at most one progress update per interval during a step
    request_timeout: float = 10.0
    request_attempts: int = 5
    seconds_per_minute: float = 60.0  # step timeouts are in minutes; tests shrink the minute
    keepalive: int = 30
    extra: dict[str, Any] = field(default_factory=dict)


# What the agent raises when it cannot reach the Jobs API (no broker, no answer within the retries).
AgentError = JobsSessionError


class _Reboot(Exception):
    pass


class _JobGone(Exception):
    def __init__(self, status: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status


def printable(text: str) -> str:
    """statusDetails values may hold no control characters (``[^\\p{C}]+``): trailing newlines go,
    the others are escaped (``\\n``, ``\\t``, ``\\x1b``...)."""
    text = text.rstrip("\r\n")
    if all(not unicodedata.category(ch).startswith("C") for ch in text):
        return text
    escapes = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}
    return "".join(
        escapes.get(ch, f"\\x{ord(ch):02x}" if ord(ch) < 256 else f"\\u{ord(ch):04x}")
        if unicodedata.category(ch).startswith("C")
        else ch
        for ch in text
    )


def clean_details(details: dict[str, Any]) -> dict[str, str]:
    """statusDetails as AWS takes them: non-empty printable strings, at most 10 keys; stdout and
    stderr keep their last 1,024 characters, the others (reason...) their first 1,024."""
    out: dict[str, str] = {}
    for k, v in details.items():
        if v is None or len(out) >= MAX_DETAILS:
            continue
        text = printable(str(v))
        text = handlers.tail(text) if k in ("stdout", "stderr") else text[: handlers.TAIL]
        if text:
            out[k] = text
    return out


class Agent:
    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.session_config = SessionConfig(
            thing_name=config.thing_name,
            mqtt_url=config.mqtt_url,
            ca_file=config.ca_file,
            cert_file=config.cert_file,
            key_file=config.key_file,
            keepalive=config.keepalive,
            retry=RetryPolicy(config.request_timeout, config.request_attempts, Backoff(0.5, 8.0)),
            reconnect_attempts=None,  # a device keeps trying
            connect_backoff=Backoff(1.0, 60.0),
            requests=frozenset({"start-next", "describe", "update"}),  # what it uses: AWS IoT policies can be tight
            buffer=0,  # notifications are taken through _on_event
        )
        self.session_config.broker()  # a bad URL fails here, not on the first connect
        self.state = AgentState(config.state_dir)
        self.stats: Counter[str] = Counter()  # the session's request counters
        self.rebooting = False
        self.resumed_from: int | None = None  # offset the last resumed download continued from
        self._jobs: JobsSession | None = None
        self._notify: asyncio.Event | None = None  # set on notify-next and on connection changes
        self._timer_set = False
        self._last_progress = 0.0

    # -- logging --------------------------------------------------------------------------------

    def _log(self, level: int, event: str, **fields: Any) -> None:
        log.log(level, event, extra={"fields": {"thing": self.config.thing_name, **fields}})

    # -- the Jobs session ------------------------------------------------------------------------

    @property
    def _client(self) -> aiomqtt.Client | None:
        """The MQTT client while connected, else None."""
        return self._jobs.client if self._jobs is not None else None

    @contextlib.asynccontextmanager
    async def _session(self, connect_attempts: int | None, stop: asyncio.Event | None = None) -> AsyncIterator[None]:
        if self._jobs is not None:
            yield
            return
        self._notify = asyncio.Event()
        jobs = JobsSession(
            replace(self.session_config, connect_attempts=connect_attempts),
            stats=self.stats,
            logger=log,
            on_event=self._on_event,
        )
        self._jobs = jobs
        try:
            if stop is None:
                await jobs.connect()
            else:
                await _until(jobs.connect(), stop)
            yield
        finally:
            self._jobs = None
            await jobs.close()

    def _on_event(self, event: SessionEvent) -> None:
        # A reconnection counts as news: notifications sent while the agent was away are lost. A
        # drop does not: there is nothing to ask until the session is back.
        if isinstance(event, NextNotification) or (isinstance(event, Connected) and event.after_drop):
            if self._notify is not None:
                self._notify.set()

    @property
    def jobs(self) -> JobsSession:
        if self._jobs is None:
            raise RuntimeError("the agent has no Jobs session open")
        return self._jobs

    # -- public API -----------------------------------------------------------------------------

    async def run_once(self) -> str | None:
        """Take and run at most one job: its final status (``IN_PROGRESS`` if it stopped for a
        reboot), or None when nothing is pending.  Fails at once if the broker cannot be reached."""
        async with self._session(connect_attempts=1):
            return await self._take_one()

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Run jobs until ``stop`` is set (a job interrupted by it resumes on the next start) or a
        reboot step stops the agent.  The session reconnects when the broker goes away."""
        stop = stop or asyncio.Event()
        backoff = 1.0
        async with self._session(connect_attempts=None, stop=stop):
            while not stop.is_set():
                assert self._notify is not None
                self._notify.clear()
                try:
                    status = await _until(self._take_one(), stop)
                except RequestFailed as e:
                    # Offline longer than the request retries last: start over from start-next.
                    self._log(logging.WARNING, "request failed", error=str(e), retry_in=backoff)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), backoff)
                    backoff = min(backoff * 2, 60)
                    continue
                backoff = 1.0
                if self.rebooting or stop.is_set():
                    return
                if status is None:
                    await _until(self._notify.wait(), stop)

    # -- one job --------------------------------------------------------------------------------

    async def _take_one(self) -> str | None:
        result = await self.jobs.start_next()
        if isinstance(result, Rejected):
            self._log(logging.WARNING, "start-next rejected", code=result.code, message=result.message)
            return None
        execution = result.answer.get("execution")
        current = self.state.current
        if not execution:
            if current:
                self._log(logging.WARNING, "interrupted job is no longer pending", jobId=current["jobId"])
                self.state.current = None
            return None
        job_id, number = execution["jobId"], execution.get("executionNumber")
        done = self.state.finished(job_id, number)
        if done:
            self._log(logging.INFO, "already finished: re-sending final status", jobId=job_id, status=done["status"])
            await self._send_final(job_id, number, done["status"], done["statusDetails"])
            return str(done["status"])
        if current and (current["jobId"], current.get("executionNumber")) != (job_id, number):
            self._log(logging.WARNING, "interrupted job is no longer the next one", jobId=current["jobId"])
            self.state.current = None
            current = None
        try:
            return await self._execute(execution, current)
        except _Reboot:
            self.rebooting = True
            self._log(logging.INFO, "rebooting", jobId=job_id)
            return "IN_PROGRESS"
        except _JobGone as e:
            self._log(logging.WARNING, "job execution ended on the server", jobId=job_id, status=e.status)
            self.state.finish(job_id, number, e.status, {"reason": str(e)})
            return e.status

    def _known_operations(self) -> set[str]:
        d = self.config.handler_dir
        if d is None or not d.is_dir():
            return set()
        return {p.name for p in d.iterdir() if p.is_file() and os.access(p, os.X_OK)}

    async def _execute(self, execution: JobExecution, current: dict[str, Any] | None) -> str:
        job_id, number = execution["jobId"], execution.get("executionNumber")
        document: object = execution.get("jobDocument")
        if isinstance(document, str):
            with contextlib.suppress(ValueError):
                document = json.loads(document)
        if current is None:
            current = {"jobId": job_id, "executionNumber": number, "step": 0, "started": False, "offset": 0}
            self.state.current = current
            self._log(logging.INFO, "job started", jobId=job_id, executionNumber=number)
        else:
            self._log(logging.INFO, "job resumed", jobId=job_id, executionNumber=number, step=current["step"] + 1)
        try:
            plan = parse(document, self._known_operations())
        except InvalidDocument as e:
            return await self._finish(job_id, number, "REJECTED", {"reason": f"invalid job document: {e}"})
        steps = plan.all_steps
        index = int(current.get("step", 0))
        stdout = ""
        while index < len(steps):
            step = steps[index]
            n = index + 1
            if current.get("started"):
                if current.get("reboot") == "issued":
                    self._log(logging.INFO, "reboot completed", jobId=job_id, step=n)
                    index += 1
                    self.state.update_current(step=index, started=False, reboot=None)
                    continue
                if not (step.type == "runHandler" and step.handler == "download-file.sh" and self._builtin(step)):
                    reason = f"agent restarted during step {n} ({step.name})"
                    return await self._finish(job_id, number, "FAILED", {"reason": reason, "step": step.name})
            self.state.update_current(step=index, started=True, reboot=None)
            await self._progress(job_id, number, step, index, len(steps), 0.0, first=True)
            result = await self._watched(job_id, number, self._run_step(job_id, number, plan, step, index, len(steps)))
            if not result.ok:
                self._log(logging.WARNING, "step failed", jobId=job_id, step=n, reason=result.reason)
                if not step.ignore_failure:
                    details = {
                        "step": step.name,
                        "reason": f"step {n} ({step.name}) failed: {result.reason}",
                        "stdout": result.stdout,
                        "stderr": result.stderr,
                    }
                    return await self._finish(job_id, number, "FAILED", details)
            stdout += result.stdout
            index += 1
            self.state.update_current(step=index, started=False, offset=0)
        details = {"step": steps[-1].name, "progress": "100"}
        if plan.include_stdout and stdout:
            details["stdout"] = stdout
        return await self._finish(job_id, number, "SUCCEEDED", details)

    async def _watched(
        self, job_id: str, number: int | None, work: Coroutine[Any, Any, handlers.StepResult]
    ) -> handlers.StepResult:
        """Run a step; when notify-next says the queue changed, check that the execution is still
        ours (an operator may have canceled it with force): if not, stop the step (raise _JobGone)."""
        task = asyncio.ensure_future(work)
        try:
            while True:
                assert self._notify is not None
                self._notify.clear()
                waiter = asyncio.ensure_future(self._notify.wait())
                done, _ = await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                if task in done:
                    return task.result()
                if not self.jobs.connected:
                    return await task  # offline: finish the step, report when back
                status = await self._execution_status(job_id, number)
                if status in TERMINAL:
                    self._log(logging.WARNING, "job execution ended on the server: stopping", jobId=job_id)
                    raise _JobGone(status, f"the job execution became {status} on the server while a step ran")
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _execution_status(self, job_id: str, number: int | None) -> str | None:
        described = await self.jobs.describe(job_id, number, include_document=False)
        if not isinstance(described, Rejected):
            return described.answer.get("execution", {}).get("status")
        if described.code == "ResourceNotFound":
            return "REMOVED"
        if described.code == "TerminalStateReached":
            # Which terminal status: an update says, in the executionState of its rejection.
            probe = await self.jobs.update(job_id, "IN_PROGRESS", execution_number=number)
            if not isinstance(probe, Rejected):
                return None
            return (probe.execution_state or {}).get("status") or "CANCELED"
        return None

    def _builtin(self, step: Step) -> bool:
        """download-file.sh and reboot.sh are built in, unless the step names a directory holding
        a script of that name."""
        return step.path is None or handlers.find_handler(step.handler or "", step.path, None) is None

    async def _run_step(
        self, job_id: str, number: int | None, plan: Plan, step: Step, index: int, total: int
    ) -> handlers.StepResult:
        timeout = step.timeout_minutes * self.config.seconds_per_minute if step.timeout_minutes else None
        if step.type == "runCommand":
            return await handlers.run_process(handlers.as_user(step.command, step.run_as_user), timeout)
        name = step.handler or ""
        if name in ("download-file.sh", "reboot.sh") and self._builtin(step):
            if name == "reboot.sh":
                return await self._reboot(timeout)
            work = self._download(job_id, number, plan, step, index, total)
            try:
                return await asyncio.wait_for(work, timeout)
            except TimeoutError:
                return handlers.StepResult(False, f"timed out after {step.timeout_minutes} min")
        script = handlers.find_handler(name, step.path, self.config.handler_dir)
        if script is None:
            where = step.path or self.config.handler_dir or "(no --handler-dir)"
            kind = "built-in plug-in point" if name in BUILTIN_HANDLERS else "handler"
            return handlers.StepResult(False, f"no executable {name} in {where} ({kind}: install a script there)")
        argv = handlers.as_user([str(script), step.run_as_user or "", *step.args], step.run_as_user)
        return await handlers.run_process(argv, timeout, cwd=str(script.parent))

    async def _reboot(self, limit: float | None) -> handlers.StepResult:
        self.state.update_current(reboot="issued")
        if self.config.reboot_command:
            result = await handlers.run_process(self.config.reboot_command, limit)
            if not result.ok:
                self.state.update_current(reboot=None)
                return result
        raise _Reboot()

    async def _download(
        self, job_id: str, number: int | None, plan: Plan, step: Step, index: int, total: int
    ) -> handlers.StepResult:
        if len(step.args) < 2:
            return handlers.StepResult(False, "download-file.sh needs two arguments: the URL and the file path")
        url, target = step.args[0], await asyncio.to_thread(_expand, step.args[1])
        codesign = step.codesign or plan.codesign
        if codesign is None and len(step.args) > 2:
            try:
                codesign = json.loads(step.args[2])
            except ValueError:
                codesign = None
            if not isinstance(codesign, dict) or not isinstance(codesign.get("signature"), str):
                return handlers.StepResult(False, "download-file.sh: the third argument is not a codesign object")
        if self.config.codesign_certificate:
            if not codesign:
                return handlers.StepResult(False, "unsigned download refused: the agent requires a code signature")
            codesign = {**codesign, "certificate": self.config.codesign_certificate}
        _, resumed = await asyncio.to_thread(handlers.prepare_target, target)
        if resumed:
            self._log(logging.INFO, "resuming download", jobId=job_id, offset=resumed, path=str(target))
            self.resumed_from = resumed

        async def progress(done: int, size: int | None) -> None:
            fraction = done / size if size else 0.0
            now = time.monotonic()
            if now - self._last_progress >= self.config.progress_interval or (size and done >= size):
                self.state.update_current(offset=done)
                await self._progress(job_id, number, step, index, total, fraction, bytes_done=done)

        options = handlers.DownloadOptions(chunk=self.config.download_chunk, delay=self.config.download_delay)
        try:
            fetched, size = await handlers.download(url, target, codesign, options, progress)
        except handlers.StepFailed as e:
            return handlers.StepResult(False, str(e))
        self._log(logging.INFO, "downloaded", jobId=job_id, path=str(target), size=size, fetched=fetched)
        return handlers.StepResult(True)

    # -- reports --------------------------------------------------------------------------------

    async def _progress(
        self,
        job_id: str,
        number: int | None,
        step: Step,
        index: int,
        total: int,
        fraction: float,
        *,
        first: bool = False,
        bytes_done: int | None = None,
    ) -> None:
        self._last_progress = time.monotonic()
        details: dict[str, Any] = {
            "step": step.name,
            "stepNumber": f"{index + 1}/{total}",
            "progress": str(int((index + min(fraction, 1.0)) * 100 / total)),
        }
        if bytes_done is not None:
            details["bytes"] = str(bytes_done)
        step_timeout: int | None = None
        if first:
            if step.timeout_minutes:
                step_timeout = step.timeout_minutes
                self._timer_set = True
            elif self._timer_set:
                step_timeout = -1
                self._timer_set = False
        result = await self.jobs.update(
            job_id,
            "IN_PROGRESS",
            status_details=clean_details(details),
            execution_number=number,
            step_timeout_minutes=step_timeout,
        )
        if isinstance(result, Rejected):
            if result.code in GONE_CODES:
                status = (result.execution_state or {}).get("status") or "CANCELED"
                raise _JobGone(status, f"{result.code}: {result.message}")
            self._log(logging.WARNING, "progress update rejected", jobId=job_id, code=result.code)

    async def _finish(self, job_id: str, number: int | None, status: str, details: dict[str, Any]) -> str:
        """Record the outcome locally first (so the job is never run again), then report it."""
        cleaned = clean_details(details)
        self.state.finish(job_id, number, status, cleaned)
        self._log(logging.INFO, "job finished", jobId=job_id, executionNumber=number, status=status, **cleaned)
        await self._send_final(job_id, number, status, cleaned)
        return status

    async def _send_final(self, job_id: str, number: int | None, status: str, details: dict[str, str]) -> None:
        self._timer_set = False
        result = await self.jobs.update(job_id, status, status_details=details, execution_number=number)
        if isinstance(result, Rejected):
            state = (result.execution_state or {}).get("status")
            if state != status:  # already that status: an earlier report of ours got through
                self._log(
                    logging.WARNING,
                    "final update rejected",
                    jobId=job_id,
                    code=result.code,
                    message=result.message,
                    state=state,
                )


def _expand(path: str) -> Path:
    return Path(path).expanduser()


async def _until(work: Awaitable[T], stop: asyncio.Event) -> T | None:
    """Await ``work`` unless ``stop`` is set first (then cancel it and return None)."""
    task = asyncio.ensure_future(work)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        done, _ = await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            return task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return None
    finally:
        stopper.cancel()
        if not task.done():
            task.cancel()
