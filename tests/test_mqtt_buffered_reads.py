"""The gateway's paho client reads its socket in large chunks (fleetjobs.mqtt.paho_reads).

A broker of the test's own (a plain asyncio server speaking just enough MQTT 3.1.1) sends many
packets in one write, which is what the gateway sees when a fleet answers a notify-next.  paho
alone would take three ``recv`` calls per packet; with buffered reads every packet still arrives,
in order, for a handful of calls, including the packets left in the buffer after the socket has
nothing more to say (no readiness event will come for those).
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiomqtt

from fleetjobs.mqtt.paho_reads import buffer_reads

COUNT = 500


def _length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def publish_packet(topic: str, payload: bytes) -> bytes:
    body = len(topic).to_bytes(2, "big") + topic.encode() + payload  # QoS 0: no packet id
    return b"\x30" + _length(len(body)) + body


class CountingSocket:
    """The client's socket, counting the ``recv`` calls made on it."""

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self.recvs = 0

    def recv(self, n: int) -> bytes:
        self.recvs += 1
        return self._sock.recv(n)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


async def _run(buffered: bool) -> tuple[list[str], int]:
    burst = b"".join(publish_packet(f"t/{i}", b"x" * (i % 50)) for i in range(COUNT))
    go = asyncio.Event()

    async def broker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)  # CONNECT
        writer.write(b"\x20\x02\x00\x00")  # CONNACK, accepted
        await writer.drain()
        await go.wait()
        writer.write(burst)  # every packet in one write
        await writer.drain()
        await reader.read(1024)  # hold the connection until the client leaves

    server = await asyncio.start_server(broker, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    topics: list[str] = []
    async with server, aiomqtt.Client("127.0.0.1", port, identifier="reads", keepalive=60) as client:
        if buffered:
            buffer_reads(client._client)
        counting = CountingSocket(client._client._sock)
        client._client._sock = counting  # type: ignore[assignment]
        go.set()
        async with asyncio.timeout(10):
            async for message in client.messages:
                topics.append(str(message.topic))
                if len(topics) == COUNT:
                    break
        client._client._sock = counting._sock
    return topics, counting.recvs


def test_packets_written_together_all_arrive_in_order_for_a_few_reads() -> None:
    topics, recvs = asyncio.run(_run(buffered=True))
    assert topics == [f"t/{i}" for i in range(COUNT)]
    assert recvs < 50, f"{recvs} recv calls for {COUNT} packets"


def test_without_buffering_paho_reads_each_packet_piecemeal() -> None:
    """The control: the same burst costs paho three calls a packet on its own."""
    topics, recvs = asyncio.run(_run(buffered=False))
    assert topics == [f"t/{i}" for i in range(COUNT)]
    assert recvs >= 3 * COUNT
