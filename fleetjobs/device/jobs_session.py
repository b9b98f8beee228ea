"""One thing's session on the AWS IoT Jobs MQTT API (JOBS_API.md §5), from the device's side.

``fleetjobs agent`` and ``fleetjobs simulate`` both reach the Jobs API through a :class:`JobsSession`,
so that there is one way to name the topics, correlate answers and retry requests. It speaks only
the standard ``$aws/things/<thing>/jobs/...`` topics (AWS IoT itself would do) and imports nothing
from the server.

Correlation
-----------
Each logical request (one call of ``get_pending``, ``start_next``, ``describe`` or ``update``) gets
one fresh ``clientToken``. The server echoes it on ``<request topic>/accepted`` or ``/rejected``. An
answer is taken only if it carries the token of a request in flight *and* arrives on that request's
own answer topic; anything else (no token, a token nobody waits for, another topic, a second answer)
is dropped and counted as ``stray_answers``. All attempts of a request share its token, so a late
answer to an earlier attempt is taken as the request's answer, also while the session is backing
off before the next attempt.

The retry contract
------------------
* A request that gets no answer within ``RetryPolicy.response_timeout``, or whose publish failed
  because the connection dropped (or could not be made because the session was offline), is sent
  again after a backoff, **byte-for-byte identical, same clientToken**, until ``RetryPolicy.attempts``
  sends have been made; then :class:`RequestFailed` is raised.
* A ``RequestThrottled`` / ``ThrottlingException`` or ``InternalError`` / ``ServiceUnavailable``
  rejection is retried the same way: same bytes, after a backoff, within the same limit.
* Every other rejection is an answer, not a failure: it is returned to the caller as
  :class:`Rejected` and never retried.
* A new logical request always gets a new clientToken, even when its body equals the previous one.

Why the same bytes: the server records the answer of each state-changing request (``start-next``,
``<jobId>/update``) that carries a clientToken, keyed by its topic and its exact bytes, in the
transaction that applied it, and answers a repeat from that record instead of applying it again
(today: same topic and same bytes within an hour; the device-plane issue narrows that to "while
the execution is still at the version that answer produced"). So a byte-identical retry of a change
that was applied but whose answer was lost is answered as the first attempt was, and is never
applied twice. A fresh token would make the server handle the retry afresh: a retried ``SUCCEEDED``
update would be rejected as an invalid transition, a retried ``IN_PROGRESS`` update or ``start-next``
applied a second time. Rejections are not recorded (nothing was committed), so a retried throttled
request is simply handled when it gets through; reads (``get``, ``describe``) are not recorded
either, and a retry reads again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import socket
import uuid
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, TypedDict, TypeVar, cast
from urllib.parse import SplitResult, urlsplit

if TYPE_CHECKING:  # aiomqtt is imported when a session connects: ``fleetjobs --help`` stays fast
    import aiomqtt

JsonObject = dict[str, object]
RequestKind = Literal["get", "start-next", "describe", "update"]
ALL_REQUESTS: frozenset[RequestKind] = frozenset({"get", "start-next", "describe", "update"})

THROTTLED_CODES = frozenset({"RequestThrottled", "ThrottlingException"})
UNAVAILABLE_CODES = frozenset({"InternalError", "ServiceUnavailable"})
RETRIED_CODES = THROTTLED_CODES | UNAVAILABLE_CODES

# The counters a session adds to (a Counter shared by many sessions sums a fleet).
COUNTERS = (
    "requests",  # sends, retries included
    "accepted",
    "throttled",
    "internal_errors",
    "other_rejections",
    "timeouts",  # sends that got no answer in time, or were lost with the connection
    "retries",  # sends after the first of a logical request
    "gave_up",
    "notifications",
    "reconnects",
    "connect_errors",
    "stray_answers",
)


# -- the wire: payloads (JOBS_API.md §5.3-5.5) --------------------------------------------------------


class JobExecutionSummary(TypedDict, total=False):
    jobId: str
    queuedAt: int
    startedAt: int
    lastUpdatedAt: int
    versionNumber: int
    executionNumber: int


class JobExecutionState(TypedDict, total=False):
    status: str
    statusDetails: dict[str, str]
    versionNumber: int


class JobExecution(TypedDict, total=False):
    jobId: str
    thingName: str
    jobDocument: JsonObject
    status: str
    statusDetails: dict[str, str]
    queuedAt: int
    startedAt: int
    lastUpdatedAt: int
    versionNumber: int
    executionNumber: int
    approximateSecondsBeforeTimedOut: int


class PendingJobs(TypedDict, total=False):
    """``get/accepted``."""

    inProgressJobs: list[JobExecutionSummary]
    queuedJobs: list[JobExecutionSummary]
    timestamp: int
    clientToken: str


class ExecutionAnswer(TypedDict, total=False):
    """``start-next/accepted`` (no ``execution``: nothing is pending) and ``<jobId>/get/accepted``."""

    execution: JobExecution
    timestamp: int
    clientToken: str


class UpdateAnswer(TypedDict, total=False):
    """``<jobId>/update/accepted``: the state and document only when asked for."""

    executionState: JobExecutionState
    jobDocument: JsonObject
    timestamp: int
    clientToken: str


class ErrorAnswer(TypedDict, total=False):
    """Any ``/rejected``; ``executionState`` comes with InvalidStateTransition and VersionMismatch."""

    code: str
    message: str
    clientToken: str
    timestamp: int
    executionState: JobExecutionState


AnswerT = TypeVar("AnswerT")


@dataclass(frozen=True)
class Accepted(Generic[AnswerT]):
    answer: AnswerT
    ok: ClassVar[Literal[True]] = True


@dataclass(frozen=True)
class Rejected:
    """A rejection the caller must decide about (retried codes never get here)."""

    code: str
    message: str
    execution_state: JobExecutionState | None
    answer: ErrorAnswer
    ok: ClassVar[Literal[False]] = False

    @classmethod
    def of(cls, doc: JsonObject) -> Rejected:
        answer = cast(ErrorAnswer, doc)
        state = doc.get("executionState")
        return cls(
            code=str(doc.get("code") or ""),
            message=str(doc.get("message") or ""),
            execution_state=cast(JobExecutionState, state) if isinstance(state, dict) else None,
            answer=answer,
        )


# -- what the session reports besides answers ------------------------------------------------------------


@dataclass(frozen=True)
class NextNotification:
    """``notify-next``: the execution ``$next`` designates changed; None when nothing is pending."""

    execution: JobExecution | None
    timestamp: int | None


@dataclass(frozen=True)
class ListNotification:
    """``notify``: an execution entered or left the pending list (status -> summaries)."""

    jobs: dict[str, list[JobExecutionSummary]]
    timestamp: int | None


@dataclass(frozen=True)
class Connected:
    after_drop: bool  # True: the session reconnected by itself, notifications may have been missed


@dataclass(frozen=True)
class Disconnected:
    error: str | None  # None: the caller disconnected
    reconnecting: bool  # False after a drop: the session gave up reconnecting


Notification = NextNotification | ListNotification
SessionEvent = NextNotification | ListNotification | Connected | Disconnected


class JobsSessionError(Exception):
    pass


class ConnectFailed(JobsSessionError):
    pass


class RequestFailed(JobsSessionError):
    """No usable answer within the retry limit (silence, dropped connections or retried rejections)."""


class SessionClosed(RequestFailed):
    pass


# -- topics -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobsTopics:
    thing_name: str

    @property
    def base(self) -> str:
        return f"$aws/things/{self.thing_name}/jobs"

    @property
    def get(self) -> str:
        return f"{self.base}/get"

    @property
    def start_next(self) -> str:
        return f"{self.base}/start-next"

    def describe(self, job_id: str) -> str:
        return f"{self.base}/{job_id}/get"

    def update(self, job_id: str) -> str:
        return f"{self.base}/{job_id}/update"

    @property
    def notify(self) -> str:
        return f"{self.base}/notify"

    @property
    def notify_next(self) -> str:
        return f"{self.base}/notify-next"

    def subscriptions(self, requests: frozenset[RequestKind], *, notify: bool, notify_next: bool) -> list[str]:
        """The answers of the requests the session makes, and the notifications asked for. AWS
        delivers answers unsubscribed, but an ordinary broker (Mosquitto, the embedded one) needs
        these; a tight AWS IoT policy may allow no more. Not ``jobs/#``: the session would receive
        every request it sends (MQTT 3.1.1 has no "no local")."""
        answers: dict[RequestKind, str] = {
            "get": f"{self.get}/+",
            "start-next": f"{self.start_next}/+",
            "describe": f"{self.base}/+/get/+",
            "update": f"{self.base}/+/update/+",
        }
        filters = [f for kind, f in answers.items() if kind in requests]
        if notify_next:
            filters.append(self.notify_next)
        if notify:
            filters.append(self.notify)
        return filters


# -- configuration ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Backoff:
    first: float
    maximum: float
    jitter: float = 0.0  # each delay is scaled by a uniform factor in [1 - jitter, 1 + jitter]

    def delay(self, retry: int, rng: random.Random) -> float:
        """The pause before retry number ``retry`` (0 for the first)."""
        base = min(self.first * 2 ** min(retry, 32), self.maximum)
        return base * rng.uniform(1 - self.jitter, 1 + self.jitter) if self.jitter else base


@dataclass(frozen=True)
class RetryPolicy:
    response_timeout: float = 10.0
    attempts: int = 5  # sends of one logical request, the first included
    backoff: Backoff = Backoff(0.5, 8.0)


@dataclass(frozen=True)
class SessionConfig:
    thing_name: str
    mqtt_url: str = "mqtt://127.0.0.1:1884"
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    client_id: str | None = None  # default: the thing name, which AWS IoT policies usually require
    keepalive: int = 30
    clean_session: bool = True
    tcp_nodelay: bool = False
    retry: RetryPolicy = RetryPolicy()
    connect_attempts: int | None = 1  # for connect(); None: until connected or closed
    reconnect: bool = True  # reconnect by itself when the connection drops
    reconnect_attempts: int | None = None
    connect_backoff: Backoff = Backoff(1.0, 60.0)
    latency: float = 0.0  # seconds (x 0.5 .. 1.5) added to every message each way: a simulated network
    requests: frozenset[RequestKind] = ALL_REQUESTS  # the only answers subscribed to
    notify: bool = False  # subscribe to ``notify`` (pending-list changes)
    notify_next: bool = True
    buffer: int = 100  # notifications kept for next_notification(); 0 when only on_event is used

    def broker(self) -> SplitResult:
        url = urlsplit(self.mqtt_url)
        if url.scheme not in ("mqtt", "mqtts"):
            raise ValueError(f"the MQTT URL must be mqtt://host:port or mqtts://host:port, not {self.mqtt_url!r}")
        return url


# -- the session ----------------------------------------------------------------------------------------------


@dataclass(eq=False)
class _Connection:
    client: aiomqtt.Client
    lost: asyncio.Future[None]
    reader: asyncio.Task[None] | None = None


@dataclass(eq=False)
class _Waiter:
    topic: str
    answer: asyncio.Future[tuple[bool, JsonObject]]


class JobsSession:
    """The Jobs API of one thing over one MQTT connection at a time (reconnecting as configured).

    Use it as ``async with JobsSession(config) as jobs:`` or with ``connect()`` / ``close()``;
    ``disconnect()`` then ``connect()`` takes it off the network and back (requests in flight wait
    and retry). ``on_event`` is called synchronously with every notification and connection change,
    for callers that must react at once; ``next_notification()`` serves those who wait.
    """

    def __init__(
        self,
        config: SessionConfig,
        *,
        stats: Counter[str] | None = None,
        rng: random.Random | None = None,
        logger: logging.Logger | None = None,
        on_event: Callable[[SessionEvent], None] | None = None,
        connect_gate: asyncio.Semaphore | None = None,
    ) -> None:
        self.config = config
        self.topics = JobsTopics(config.thing_name)
        self.stats: Counter[str] = stats if stats is not None else Counter()
        self._url = config.broker()
        self._rng = rng or random.Random()
        self._logger = logger
        self._on_event = on_event
        self._gate = connect_gate
        self._conn: _Connection | None = None
        self._online = asyncio.Event()
        self._pending: dict[str, _Waiter] = {}
        self._inbox: deque[Notification] = deque(maxlen=max(config.buffer, 0))
        self._arrived = asyncio.Event()
        self._reconnector: asyncio.Task[None] | None = None
        self._has_connected = False
        self._wanted = False  # connected by the caller and not disconnected since: reconnect after a drop
        self._closed = False

    async def __aenter__(self) -> JobsSession:
        await self.connect()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @property
    def connected(self) -> bool:
        return self._conn is not None

    @property
    def client(self) -> aiomqtt.Client | None:
        return self._conn.client if self._conn is not None else None

    # -- requests ------------------------------------------------------------------------------------------

    async def get_pending(self) -> Accepted[PendingJobs] | Rejected:
        ok, doc = await self._request("get", self.topics.get, {})
        return Accepted(cast(PendingJobs, doc)) if ok else Rejected.of(doc)

    async def start_next(
        self, *, status_details: Mapping[str, str] | None = None, step_timeout_minutes: int | None = None
    ) -> Accepted[ExecutionAnswer] | Rejected:
        body: JsonObject = {}
        if status_details is not None:
            body["statusDetails"] = dict(status_details)
        if step_timeout_minutes is not None:
            body["stepTimeoutInMinutes"] = step_timeout_minutes
        ok, doc = await self._request("start-next", self.topics.start_next, body)
        return Accepted(cast(ExecutionAnswer, doc)) if ok else Rejected.of(doc)

    async def describe(
        self, job_id: str, execution_number: int | None = None, include_document: bool = True
    ) -> Accepted[ExecutionAnswer] | Rejected:
        """``job_id`` may be ``$next``."""
        body: JsonObject = {"includeJobDocument": include_document}
        if execution_number is not None:
            body["executionNumber"] = execution_number
        ok, doc = await self._request("describe", self.topics.describe(job_id), body)
        return Accepted(cast(ExecutionAnswer, doc)) if ok else Rejected.of(doc)

    async def update(
        self,
        job_id: str,
        status: str,
        *,
        status_details: Mapping[str, str] | None = None,
        expected_version: int | None = None,
        execution_number: int | None = None,
        include_execution_state: bool = False,
        include_document: bool = False,
        step_timeout_minutes: int | None = None,
    ) -> Accepted[UpdateAnswer] | Rejected:
        """``status``: IN_PROGRESS, SUCCEEDED, FAILED or REJECTED; ``step_timeout_minutes`` -1 clears the timer."""
        body: JsonObject = {"status": status}
        if status_details is not None:
            body["statusDetails"] = dict(status_details)
        if expected_version is not None:
            body["expectedVersion"] = expected_version
        if execution_number is not None:
            body["executionNumber"] = execution_number
        if include_execution_state:
            body["includeJobExecutionState"] = True
        if include_document:
            body["includeJobDocument"] = True
        if step_timeout_minutes is not None:
            body["stepTimeoutInMinutes"] = step_timeout_minutes
        ok, doc = await self._request("update", self.topics.update(job_id), body)
        return Accepted(cast(UpdateAnswer, doc)) if ok else Rejected.of(doc)

    async def _request(self, kind: RequestKind, topic: str, body: JsonObject) -> tuple[bool, JsonObject]:
        """One logical request under the retry contract (module docstring): (accepted?, answer)."""
        if kind not in self.config.requests:
            raise ValueError(f"this session does not subscribe to the answers of {kind} (SessionConfig.requests)")
        token = uuid.uuid4().hex  # never from a seeded generator: a rerun must not repeat an old request's bytes
        payload = json.dumps({**body, "clientToken": token}).encode()
        name = topic[len(self.topics.base) + 1 :]
        policy = self.config.retry
        waiter = self._expect(token, topic)
        last = "no answer"
        try:
            for attempt in range(1, policy.attempts + 1):
                if not waiter.answer.done():
                    if attempt > 1:
                        self.stats["retries"] += 1
                    await self._send(topic, payload, waiter, name, attempt)
                if waiter.answer.done():
                    ok, doc = waiter.answer.result()
                    code = str(doc.get("code"))
                    if ok:
                        self.stats["accepted"] += 1
                        return ok, doc
                    if code not in RETRIED_CODES:
                        self.stats["other_rejections"] += 1
                        return ok, doc
                    self.stats["throttled" if code in THROTTLED_CODES else "internal_errors"] += 1
                    self._log(logging.WARNING, "request rejected, retrying", request=name, code=code, attempt=attempt)
                    last = code
                    waiter = self._expect(token, topic)  # same token: a late answer still counts
                if attempt < policy.attempts:
                    # The pause ends early if an earlier attempt's answer comes in meanwhile.
                    await asyncio.wait({waiter.answer}, timeout=policy.backoff.delay(attempt - 1, self._rng))
            self.stats["gave_up"] += 1
            raise RequestFailed(f"no answer to {name} after {policy.attempts} attempts (last: {last})")
        finally:
            if self._pending.get(token) is waiter:
                del self._pending[token]

    def _expect(self, token: str, topic: str) -> _Waiter:
        waiter = _Waiter(topic, asyncio.get_running_loop().create_future())
        self._pending[token] = waiter
        return waiter

    async def _send(self, topic: str, payload: bytes, waiter: _Waiter, name: str, attempt: int) -> None:
        """One attempt: returns once answered, after the response timeout, or when the connection
        drops (the caller looks at ``waiter.answer``)."""
        timeout = self.config.retry.response_timeout
        if self.config.latency > 0:
            await asyncio.sleep(self._latency())
        conn = await self._wait_online(timeout)
        if conn is None:
            self._log(logging.WARNING, "offline: not sent", request=name, attempt=attempt)
            return
        self.stats["requests"] += 1
        publishing = asyncio.ensure_future(conn.client.publish(topic, payload, qos=1))
        publishing.add_done_callback(_retrieve)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        watched: set[asyncio.Future[Any]] = {waiter.answer, conn.lost, publishing}
        reason = "timeout"
        try:
            while (remaining := deadline - loop.time()) > 0:
                done, _ = await asyncio.wait(watched, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
                if waiter.answer.done():
                    return
                if conn.lost in done:
                    reason = "connection lost"
                    break
                if publishing in done:
                    watched.discard(publishing)
                    if publishing.exception() is not None:
                        reason = f"publish failed: {publishing.exception()}"
                        break
        finally:
            publishing.cancel()  # no-op when done; the PUBACK no longer matters once answered or abandoned
        if waiter.answer.done():
            return
        self.stats["timeouts"] += 1
        self._log(logging.WARNING, "no answer", request=name, attempt=attempt, reason=reason)

    async def _wait_online(self, within: float) -> _Connection | None:
        if self._closed:
            raise SessionClosed("the Jobs session is closed")
        if self._conn is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._online.wait(), within)
            if self._closed:
                raise SessionClosed("the Jobs session is closed")
        return self._conn

    # -- notifications -----------------------------------------------------------------------------------------

    async def next_notification(self) -> Notification:
        """The oldest notification not yet taken (up to ``config.buffer`` are kept, oldest dropped
        first). Bound the wait with ``asyncio.timeout``."""
        while not self._inbox:
            self._arrived.clear()
            await self._arrived.wait()
        return self._inbox.popleft()

    async def notifications(self) -> AsyncIterator[Notification]:
        while True:
            yield await self.next_notification()

    def clear_notifications(self) -> None:
        self._inbox.clear()

    # -- the connection ----------------------------------------------------------------------------------------

    async def connect(self) -> None:
        """Connect and subscribe; ConnectFailed after ``config.connect_attempts`` failed tries."""
        if self._closed:
            raise SessionClosed("the Jobs session is closed")
        self._wanted = True
        if self._conn is None:
            await self._establish(self.config.connect_attempts, after_drop=False)

    async def disconnect(self) -> None:
        """Leave the broker, without reconnecting; requests in flight wait for ``connect()``."""
        self._wanted = False
        reconnector, self._reconnector = self._reconnector, None
        if reconnector is not None and reconnector is not asyncio.current_task():
            reconnector.cancel()
            await asyncio.wait({reconnector})
        conn, self._conn = self._conn, None
        self._online.clear()
        if conn is None:
            return
        if conn.reader is not None:
            conn.reader.cancel()
            await asyncio.wait({conn.reader})
        with contextlib.suppress(Exception):
            await conn.client.__aexit__(None, None, None)
        if not conn.lost.done():
            conn.lost.set_result(None)
        self._emit(Disconnected(None, reconnecting=False))

    async def close(self) -> None:
        """Disconnect for good: requests still waiting raise SessionClosed."""
        self._closed = True
        await self.disconnect()
        self._online.set()  # wakes the waiters, who find the session closed

    async def _establish(self, attempts: int | None, *, after_drop: bool) -> None:
        if self._has_connected:
            self.stats["reconnects"] += 1
        failures = 0
        while True:
            client = self._new_client()
            try:
                if self._gate is not None:
                    async with self._gate:
                        await self._open(client)
                else:
                    await self._open(client)
                break
            except Exception as e:
                self.stats["connect_errors"] += 1
                failures += 1
                if attempts is not None and failures >= attempts:
                    raise ConnectFailed(f"could not connect to {self.config.mqtt_url}: {e}") from e
                delay = self.config.connect_backoff.delay(failures - 1, self._rng)
                self._log(logging.WARNING, "connect failed", error=str(e), retry_in=round(delay, 3))
                await asyncio.sleep(delay)
        conn = _Connection(client, asyncio.get_running_loop().create_future())
        self._conn = conn
        self._has_connected = True
        conn.reader = asyncio.create_task(self._read(conn))
        self._online.set()
        self._log(logging.INFO, "connected", url=self.config.mqtt_url)
        self._emit(Connected(after_drop))

    async def _open(self, client: aiomqtt.Client) -> None:
        await client.__aenter__()
        try:
            c = self.config
            filters = self.topics.subscriptions(c.requests, notify=c.notify, notify_next=c.notify_next)
            await client.subscribe([(f, 1) for f in filters])
        except BaseException:
            with contextlib.suppress(Exception):
                await client.__aexit__(None, None, None)
            raise

    def _new_client(self) -> aiomqtt.Client:
        import aiomqtt

        c, url = self.config, self._url
        tls = None
        if url.scheme == "mqtts":
            tls = aiomqtt.TLSParameters(ca_certs=c.ca_file, certfile=c.cert_file, keyfile=c.key_file)
        return aiomqtt.Client(
            url.hostname or "127.0.0.1",
            url.port or (8883 if tls else 1883),
            identifier=c.client_id or c.thing_name,
            clean_session=c.clean_session,
            keepalive=c.keepalive,
            tls_params=tls,
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)] if c.tcp_nodelay else None,
        )

    async def _read(self, conn: _Connection) -> None:
        error: Exception | None = None
        try:
            async for message in conn.client.messages:
                self._receive(message.topic.value, message.payload)
        except Exception as e:  # the connection is gone (a deliberate disconnect cancels instead)
            error = e
        self._dropped(conn, str(error) if error else "connection closed")

    def _receive(self, topic: str, payload: object) -> None:
        if not isinstance(payload, bytes | bytearray):
            return
        try:
            doc = json.loads(payload)
        except ValueError:
            return
        if not isinstance(doc, dict):
            return
        if self.config.latency > 0:  # the network delays each message, not the queue behind it
            asyncio.get_running_loop().call_later(self._latency(), self._handle, topic, doc)
        else:
            self._handle(topic, doc)

    def _handle(self, topic: str, doc: JsonObject) -> None:
        self._log(logging.DEBUG, "received", topic=topic)
        timestamp = doc.get("timestamp")
        stamp = timestamp if isinstance(timestamp, int) else None
        if topic == self.topics.notify_next:
            execution = doc.get("execution")
            nxt = cast(JobExecution, execution) if isinstance(execution, dict) else None
            self._notified(NextNotification(nxt, stamp))
            return
        if topic == self.topics.notify:
            jobs = doc.get("jobs")
            listing = cast(dict[str, list[JobExecutionSummary]], jobs) if isinstance(jobs, dict) else {}
            self._notified(ListNotification(listing, stamp))
            return
        outcome = topic.rsplit("/", 1)[-1]
        if outcome not in ("accepted", "rejected"):
            return
        token = doc.get("clientToken")
        waiter = self._pending.get(token) if isinstance(token, str) else None
        if waiter is None or topic != f"{waiter.topic}/{outcome}" or waiter.answer.done():
            self.stats["stray_answers"] += 1
            return
        waiter.answer.set_result((outcome == "accepted", doc))

    def _notified(self, notification: Notification) -> None:
        self.stats["notifications"] += 1
        self._inbox.append(notification)
        self._arrived.set()
        self._emit(notification)

    def _dropped(self, conn: _Connection, error: str) -> None:
        if self._conn is not conn:
            return
        self._conn = None
        self._online.clear()
        if not conn.lost.done():
            conn.lost.set_result(None)
        reconnecting = self.config.reconnect and self._wanted and not self._closed
        self._log(logging.WARNING, "connection lost", error=error, reconnecting=reconnecting)
        self._emit(Disconnected(error, reconnecting))
        if reconnecting:
            self._reconnector = asyncio.get_running_loop().create_task(self._reconnect(conn))

    async def _reconnect(self, old: _Connection) -> None:
        with contextlib.suppress(Exception):
            await old.client.__aexit__(None, None, None)
        try:
            await self._establish(self.config.reconnect_attempts, after_drop=True)
        except ConnectFailed as e:
            self._log(logging.WARNING, "gave up reconnecting", error=str(e))
            self._emit(Disconnected(str(e), reconnecting=False))
        finally:
            if self._reconnector is asyncio.current_task():
                self._reconnector = None

    # -- helpers ------------------------------------------------------------------------------------------------

    def _latency(self) -> float:
        return self.config.latency * self._rng.uniform(0.5, 1.5)

    def _emit(self, event: SessionEvent) -> None:
        if self._on_event is None:
            return
        try:
            self._on_event(event)
        except Exception:
            if self._logger is not None:
                self._logger.exception("session event handler failed")

    def _log(self, level: int, event: str, **fields: object) -> None:
        if self._logger is not None and self._logger.isEnabledFor(level):
            self._logger.log(level, event, extra={"fields": {"thing": self.config.thing_name, **fields}})


def _retrieve(task: asyncio.Future[None]) -> None:
    """A publish abandoned after its attempt ended may still fail: that is known, not worth a warning."""
    if not task.cancelled():
        task.exception()
