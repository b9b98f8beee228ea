"""Buffered socket reads for the gateway's paho client.

paho reads every packet with at least three ``recv`` calls (the command byte, each byte of the
remaining length, then the body), and aiomqtt lets it read only a few packets per readiness event.
The gateway receives thousands of small packets a second (device requests, and a PUBACK for every
answer and notification it publishes), so those system calls, each wrapped in paho's error mapping,
were the largest single cost in its profile.  Here one ``recv`` takes whatever the kernel (or the
TLS layer) holds, up to :data:`CHUNK` bytes, and paho's small reads are served from that buffer;
``loop_read`` goes on until the buffer is empty, because the socket will not signal readiness for
bytes already taken out of it.

It replaces two methods on one paho client instance (``_sock_recv`` and ``loop_read``); paho's own
parsing, state and error handling are unchanged.
"""

from __future__ import annotations

import ssl
from typing import Any

import paho.mqtt.client as paho

CHUNK = 256 * 1024


class _Buffer:
    def __init__(self) -> None:
        self.sock: Any = None  # the socket the bytes came from (a reconnect starts afresh)
        self.data = b""
        self.pos = 0

    def remaining(self, sock: Any) -> int:
        return len(self.data) - self.pos if sock is self.sock else 0


def buffer_reads(client: paho.Client) -> None:
    """Make ``client`` read its socket in large chunks (see the module docstring)."""
    buf = _Buffer()
    original_loop_read = client.loop_read

    def sock_recv(bufsize: int) -> bytes:
        sock = client._sock
        if sock is None:
            raise ConnectionError("self._sock is None")
        if buf.remaining(sock) == 0:
            try:
                data = sock.recv(CHUNK)
            except ssl.SSLWantReadError as err:
                raise BlockingIOError() from err
            except ssl.SSLWantWriteError as err:
                client._call_socket_register_write()
                raise BlockingIOError() from err
            except AttributeError as err:
                raise ConnectionError() from err
            if not data:
                return b""  # the connection is closed: paho sees it as such
            buf.sock, buf.data, buf.pos = sock, data, 0
        start = buf.pos
        buf.pos = min(start + bufsize, len(buf.data))
        return buf.data[start : buf.pos]

    def loop_read(max_packets: int = 1) -> paho.MQTTErrorCode:
        rc = original_loop_read(max_packets)
        while rc == paho.MQTTErrorCode.MQTT_ERR_SUCCESS and buf.remaining(client._sock):
            rc = original_loop_read(max_packets)
        return rc

    client._sock_recv = sock_recv  # type: ignore[method-assign]
    client.loop_read = loop_read  # type: ignore[method-assign]
