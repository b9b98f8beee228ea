"""The device gateway: answers the Jobs MQTT API on any MQTT broker, as a client of it.

It subscribes to every thing's jobs topics, hands each request to the same service layer the
HTTPS device API uses, and publishes ``/accepted`` or ``/rejected`` plus the notifications the
change calls for.  Requests of one thing are handled in arrival order; different things run
concurrently.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import zlib
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiomqtt
import paho.mqtt.client as paho_mqtt

from fleetjobs.clock import Clock
from fleetjobs.domain.errors import ServiceError, ServiceUnavailable
from fleetjobs.mqtt import codec, notifications, topics
from fleetjobs.mqtt.paho_reads import buffer_reads
from fleetjobs.service import events
from fleetjobs.service.device_jobs import DatabaseUnavailable, DeviceJobs, database_unreachable
from fleetjobs.service.effects.device_batch import DeviceCall
from fleetjobs.service.loops.notice_drain import NoticeDrain

log = logging.getLogger("fleetjobs.mqtt")

# At most this many requests are applied in one transaction.
MAX_BATCH = 500
# While the database is unreachable, requests waiting for it are tried again after 0.25 s, then
# twice as long each time, up to this.
DB_RETRY_FIRST = 0.25
DB_RETRY_MAX = 5.0


def _token_of(payload: bytes) -> str | None:
    """The clientToken of a payload, if it has a readable one (a throttled request still gets it back)."""
    try:
        return codec.client_token(codec.decode(payload))
    except (codec.InvalidJson, ServiceError):
        return None


@dataclass(frozen=True)
class _Incoming:
    client: aiomqtt.Client
    message: aiomqtt.Message
    topic: str
    parsed: topics.Request | topics.InvalidTopic
    payload: bytes


# A request waiting for the database: (its message and clientToken, its call).
_Waiting = tuple[tuple[_Incoming, str | None], DeviceCall]

# How long a publish may wait for the broker's PUBACK before it counts as not delivered.
PUBLISH_TIMEOUT = 10.0


class NotConnected(aiomqtt.MqttError):
    """The gateway has no broker connection right now."""


class _Confirmation:
    """Stands in aiomqtt's table of pending publishes for the Event it keeps there: aiomqtt's
    ``on_publish`` calls ``set()`` when the PUBACK arrives, which resolves the gateway's future."""

    __slots__ = ("future",)

    def __init__(self, future: asyncio.Future[None]) -> None:
        self.future = future

    def set(self) -> None:
        if not self.future.done():
            self.future.set_result(None)


@dataclass
class _Sent:
    """Messages handed to the client in one go, and what became of each (None: acknowledged)."""

    client: aiomqtt.Client | None
    outcomes: list[BaseException | None]
    waiting: dict[int, tuple[int, asyncio.Future[None]]]  # index -> (packet id, its PUBACK)


CHANGING = (topics.START_NEXT, topics.UPDATE)  # answered once even when delivered twice
# Scale-out: the broker's loopback bridge (``fleetjobs broker-config mosquitto --shared-requests``)
# copies $aws/things/<thing>/jobs/... to this tree, which instances read through a shared subscription.
SHARED_REQUESTS_PREFIX = "fleetjobs/requests/"


def shared_filter(group: str) -> str:
    """The shared subscription of the instances of ``group``: each request reaches one of them."""
    if not group or any(c in group for c in "/+#"):
        raise ValueError(f"invalid MQTT shared subscription group {group!r}: no '/', '+' or '#'")
    return f"$share/{group}/{SHARED_REQUESTS_PREFIX}#"


def request_topic(received: str) -> str | None:
    """The device's own topic of a request received through the bridge (None: not bridged)."""
    if not received.startswith(SHARED_REQUESTS_PREFIX):
        return None
    return topics.PREFIX + received[len(SHARED_REQUESTS_PREFIX) :]


@dataclass(frozen=True)
class BrokerTarget:
    host: str
    port: int
    tls: bool

    @classmethod
    def parse(cls, url: str) -> BrokerTarget:
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
            raise ValueError(f"unsupported MQTT URL scheme in {url!r}: use mqtt:// or mqtts://")
        tls = parts.scheme in ("mqtts", "ssl")
        return cls(parts.hostname or "127.0.0.1", parts.port or (8883 if tls else 1883), tls)


@dataclass(frozen=True)
class TlsFiles:
    ca_file: str
    cert_file: str
    key_file: str

    def context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.ca_file)
        ctx.load_cert_chain(self.cert_file, self.key_file)
        return ctx


class MqttGateway:
    def __init__(
        self,
        url: str,
        device: DeviceJobs,
        clock: Clock,
        *,
        client_id: str = "fleetjobs-gateway",
        tls: TlsFiles | None = None,
        reconnect_delay: float = 1.0,
        shared_group: str | None = None,
        batch_workers: int = 1,
        subscribe: bool = True,
    ) -> None:
        self.target = BrokerTarget.parse(url)
        self.device = device
        self.clock = clock
        self.client_id = client_id
        self.tls = tls
        self.reconnect_delay = reconnect_delay
        # With a group, requests come through the bridge's copy, shared between the group's instances.
        self.shared_group = shared_group or None
        self.request_filter = shared_filter(shared_group) if shared_group else topics.REQUEST_FILTER
        # A worker process beside the one that reads the requests only publishes (its notices, the
        # answers' notifications of HTTPS requests it handled): without a shared group two readers
        # would each answer every request.
        self.subscribe = subscribe
        self._client: aiomqtt.Client | None = None
        # Requests wait here for a batch worker; a thing always goes to the same worker (its order).
        # One worker is the default: measured on PostgreSQL, one worker's batches (everything that
        # arrived during the previous batch) beat several workers' smaller ones, 1,180 to 770 req/s.
        self._inboxes: list[asyncio.Queue[_Incoming]] = [asyncio.Queue() for _ in range(max(1, batch_workers))]
        self._workers: list[asyncio.Task[None]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._notices_waiting = asyncio.Event()
        self.connected = asyncio.Event()

    # -- connection ---------------------------------------------------------------------------------

    async def run(self) -> None:
        """Stay connected (reconnecting after broker restarts) and serve requests until cancelled."""
        if not self._workers:
            self._workers = [asyncio.create_task(self._work(inbox)) for inbox in self._inboxes]
        while True:
            try:
                async with self._connect() as client:
                    self._client = client
                    if self.subscribe:
                        await client.subscribe(self.request_filter, qos=1)
                    self.connected.set()
                    log.info(
                        "MQTT gateway connected to %s:%s as %s, %s",
                        self.target.host,
                        self.target.port,
                        self.client_id,
                        f"subscribed to {self.request_filter}" if self.subscribe else "publishing only",
                    )
                    async for message in client.messages:
                        self._receive(client, message)
            except aiomqtt.MqttError as e:
                log.warning("MQTT connection lost (%s); reconnecting", e)
            finally:
                self.connected.clear()
                self._client = None
            await asyncio.sleep(self.reconnect_delay)

    def _connect(self) -> aiomqtt.Client:
        tls_context = None
        if self.target.tls:
            tls_context = self.tls.context() if self.tls else ssl.create_default_context()
        # A persistent session: QoS 1 requests sent while fleetjobs restarts wait in the broker.
        # Not in a shared group: Mosquitto keeps handing a share of the group's messages to a member
        # whose persistent session is offline (they would wait for that instance to come back); with a
        # clean session its subscription ends with its connection and the others get everything.
        client = aiomqtt.Client(
            self.target.host,
            self.target.port,
            identifier=self.client_id,
            clean_session=self.shared_group is not None or not self.subscribe,
            tls_context=tls_context,
            keepalive=30,
            # Without it every publish waits on a delayed TCP acknowledgement (~40 ms each).
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        )
        # Acknowledge a request only once it has been handled (committed and answered), so a
        # crash in between leaves it with the broker, which delivers it again.  aiomqtt does not
        # expose paho's manual acknowledgement, hence the reach into its paho client.
        client._client.manual_ack_set(True)
        # No cap of the client's own on publishes awaiting their PUBACK: answers and notices go out
        # in batches of hundreds, and with a cap paho walks its whole table of in-flight messages
        # on every PUBACK to find the next one to send.
        client._client.max_inflight_messages_set(0)
        buffer_reads(client._client)
        return client

    def _ack(self, client: aiomqtt.Client, message: aiomqtt.Message) -> None:
        if message.qos > 0:
            client._client.ack(message.mid, message.qos)

    def spawn(self, coro: Any) -> None:
        """Run ``coro`` in the background; it is cancelled when the gateway closes."""
        self._spawn(coro)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def publish(self, topic: str, payload: bytes) -> None:
        """Publish at QoS 1 and return once the broker has acknowledged it; raise ``aiomqtt.MqttError``
        when it cannot (not connected, connection lost, no PUBACK in time), so that a caller that
        must not lose the message (the notice drain) keeps it for later."""
        (outcome,) = await self.publish_many([(topic, payload)])
        if outcome is not None:
            raise outcome

    async def publish_many(self, messages: list[tuple[str, bytes]]) -> list[BaseException | None]:
        """Publish at QoS 1, in this order; for each message None once the broker acknowledged it,
        or the ``aiomqtt.MqttError`` that says why not."""
        return await self._confirmed(self._send(messages))

    def _send(self, messages: list[tuple[str, bytes]]) -> _Sent:
        """Hand the messages to the client now (they go on the wire in this order).

        aiomqtt's own ``publish`` keeps one Event, one task and one timer per message and scans its
        whole table of pending calls on each (twice): with a thousand answers in flight that was a
        large share of the gateway's CPU.  Here the PUBACKs resolve plain futures, awaited together."""
        client = self._client
        sent = _Sent(client, [None] * len(messages), {})
        if client is None:
            for i, (topic, _) in enumerate(messages):
                sent.outcomes[i] = NotConnected(f"not connected to the broker; cannot publish to {topic}")
            return sent
        loop = asyncio.get_running_loop()
        pending: dict[int, Any] = client._pending_publishes
        for i, (topic, payload) in enumerate(messages):
            info = client._client.publish(topic, payload, qos=1)
            if info.rc != paho_mqtt.MQTT_ERR_SUCCESS:
                sent.outcomes[i] = aiomqtt.MqttCodeError(info.rc, f"could not publish to {topic}")
            elif not info.is_published():
                future: asyncio.Future[None] = loop.create_future()
                pending[info.mid] = _Confirmation(future)
                sent.waiting[i] = (info.mid, future)
        return sent

    async def _confirmed(self, sent: _Sent) -> list[BaseException | None]:
        """Wait (at most PUBLISH_TIMEOUT) for the PUBACKs of what ``_send`` handed over."""
        if not sent.waiting:
            return sent.outcomes
        futures = [future for _, future in sent.waiting.values()]
        try:
            await asyncio.wait(futures, timeout=PUBLISH_TIMEOUT)
        finally:
            pending: dict[int, Any] = sent.client._pending_publishes if sent.client else {}
            for i, (mid, future) in sent.waiting.items():
                if not future.done():
                    future.cancel()
                    if pending.get(mid) is not None and getattr(pending[mid], "future", None) is future:
                        del pending[mid]
                    sent.outcomes[i] = aiomqtt.MqttError(f"no PUBACK within {PUBLISH_TIMEOUT:g} s")
        return sent.outcomes

    # -- requests -----------------------------------------------------------------------------------

    def _receive(self, client: aiomqtt.Client, message: aiomqtt.Message) -> None:
        received = str(message.topic)
        # In a shared group, the bridge's copy: fleetjobs/requests/<thing>/... -> $aws/things/<thing>/...
        topic = request_topic(received) if self.shared_group is not None else received
        parsed = topics.parse(topic) if topic is not None else None
        if topic is None or parsed is None or isinstance(parsed, topics.NotARequest):
            self._ack(client, message)
            return
        payload = message.payload if isinstance(message.payload, bytes) else str(message.payload or "").encode()
        inbox = self._inboxes[zlib.crc32(parsed.thing_name.encode()) % len(self._inboxes)]
        inbox.put_nowait(_Incoming(client, message, topic, parsed, payload))

    async def _work(self, inbox: asyncio.Queue[_Incoming]) -> None:
        """Take whatever has arrived (a lone request is not kept waiting for company) and handle it
        as one batch; what arrives meanwhile makes the next batch."""
        while True:
            batch = [await inbox.get()]
            while len(batch) < MAX_BATCH and not inbox.empty():
                batch.append(inbox.get_nowait())
            try:
                await self._handle_batch(batch)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("failed to handle a batch of %d requests", len(batch))

    async def _handle_batch(self, batch: list[_Incoming]) -> None:
        now = self.clock.now()
        answers: list[tuple[_Incoming, str, bytes]] = []
        calls: list[DeviceCall] = []
        callers: list[tuple[_Incoming, str | None]] = []
        for item in batch:
            token: str | None = None
            try:
                self.device.admit(item.parsed.thing_name)
            except ServiceError as e:  # over its rate: answered before any parsing, as AWS does
                code, _ = codec.rejection_for(e)
                answers.append((item, "rejected", codec.rejected(code, e.message, _token_of(item.payload), now)))
                continue
            try:
                doc = codec.decode(item.payload)
                token = codec.client_token(doc)
                if isinstance(item.parsed, topics.InvalidTopic):
                    message = f"The topic {item.topic} does not map to any Jobs API"
                    answers.append((item, "rejected", codec.rejected("InvalidTopic", message, token, now)))
                    continue
                op = item.parsed.operation
                req = codec.build_request(op, item.parsed.thing_name, item.parsed.job_id, doc)
            except codec.InvalidJson as e:
                answers.append((item, "rejected", codec.rejected("InvalidJson", str(e), None, now)))
                continue
            except ServiceError as e:
                answers.append((item, "rejected", codec.rejected("InvalidRequest", e.message, token, now)))
                continue
            # The same request delivered again (after a crash before its PUBACK) gets the same answer.
            key = codec.request_key(item.topic, item.payload) if op in CHANGING and token is not None else None
            calls.append(DeviceCall(op, req, key))
            callers.append((item, token))
        waiting = await self._apply(calls, callers, answers) if calls else []
        self._answer(answers)
        delay = DB_RETRY_FIRST
        while waiting:
            # The database is unreachable: these requests stay unanswered and unacknowledged (the
            # broker keeps them, and delivers no more than its in-flight window meanwhile) and are
            # applied, in their order, once it is back.  The worker waits with them, so a thing's
            # later requests cannot overtake them.
            await asyncio.sleep(delay)
            delay = min(delay * 2, DB_RETRY_MAX)
            gone = [w for w in waiting if w[0][0].client is not self._client]
            if gone:
                # Their connection is gone, and with it the chance to acknowledge them: the broker
                # delivers them again (on the new connection of a persistent session).
                log.info("%d requests waiting for the database were left to the broker", len(gone))
                waiting = [w for w in waiting if w[0][0].client is self._client]
            if not waiting:
                break
            answers = []
            waiting = await self._apply([c for _, c in waiting], [w for w, _ in waiting], answers)
            self._answer(answers)
            if not waiting:
                log.info("the database is back: the requests that waited for it are answered")

    async def _apply(
        self,
        calls: list[DeviceCall],
        callers: list[tuple[_Incoming, str | None]],
        answers: list[tuple[_Incoming, str, bytes]],
    ) -> list[_Waiting]:
        """Apply the calls, add their answers to ``answers``; return those that wait for the database."""
        try:
            outcomes = await self.device.handle_batch(calls, admitted=True)
        except Exception:
            log.exception("internal error handling %d requests", len(calls))
            outcomes = [ServiceUnavailable("Internal error") for _ in calls]
        now = self.clock.now()
        waiting: list[_Waiting] = []
        for (item, token), call, outcome in zip(callers, calls, outcomes, strict=True):
            if isinstance(outcome, DatabaseUnavailable):
                waiting.append(((item, token), call))
            elif isinstance(outcome, ServiceError):
                code, state = codec.rejection_for(outcome)
                answers.append((item, "rejected", codec.rejected(code, outcome.message, token, now, state)))
            else:
                answers.append((item, "accepted", codec.accepted(outcome, token, now)))
        return waiting

    def _answer(self, answers: list[tuple[_Incoming, str, bytes]]) -> None:
        """Publish the answers now (so they go out before any later batch's), and acknowledge each
        request once the broker took its answer, in the background: the next batch does not wait
        for this one's PUBACKs."""
        if log.isEnabledFor(logging.DEBUG):
            for item, _, _ in answers:
                log.debug("handled request %s (gateway %s)", item.topic, self.client_id)
        if answers:
            sent = self._send([(f"{item.topic}/{kind}", body) for item, kind, body in answers])
            self._spawn(self._acknowledge(answers, sent))

    async def _acknowledge(self, answers: list[tuple[_Incoming, str, bytes]], sent: _Sent) -> None:
        outcomes = await self._confirmed(sent)
        for (item, _, _), error in zip(answers, outcomes, strict=True):
            if error is not None:
                # The answer did not reach the broker: no PUBACK either, so the broker delivers the
                # request again after the reconnect and it is answered then (from its record if it
                # changed something).
                log.warning("could not answer %s: %s", item.topic, error)
                continue
            self._ack(item.client, item.message)

    # -- notifications --------------------------------------------------------------------------------

    def on_domain_events(self, committed: list[Any]) -> None:
        """Committed changes: a device request's pending-list change is published at once; notices
        written by service-side changes wake the drain."""
        changed = [event for event in committed if isinstance(event, events.PendingChanged)]
        if changed:
            self._spawn(self._publish_changes(changed))
        if any(isinstance(event, events.NoticesQueued) for event in committed):
            self._notices_waiting.set()

    async def run_notices(self, drain: NoticeDrain, poll: float = 0.5) -> None:
        """Work through the durable notices (this instance's and, after their lease, dead ones')."""
        unreachable = 0  # failed polls in a row because the database is unreachable
        while True:
            try:
                await self.connected.wait()
                batch = await drain.take()
                unreachable = 0
                if batch is None:
                    self._notices_waiting.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._notices_waiting.wait(), timeout=poll)
                    continue
                failed = await self._publish_changes(batch.changes, strict=True)
                if failed:
                    # Nothing of the batch is deleted: its notices go out again once the broker is back.
                    log.warning(
                        "%d notifications not acknowledged (%s); they wait for the broker", len(failed), failed[0]
                    )
                    await drain.release(batch)
                    await asyncio.sleep(poll)
                    continue
                await drain.done(batch)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                if not database_unreachable(e):
                    log.exception("publishing pending-list notices failed; will retry")
                    await asyncio.sleep(poll)
                    continue
                # The notices are in the database: they wait for it, polled with backoff, one line
                # in the log per outage rather than a traceback per poll.
                if not unreachable:
                    log.warning("the database is unreachable (%r); notices wait for it", e)
                await asyncio.sleep(min(DB_RETRY_MAX, DB_RETRY_FIRST * 2**unreachable))
                unreachable += 1

    async def _publish_changes(
        self, changes: list[events.PendingChanged], *, strict: bool = False
    ) -> list[BaseException]:
        """Publish the notify / notify-next of each change, all in flight together; return the errors
        of the changes whose messages the broker did not all take.

        ``strict`` (the notice drain): that is all, the drain keeps those notices.  Otherwise (device
        requests' own changes, already answered) each such change becomes a durable notice, published
        once a connection is up (by any worker or instance)."""
        now = self.clock.now()
        messages: list[tuple[str, bytes]] = []
        owners: list[int] = []  # the change each message belongs to
        for n, change in enumerate(changes):
            thing = change.thing_name
            if change.notify:
                messages.append((topics.jobs_topic(thing, "notify"), notifications.notify_payload(change.listing, now)))
                owners.append(n)
            if change.notify_next:
                execution = change.execution
                if execution is not None:
                    execution = {**execution, "jobDocument": codec.document_object(execution.get("jobDocument"))}
                payload = notifications.notify_next_payload(execution, now)
                messages.append((topics.jobs_topic(thing, "notify-next"), payload))
                owners.append(n)
        outcomes = await self.publish_many(messages)
        failed: dict[int, BaseException] = {}
        for n, error in zip(owners, outcomes, strict=True):
            if error is not None:
                failed.setdefault(n, error)
        if strict or not failed:
            return list(failed.values())
        first = next(iter(failed.values()))
        log.warning("could not notify %d things now (%s); announced once the broker takes it", len(failed), first)
        for notify_next in (False, True):
            things = [changes[n].thing_name for n in failed if changes[n].notify_next is notify_next]
            if things:
                try:
                    await self.device.announce_later(things, notify_next)
                except Exception:
                    log.exception("could not keep the notifications of %d things for later", len(things))
        return list(failed.values())

    async def close(self) -> None:
        for task in [*self._workers, *self._tasks]:
            task.cancel()
        await asyncio.gather(*self._workers, *self._tasks, return_exceptions=True)
