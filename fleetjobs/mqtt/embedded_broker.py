"""The zero-setup MQTT broker that runs inside ``fleetjobs serve``.

It is amqtt 0.12.1 with four changes, all made by subclassing, by wrapping the connection's reader, or by amqtt's own
plugin interface:

* **``$aws/...`` publishes are routed.** Stock amqtt answers any client publish to a topic starting with ``$``
  by logging ``[MQTT-4.7.2-1]`` and *leaving the client's message loop*, so the connection stays open but nothing
  the client sends is routed any more. MQTT 4.7.2 only says the server *should* stop clients from using ``$`` topics
  to talk to each other; the whole AWS IoT Jobs device API lives under ``$aws/``, so this broker routes client
  publishes to ``$aws/...`` and still drops (without ending the client's loop) publishes to ``$SYS/...`` and any
  other ``$`` topic. Subscription matching needed no change: amqtt already refuses ``$`` topics only to filters
  that *start* with ``+`` or ``#`` (so ``#`` does not see ``$aws/...`` but ``$aws/things/+/jobs/#`` does).
* **Persistent sessions work.** amqtt neither queues QoS 1/2 messages for, nor keeps, a disconnected session that
  its ``AnonymousAuthPlugin`` marked anonymous; :class:`CertificateAuthPlugin` never marks sessions anonymous, so
  ``clean_session=False`` subscribers get what was published while they were away.
* **Mutual TLS with per-thing isolation (optional).** With ``ca_file``/``cert_file``/``key_file`` set, clients must
  present a certificate signed by the CA; its subject CN is the client's identity. :class:`ThingTopicAclPlugin`
  lets a device identity publish, subscribe and receive only under ``$aws/things/<its CN>/`` and the service
  identity (``fleetjobs-service``) anywhere under ``$aws/``. This is the same rule as the Mosquitto ACL that
  ``fleetjobs broker-config mosquitto`` writes.
* **Malformed topic names close the connection.** MQTT 3.1.1 requires it for a PUBLISH topic name that is empty
  (§4.7.3), not well-formed UTF-8 or contains U+0000 (§1.5.3), or contains ``+`` / ``#`` (§3.3.2); amqtt instead
  turns undecodable bytes into the text of their ``repr`` (``b'...'``) and routes that, accepts empty and NUL topics,
  and answers wildcards by dropping the packet's header but not its payload, after which it parses payload bytes as
  packets. :class:`_TopicCheckingReader` checks every PUBLISH's topic as it comes off the socket and ends the
  connection before amqtt parses the packet.

Without TLS (the default: plain TCP on 127.0.0.1) there is **no authentication and no ACL**: any local process can
read and write every thing's topics. That mode is for loopback development only.

Limitations, by design or inherited from amqtt 0.12.1:

* **MQTT 3.1.1 only.** amqtt answers a CONNECT with protocol level 5 with CONNACK "unacceptable protocol version";
  MQTT 5 clients (e.g. ``awsiotsdk``'s ``IotJobsClientV2``) must use an external broker such as Mosquitto.
* Sessions, subscriptions and queued messages live in memory: a restart of the broker (i.e. of ``fleetjobs
  serve``) forgets them; clients see ``session present = 0`` on reconnect and must subscribe again (the AWS SDKs do).
* A message is delivered at the *subscription's* QoS, not ``min(publish QoS, subscription QoS)`` (amqtt behaviour).
* Messages queued for an offline persistent session are not bounded in number; sessions expire after
  ``session_expiry_seconds`` offline.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, NoReturn

from amqtt.adapters import ReaderAdapter, WriterAdapter
from amqtt.broker import Broker
from amqtt.contexts import Action, ListenerConfig
from amqtt.errors import MQTTError
from amqtt.events import BrokerEvents
from amqtt.mqtt.connack import NOT_AUTHORIZED, ConnackPacket
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.session import Session

__all__ = [
    "DEFAULT_SERVICE_IDENTITY",
    "CertificateAuthPlugin",
    "EmbeddedBroker",
    "ThingTopicAclPlugin",
    "may_access",
]

logger = logging.getLogger(__name__)

DEFAULT_SERVICE_IDENTITY: Final = "fleetjobs-service"

# Keys in amqtt's Session.attributes (the dict amqtt reserves for extensions).
_IDENTITY_KEY: Final = "fleetjobs.identity"
_CONNECT_SNAPSHOT_KEY: Final = "fleetjobs.connect-fields"
# The fields amqtt copies from a reconnecting client's CONNECT onto the stored persistent session
# (Broker._initialize_client_session) before anyone can check who is connecting; see _refuse_and_restore.
_CONNECT_FIELDS: Final = ("will_flag", "will_message", "will_topic", "will_qos", "keep_alive", "username", "password")
_LISTENER: Final = "default"

# The certificate identity of the connection whose CONNECT amqtt is processing in the current task (amqtt serves
# each connection in its own task, so a ContextVar cannot leak between connections); read by the _delete_session
# guard, which amqtt calls with nothing but a client id.
_CONNECTING_IDENTITY: ContextVar[str | None] = ContextVar("fleetjobs_connecting_identity", default=None)


_PUBLISH: Final = 3  # MQTT control packet type


class _MalformedPacket(ConnectionResetError):
    """The client sent a packet MQTT says the server must answer by closing the connection.

    A ``ConnectionResetError`` on purpose: amqtt's ``read_or_raise`` turns it into ``NoDataError``, so every reader of
    the stream (the CONNECT parser, the message loop) takes its "the client went away" path and closes the
    connection; any other exception could be caught as a bad packet and parsing resumed mid-packet.
    """


def publish_topic_problem(topic: bytes) -> str | None:
    """Why ``topic`` (a PUBLISH topic name as sent) is not a valid MQTT 3.1.1 topic name, or None if it is."""
    if not topic:
        return "empty topic name [MQTT-4.7.3-1]"
    try:
        text = topic.decode("utf-8")  # strict: also refuses overlong forms and encoded surrogates
    except UnicodeDecodeError:
        return "topic name is not well-formed UTF-8 [MQTT-1.5.3-1]"
    if "\x00" in text:
        return "topic name contains U+0000 [MQTT-1.5.3-2]"
    if "+" in text or "#" in text:
        return "topic name contains a wildcard character [MQTT-3.3.2-2]"
    return None


class _TopicCheckingReader(ReaderAdapter):
    """Wraps a connection's reader: hands amqtt each packet's bytes only after its PUBLISH topic name was checked.

    It reads the fixed header and, for a PUBLISH, the topic name ahead of amqtt, then lets the rest of the packet
    (packet id, payload) through as amqtt asks for it, so a large payload is streamed, not buffered. Doing it here,
    below amqtt's parser, is what keeps a bad packet from being handled at all: amqtt decodes topic names lossily and
    recovers from some errors by resuming the read in the middle of the packet, so nothing after the parser could
    tell a malformed topic from a real one or get the stream back in step. A bad topic raises
    :class:`_MalformedPacket` (the connection is closed, its will published as for any abnormal end).
    """

    def __init__(self, inner: ReaderAdapter, peer: str) -> None:
        self._inner = inner
        self._peer = peer
        self._ready = bytearray()  # checked bytes of the current packet, not yet read by amqtt
        self._unchecked = 0  # bytes of the current packet after those, which need no check

    async def read(self, n: int = -1) -> bytes:
        if n < 0:  # "until EOF": not used by amqtt's MQTT parser, which reads exact lengths
            rest = bytes(self._ready) + await self._inner.read(-1)
            self._ready.clear()
            return rest
        out = bytearray()
        while len(out) < n:
            if self._ready:
                take = min(n - len(out), len(self._ready))
                out += self._ready[:take]
                del self._ready[:take]
            elif self._unchecked:
                take = min(n - len(out), self._unchecked)
                out += await self._exactly(take)
                self._unchecked -= take
            else:
                await self._next_packet()
        return bytes(out)

    async def _next_packet(self) -> None:
        """Read the next packet's fixed header (and a PUBLISH's topic name) into ``_ready``; check the topic."""
        head = bytearray(await self._exactly(1))
        remaining, multiplier = 0, 1
        for _ in range(4):
            byte = (await self._exactly(1))[0]
            head.append(byte)
            remaining += (byte & 0x7F) * multiplier
            multiplier *= 128
            if not byte & 0x80:
                break
        else:
            self._refuse("remaining length longer than four bytes [MQTT-2.2.3]")
        if head[0] >> 4 != _PUBLISH:
            self._ready += head
            self._unchecked = remaining
            return
        if remaining < 2:
            self._refuse("PUBLISH too short for a topic name")
        length_bytes = await self._exactly(2)
        length = int.from_bytes(length_bytes, "big")
        if 2 + length > remaining:
            self._refuse("topic name longer than the packet")
        topic = await self._exactly(length) if length else b""
        problem = publish_topic_problem(topic)
        if problem is not None:
            self._refuse(f"{problem}: {topic!r}")
        self._ready += head + length_bytes + topic
        self._unchecked = remaining - 2 - length

    async def _exactly(self, n: int) -> bytes:
        """``n`` bytes from the connection; a short read is the end of the stream, as amqtt's own reader reports it."""
        data = await self._inner.read(n)
        if len(data) < n:
            raise asyncio.IncompleteReadError(data, n)
        return data

    def _refuse(self, reason: str) -> NoReturn:
        logger.warning("closing MQTT connection from %s: %s", self._peer, reason)
        raise _MalformedPacket(reason)

    def feed_eof(self) -> None:
        self._inner.feed_eof()


class _SessionOwnedByAnother(Exception):
    """A clean-session CONNECT would have deleted a session that belongs to another certificate identity."""


def _is_dollar_topic_clients_may_publish(topic: str) -> bool:
    """Client publishes to ``$`` topics are allowed only under ``$aws/`` (the AWS IoT reserved topics)."""
    return topic.split("/", 1)[0] == "$aws"


def may_access(identity: str, topic: str, service_identity: str = DEFAULT_SERVICE_IDENTITY) -> bool:
    """The ACL: may ``identity`` publish to / subscribe to / receive ``topic`` (a topic name or filter)?

    A device may use ``$aws/things/<identity>/...`` and nothing else (not even filters that would match its own
    topics among others', like ``$aws/things/+/...``); the service identity may use anything under ``$aws/``.
    Checking filters level by level (rather than by string prefix) matters: ``$aws/things/a`` must not grant
    ``$aws/things/ab/...``.
    """
    levels = topic.split("/")
    if identity == service_identity:
        return levels[0] == "$aws"
    return len(levels) >= 4 and levels[0] == "$aws" and levels[1] == "things" and levels[2] == identity


def _identity_is_valid(identity: str) -> bool:
    """An identity becomes a topic level, so it must not be able to act as a wildcard or span levels."""
    return bool(identity) and not any(c in identity for c in "/+#\0") and not identity.startswith("$")


def _peer_identity(writer: WriterAdapter) -> str | None:
    """The subject CN of the verified client certificate on this connection, or None if there is none (or several).

    amqtt hands the broker a WriterAdapter whose ``get_ssl_info()`` is the asyncio transport's ``ssl_object``; with
    ``CERT_REQUIRED`` the handshake has already verified the chain, so ``getpeercert()`` is the trusted subject.
    amqtt also stores that object as ``session.ssl_object``, but only on a *new* session: a client resuming a
    persistent session gets the stored session, whose ``ssl_object`` belongs to an earlier connection. That is why
    the identity is read here, from the connection, and not from the session in an auth plugin.
    """
    ssl_object = writer.get_ssl_info()
    if ssl_object is None:
        return None
    cert = ssl_object.getpeercert()
    if not cert:
        return None
    common_names = [value for rdn in cert.get("subject", ()) for key, value in rdn if key == "commonName"]
    if len(common_names) != 1:
        return None
    return str(common_names[0])


class CertificateAuthPlugin(BaseAuthPlugin):
    """amqtt auth plugin: admits a client whose connection carried a valid certificate identity (TLS mode) or anyone
    (plain mode).

    The real checks happen in :meth:`_FleetjobsBroker._initialize_client_session`, before amqtt touches the session
    table; this plugin exists because amqtt refuses every client when no auth plugin answers, and because amqtt's
    stock ``AnonymousAuthPlugin`` marks sessions anonymous, which disables persistent sessions.
    """

    @dataclass
    class Config:
        """``require_identity``: True when TLS with client certificates is on."""

        require_identity: bool = False

    async def authenticate(self, *, session: Session) -> bool | None:
        session.is_anonymous = False
        if self.config.require_identity:
            return bool(session.attributes.get(_IDENTITY_KEY))
        return True


class ThingTopicAclPlugin(BaseTopicPlugin):
    """amqtt topic-checking plugin enforcing :func:`may_access` for publish, subscribe and receive (TLS mode only).

    Receive is checked too (amqtt calls it for every delivery), as defence in depth: a delivery outside the device's
    namespace would need a subscription that the subscribe check should already have refused.
    """

    @dataclass
    class Config:
        """``service_identity``: the certificate CN allowed to use all of ``$aws/#``."""

        service_identity: str = DEFAULT_SERVICE_IDENTITY

    async def topic_filtering(
        self, *, session: Session | None = None, topic: str | None = None, action: Action | None = None
    ) -> bool | None:
        if session is None or not topic:
            return False
        identity = session.attributes.get(_IDENTITY_KEY)
        if not identity:
            return False
        allowed = may_access(identity, topic, self.config.service_identity)
        if not allowed:
            self.context.logger.info(f"ACL: {identity!r} may not {action} {topic!r}")
        return allowed


class _FleetjobsBroker(Broker):
    """amqtt's Broker with ``$aws`` routing, certificate identities and connect-time checks (see module docstring)."""

    def __init__(self, config: dict[str, Any], *, tls: bool, service_identity: str) -> None:
        super().__init__(config)
        self._tls = tls
        self._service_identity = service_identity

    async def _client_connected(self, listener_name: str, reader: ReaderAdapter, writer: WriterAdapter) -> None:
        """Every connection (plain or TLS) reads through :class:`_TopicCheckingReader`, from its CONNECT on."""
        peer = writer.get_peer_info()
        where = f"{peer[0]}:{peer[1]}" if peer else "an unknown peer"
        await super()._client_connected(listener_name, _TopicCheckingReader(reader, where), writer)

    @staticmethod
    def _create_ssl_context(listener: ListenerConfig) -> ssl.SSLContext:
        """amqtt asks for client certificates but accepts connections without one (CERT_OPTIONAL); require them."""
        context = Broker._create_ssl_context(listener)
        context.verify_mode = ssl.CERT_REQUIRED
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context

    async def _initialize_client_session(
        self,
        reader: ReaderAdapter,
        writer: WriterAdapter,
        remote_address: str,
        remote_port: int,
    ) -> tuple[BrokerProtocolHandler, Session]:
        """Bind the connection's certificate identity to the session and refuse what the identity may not do.

        Checked here, not in an auth plugin, because amqtt's auth step runs *after* it has looked the client id up:
        by then a connection could have resumed (and, via take-over, disconnected) another identity's persistent
        session. Refused: no identity in TLS mode; a client id whose stored session belongs to another identity; a
        will topic the identity could not publish to (amqtt publishes wills without any ACL check).
        """
        identity: str | None = None
        if self._tls:
            identity = _peer_identity(writer)
        token = _CONNECTING_IDENTITY.set(identity)
        try:
            handler, session = await super()._initialize_client_session(reader, writer, remote_address, remote_port)
        except _SessionOwnedByAnother as exc:
            await self._refuse(writer, str(exc))
        finally:
            _CONNECTING_IDENTITY.reset(token)
        reason = self._refusal_reason(session, identity)
        if reason is not None:
            self._restore(session)
            await self._refuse(writer, f"client {session.client_id!r}: {reason}")
        if self._tls:
            session.attributes[_IDENTITY_KEY] = identity
        session.attributes[_CONNECT_SNAPSHOT_KEY] = {name: getattr(session, name) for name in _CONNECT_FIELDS}
        return handler, session

    def _refusal_reason(self, session: Session, identity: str | None) -> str | None:
        if self._tls:
            if identity is None or not _identity_is_valid(identity):
                return f"no usable certificate identity (CN {identity!r})"
            owner = session.attributes.get(_IDENTITY_KEY)
            if owner is not None and owner != identity:
                return f"client id {session.client_id!r} has a session owned by another identity"
        if session.will_flag and session.will_topic is not None:
            topic = session.will_topic
            if not topic or "+" in topic or "#" in topic:
                return f"invalid will topic {topic!r}"
            if topic.startswith("$") and not _is_dollar_topic_clients_may_publish(topic):
                return f"will topic {topic!r} is reserved"
            if self._tls and identity is not None and not may_access(identity, topic, self._service_identity):
                return f"{identity!r} may not publish its will to {topic!r}"
        return None

    async def _delete_session(self, client_id: str) -> None:
        """amqtt deletes the stored session of a clean-session CONNECT's client id before any auth check; in TLS mode
        refuse instead when that session belongs to another identity, so a device cannot wipe another's session.
        """
        if self._tls:
            stored = self._sessions.get(client_id)
            owner = stored[0].attributes.get(_IDENTITY_KEY) if stored is not None else None
            if owner is not None and owner != _CONNECTING_IDENTITY.get():
                raise _SessionOwnedByAnother(f"client id {client_id!r} has a session owned by another identity")
        await super()._delete_session(client_id)

    @staticmethod
    def _restore(session: Session) -> None:
        """Undo amqtt's copy of a refused CONNECT onto a resumed stored session.

        ``session.parent == 1`` means amqtt resumed a stored session and already overwrote its will, keep-alive and
        credentials with the refused client's; put back the values of the owner's last accepted CONNECT so that a
        refused client cannot plant a will in someone else's session.
        """
        snapshot = session.attributes.get(_CONNECT_SNAPSHOT_KEY)
        if session.parent == 1 and snapshot is not None:
            for name, value in snapshot.items():
                setattr(session, name, value)

    @staticmethod
    async def _refuse(writer: WriterAdapter, reason: str) -> NoReturn:
        """Answer CONNACK 5 (not authorized), close, and raise MQTTError.

        amqtt's ``_client_connected`` treats the MQTTError as a failed CONNECT and drops the connection before the
        session table, take-over or auth are touched.
        """
        logger.warning("refusing MQTT connection: %s", reason)
        try:
            await ConnackPacket.build(0, NOT_AUTHORIZED).to_stream(writer)
        finally:
            await writer.close()
        raise MQTTError(f"connection refused: {reason}")

    async def _publish_retained_messages_for_subscription(
        self, subscription: tuple[str, int], session: Session
    ) -> None:
        """Send retained messages only for filters this session is actually subscribed to.

        On every CONNECT amqtt 0.12.1 calls this for *every* filter any client has subscribed to, so a client that
        never subscribed to anything received all retained messages matching other clients' filters, past the ACL.
        """
        topic_filter, _qos = subscription
        subscribers = self._subscriptions.get(topic_filter, ())
        if any(subscriber.client_id == session.client_id for subscriber, _ in subscribers):
            await super()._publish_retained_messages_for_subscription(subscription, session)

    async def _handle_message_delivery(
        self,
        client_session: Session,
        handler: BrokerProtocolHandler,
        wait_deliver: asyncio.Future[Any],
    ) -> bool:
        """Route client publishes to ``$aws/...``; drop other ``$`` publishes but keep serving the client.

        Everything that is not a wildcard-free ``$`` topic goes to amqtt unchanged. For ``$`` topics this repeats
        amqtt's steps (event, ACL, broadcast, retain) minus its blanket ``$`` refusal, whose ``return False`` ends
        the client's message loop.
        """
        app_message = wait_deliver.result()
        topic = app_message.topic if app_message is not None else None
        if not topic or not topic.startswith("$") or "+" in topic or "#" in topic:
            return await super()._handle_message_delivery(client_session, handler, wait_deliver)

        await self.plugins_manager.fire_event(
            BrokerEvents.MESSAGE_RECEIVED, client_id=client_session.client_id, message=app_message
        )
        if not _is_dollar_topic_clients_may_publish(topic):
            logger.info("dropping publish from %r to reserved topic %r", client_session.client_id, topic)
            return True
        if not await self._topic_filtering(client_session, topic=topic, action=Action.PUBLISH):
            logger.info("%r not allowed to publish to %r", client_session.client_id, topic)
            return True
        await self.plugins_manager.fire_event(
            BrokerEvents.MESSAGE_BROADCAST, client_id=client_session.client_id, message=app_message
        )
        await self._broadcast_message(client_session, topic, app_message.data)
        if app_message.publish_packet and app_message.publish_packet.retain_flag:
            await self.retain_message(client_session, topic, app_message.data, app_message.qos)
        return True


class EmbeddedBroker:
    """An in-process MQTT 3.1.1 broker for the fleetjobs device plane (see the module docstring for what it does).

    ``port=0`` binds a free port; read the actual one from :attr:`port` after :meth:`start`. TLS is on when
    ``ca_file``, ``cert_file`` and ``key_file`` are all given (giving only some is an error, so a typo cannot silently
    fall back to the unauthenticated mode).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 1883,
        *,
        ca_file: str | Path | None = None,
        cert_file: str | Path | None = None,
        key_file: str | Path | None = None,
        service_identity: str = DEFAULT_SERVICE_IDENTITY,
        session_expiry_seconds: int | None = 3600,
    ) -> None:
        tls_files = (ca_file, cert_file, key_file)
        if any(f is not None for f in tls_files) and not all(f is not None for f in tls_files):
            raise ValueError("TLS needs ca_file, cert_file and key_file together")
        self.host = host
        self._requested_port = port
        self.ca_file = str(ca_file) if ca_file is not None else None
        self.cert_file = str(cert_file) if cert_file is not None else None
        self.key_file = str(key_file) if key_file is not None else None
        self.service_identity = service_identity
        self.session_expiry_seconds = session_expiry_seconds
        self._broker: _FleetjobsBroker | None = None
        self._port: int | None = None

    @property
    def tls(self) -> bool:
        """Whether clients must connect over TLS with a client certificate (and the ACL applies)."""
        return self.ca_file is not None

    @property
    def port(self) -> int:
        """The bound port (differs from the requested one when that was 0); the requested one before start()."""
        return self._port if self._port is not None else self._requested_port

    @property
    def running(self) -> bool:
        return self._broker is not None

    def _config(self) -> dict[str, Any]:
        host = f"[{self.host}]" if ":" in self.host else self.host
        listener: dict[str, Any] = {"type": "tcp", "bind": f"{host}:{self._requested_port}"}
        plugins: dict[str, Any] = {
            f"{__name__}.CertificateAuthPlugin": {"require_identity": self.tls},
        }
        if self.tls:
            listener |= {"ssl": True, "cafile": self.ca_file, "certfile": self.cert_file, "keyfile": self.key_file}
            plugins[f"{__name__}.ThingTopicAclPlugin"] = {"service_identity": self.service_identity}
        return {
            "listeners": {_LISTENER: listener},
            "plugins": plugins,
            "session_expiry_interval": self.session_expiry_seconds,
        }

    async def start(self) -> None:
        """Bind and start serving. Raises amqtt's BrokerError if the port cannot be bound or the TLS files are bad."""
        if self._broker is not None:
            raise RuntimeError("EmbeddedBroker already started")
        broker = _FleetjobsBroker(self._config(), tls=self.tls, service_identity=self.service_identity)
        await broker.start()
        self._broker = broker
        server = broker._servers[_LISTENER].instance
        sockets = getattr(server, "sockets", None) or ()
        self._port = sockets[0].getsockname()[1] if sockets else self._requested_port
        logger.info(
            "embedded MQTT broker listening on %s:%s (%s)", self.host, self._port, "mTLS" if self.tls else "plain"
        )

    async def stop(self) -> None:
        """Disconnect all clients and close the listener; sessions and queued messages are discarded. Idempotent."""
        broker, self._broker = self._broker, None
        if broker is not None:
            await broker.shutdown()
        self._port = None

    async def __aenter__(self) -> EmbeddedBroker:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()
