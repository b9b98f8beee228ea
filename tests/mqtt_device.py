"""A device on the Jobs MQTT API, for tests: paho-mqtt, correlating responses by clientToken."""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from typing import Any

import paho.mqtt.client as mqtt


class Device:
    def __init__(self, host: str, port: int, thing: str) -> None:
        self.thing = thing
        self.base = f"$aws/things/{thing}/jobs"
        self.messages: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
        self._responses: dict[str, queue.Queue[tuple[str, dict[str, Any]]]] = {}
        self._lock = threading.Lock()
        self._seen: list[tuple[str, dict[str, Any]]] = []
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"dev-{thing}-{uuid.uuid4().hex[:6]}")
        self.client.on_message = self._on_message
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *a, **k: subscribed.set()
        self.client.connect(host, port)
        self.client.loop_start()
        self.client.subscribe(f"{self.base}/#", qos=1)
        if not subscribed.wait(10):
            raise TimeoutError("subscription not acknowledged")

    def _on_message(self, _client: Any, _userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            doc = json.loads(msg.payload)
        except (ValueError, RecursionError):  # e.g. its own request echoed back (it hears jobs/#)
            return
        topic = msg.topic
        token = doc.get("clientToken") if isinstance(doc, dict) else None
        with self._lock:
            waiter = self._responses.get(token) if token else None
        if waiter is not None and (topic.endswith("/accepted") or topic.endswith("/rejected")):
            waiter.put((topic, doc))
        else:
            self.messages.put((topic, doc))

    def send(self, suffix: str, payload: dict[str, Any] | None = None, *, token: str | None = None) -> Any:
        """Publish a request now; returns a function that waits for its response.  ``token``: the
        clientToken to send (default: a fresh one), as firmware that reuses tokens would."""
        token = token or uuid.uuid4().hex
        waiter: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
        with self._lock:
            self._responses[token] = waiter
        body = json.dumps({**(payload or {}), "clientToken": token}).encode()
        self.client.publish(f"{self.base}/{suffix}", body, qos=1)

        def wait(timeout: float = 10) -> tuple[str, dict[str, Any]]:
            topic, doc = waiter.get(timeout=timeout)
            with self._lock:
                self._responses.pop(token, None)
            return topic.rsplit("/", 1)[1], doc

        return wait

    def request(
        self, suffix: str, payload: dict[str, Any] | None = None, timeout: float = 10, *, token: str | None = None
    ) -> tuple[str, dict[str, Any]]:
        """Publish a request; return ("accepted" | "rejected", response document)."""
        return self.send(suffix, payload, token=token)(timeout)

    def raw_response(self, suffix: str, payload: bytes, timeout: float = 10) -> tuple[str, dict[str, Any]]:
        """For payloads that carry no clientToken: wait for the first response on the topic."""
        self.client.publish(f"{self.base}/{suffix}", payload, qos=1)
        return self.wait_for(lambda t, d: t.startswith(f"{self.base}/{suffix}/"), timeout)

    def wait_for(self, match: Any, timeout: float = 10) -> tuple[str, dict[str, Any]]:
        """The first message (already received or arriving within ``timeout``) that matches; others stay."""
        deadline = time.monotonic() + timeout
        while True:
            for i, (topic, doc) in enumerate(self._seen):
                if match(topic, doc):
                    return self._seen.pop(i)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no matching message")
            try:
                self._seen.append(self.messages.get(timeout=min(remaining, 0.1)))
            except queue.Empty:
                continue

    def drain(self) -> list[tuple[str, dict[str, Any]]]:
        out, self._seen = self._seen, []
        while True:
            try:
                out.append(self.messages.get_nowait())
            except queue.Empty:
                return out

    def until_answered(self, attempts: int = 60) -> None:
        """Ask (a request that changes nothing) until a gateway answers: it is up and subscribed."""
        for _ in range(attempts):
            try:
                self.request("get", timeout=0.5)
                return
            except queue.Empty:
                continue
        raise TimeoutError("no gateway answered")

    def close(self) -> None:
        # Disconnect first: the network thread then ends at once, instead of loop_stop waiting
        # out its select timeout (about a second per device).
        self.client.disconnect()
        self.client.loop_stop()
