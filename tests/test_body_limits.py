"""Request bodies are bounded, and nothing unauthenticated is read into memory.

A request is refused on its headers when its Authorization header is missing or wrong, or when it
declares a body over the limit (1 MiB for every service today: the README's "Request size");
a chunked body is counted as it arrives and cut off at the limit. These tests talk to a real
``fleetjobs serve`` over raw sockets, so they see what a client on the wire sees: the answer comes
before the body has been sent, and the server's memory does not grow by the body's size.
"""

from __future__ import annotations

import json
import select
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
from botocore.exceptions import ClientError

from tests.conftest import Backend
from tests.fleet import thing_arn
from tests.harness import Server, unique
from tests.test_auth import sign

LIMIT = 1024 * 1024  # the documented request body limit
MiB = 1024 * 1024


@dataclass
class WireReply:
    status: int
    headers: dict[str, str]
    body: dict[str, Any]
    sent: int  # body bytes the client got to send before the answer came


def _chunked(data: Iterator[bytes]) -> Iterator[bytes]:
    for block in data:
        yield b"%x\r\n%s\r\n" % (len(block), block)
    yield b"0\r\n\r\n"


def _blocks(total: int, block: bytes) -> Iterator[bytes]:
    sent = 0
    while sent < total:
        piece = block[: total - sent]
        sent += len(piece)
        yield piece


def exchange(server: Server, head: bytes, body: Iterator[bytes] = iter(())) -> WireReply:
    """Send ``head``, then ``body`` piece by piece, but stop sending as soon as the server answers
    or closes (as a client streaming an upload does); return the parsed answer."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=60)
    try:
        sock.sendall(head)
        sent = 0
        pending = b""
        sock.setblocking(False)
        for piece in body:
            pending += piece
            while pending:
                readable, writable, _ = select.select([sock], [sock], [], 60)
                if readable or not writable:
                    break
                try:
                    n = sock.send(pending)
                except (BrokenPipeError, ConnectionResetError):
                    readable = [sock]
                    break
                sent += n
                pending = pending[n:]
            if readable or pending:
                break
        sock.setblocking(True)
        sock.settimeout(60)
        raw = b""
        while b"\r\n\r\n" not in raw:
            chunk = _recv(sock)
            if not chunk:
                raise AssertionError(f"connection closed without an answer after {sent} body bytes: {raw!r}")
            raw += chunk
        head_raw, _, rest = raw.partition(b"\r\n\r\n")
        lines = head_raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        while len(rest) < length:
            chunk = _recv(sock)
            if not chunk:
                break
            rest += chunk
        return WireReply(status, headers, json.loads(rest) if rest else {}, sent)
    finally:
        sock.close()


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(65536)
    except ConnectionResetError:  # the server closed with unread upload bytes: what it sent is already here
        return b""


def request_head(server: Server, method: str, path: str, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{server.port}"]
    lines += [f"{k}: {v}" for k, v in headers.items() if k.lower() != "host"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def peak_rss(pid: int) -> int:
    """The process's high-water mark of resident memory (Linux: VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/<pid>/status")


def create_job_body(document: str) -> bytes:
    return json.dumps({"targets": [thing_arn(unique("t"))], "document": document}).encode()


def assert_error(reply: WireReply, status: int, code: str) -> None:
    assert (reply.status, reply.headers.get("x-amzn-errortype")) == (status, code), reply
    assert reply.body.get("message"), reply


# --- refused on the headers ---------------------------------------------------------------------


def test_unsigned_post_declaring_a_huge_body_is_refused_before_any_of_it_is_sent(server: Server) -> None:
    head = request_head(
        server, "POST", f"/things/{unique('big')}", {"Content-Type": "application/json", "Content-Length": "419430400"}
    )
    reply = exchange(server, head)  # not one body byte: an answer must come on the headers alone
    assert_error(reply, 403, "MissingAuthenticationTokenException")
    assert reply.headers.get("connection") == "close"


def test_signed_request_declaring_a_body_over_the_limit_is_refused_before_any_of_it_is_sent(server: Server) -> None:
    path = f"/jobs/{unique('j')}"
    headers = sign(server, "PUT", path, b"{}")  # a valid key and date: only the size is wrong
    headers["Content-Length"] = str(LIMIT + 1)
    reply = exchange(server, request_head(server, "PUT", path, headers))
    assert_error(reply, 413, "RequestEntityTooLargeException")
    assert reply.headers.get("connection") == "close"


def test_post_with_an_unknown_access_key_is_refused_before_its_body(server: Server) -> None:
    path = f"/things/{unique('big')}"
    headers = sign(server, "POST", path, b"{}")
    headers["Authorization"] = headers["Authorization"].replace("AKIDFLEETJOBSTEST01", "AKIDNOBODYKNOWS00000")
    headers["Content-Length"] = str(200 * MiB)
    reply = exchange(server, request_head(server, "POST", path, headers))
    assert_error(reply, 403, "UnrecognizedClientException")


# --- memory: an unsigned upload is not taken in --------------------------------------------------


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_unsigned_200_mib_upload_does_not_grow_server_memory(backends: Backend, framing: str) -> None:
    srv = backends.server().start()
    try:
        assert srv.proc is not None
        proc = psutil.Process(srv.proc.pid)
        size = 200 * MiB
        framing_header = {"Transfer-Encoding": "chunked"} if framing == "chunked" else {"Content-Length": str(size)}
        head = request_head(
            srv, "POST", f"/things/{unique('big')}", {"Content-Type": "application/json", **framing_header}
        )
        rss_before, peak_before = proc.memory_info().rss, peak_rss(proc.pid)
        blocks = _blocks(size, b"x" * MiB)
        reply = exchange(srv, head, _chunked(blocks) if framing == "chunked" else blocks)
        rss_after, peak_after = proc.memory_info().rss, peak_rss(proc.pid)

        assert_error(reply, 403, "MissingAuthenticationTokenException")
        grown = max(rss_after - rss_before, peak_after - peak_before)
        assert grown < 32 * MiB, f"server memory grew by {grown / MiB:.1f} MiB for a {size // MiB} MiB upload"
        # ...and the server still serves (the refusal cost it nothing).
        assert srv.client("iot").list_things()["ResponseMetadata"]["HTTPStatusCode"] == 200
    finally:
        srv.stop()


# --- signed bodies over the limit ------------------------------------------------------------------


def test_signed_chunked_body_over_the_limit_is_cut_off_at_the_limit(server: Server) -> None:
    path = f"/jobs/{unique('j')}"
    body = create_job_body(json.dumps({"pad": "x" * (LIMIT + 100)}))  # correctly signed, just too big
    headers = sign(server, "PUT", path, body)
    headers["Transfer-Encoding"] = "chunked"  # no Content-Length: the server has to count
    pieces = (body[i : i + 64 * 1024] for i in range(0, len(body), 64 * 1024))
    reply = exchange(server, request_head(server, "PUT", path, headers), _chunked(pieces))
    assert_error(reply, 413, "RequestEntityTooLargeException")


def test_boto3_create_job_with_a_body_over_the_limit_gets_413(server: Server) -> None:
    iot = server.client("iot", validate=False)
    job_id = unique("j")
    with pytest.raises(ClientError) as caught:
        iot.create_job(jobId=job_id, targets=[thing_arn(unique("t"))], document="x" * (LIMIT + 1))
    err = caught.value.response
    assert (err["ResponseMetadata"]["HTTPStatusCode"], err["Error"]["Code"]) == (413, "RequestEntityTooLargeException")
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.describe_job(jobId=job_id)


def test_iot_data_payload_over_the_limit_is_the_modelled_exception(server: Server) -> None:
    data = server.client("iot-data")
    with pytest.raises(data.exceptions.RequestEntityTooLargeException) as caught:
        data.publish(topic=f"big/{unique('t')}", payload=b"x" * (LIMIT + 1))
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 413


# --- legal bodies still work ----------------------------------------------------------------------


@pytest.mark.parametrize("filler", ["x", "\U0001f680"], ids=["ascii", "astral"])
def test_job_document_at_the_model_limit_still_works(iot: Any, filler: str) -> None:
    """32768 characters is JobDocument's max; astral characters reach the server as 12-byte JSON
    escapes (about 390 KB of body), which a cap of 32 KB and slack would wrongly refuse."""
    skeleton = json.dumps({"p": ""}, ensure_ascii=False)
    document = json.dumps({"p": filler * (32768 - len(skeleton))}, ensure_ascii=False)
    assert len(document) == 32768
    thing = unique("t")
    iot.create_thing(thingName=thing)
    job_id = unique("j")
    iot.create_job(jobId=job_id, targets=[thing_arn(thing)], document=document)
    assert iot.get_job_document(jobId=job_id)["document"] == document
