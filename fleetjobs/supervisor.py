"""``serve`` with several worker processes on one host.

One Python process uses one core; on PostgreSQL the work (HTTP requests, device requests, rollout
loops) spreads over several because every process already behaves as one instance among many (the
database decides, nothing lives only in memory).  The supervisor binds the HTTP port once and hands
the socket to each worker, so the kernel spreads connections over them; it runs migrations and makes
keys and certificates once, before any worker starts, so the workers never race for them.

A worker that dies is started again.  The workers die with the supervisor (``PR_SET_PDEATHSIG``), so a
``kill -9`` of ``fleetjobs serve`` ends everything, as it does for one process.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import sys
import time
from multiprocessing.process import BaseProcess
from typing import Any, cast

import uvicorn

from fleetjobs.config import Settings, resolve_access_key
from fleetjobs.server import (
    StartedServer,
    WorkerRole,
    _embedded_tls,
    banner,
    build,
    configure_logging,
    database_url,
    uvicorn_config,
)
from fleetjobs.store.database import Database

log = logging.getLogger("fleetjobs.supervisor")

# A worker that does not report ready in this time is treated as failed at start.
START_TIMEOUT = 120.0
# A restarted worker waits this long first, so a worker that cannot start does not spin.
RESTART_DELAY = 1.0
_PR_SET_PDEATHSIG = 1


def supervise(settings: Settings, count: int) -> None:
    configure_logging(settings)
    key = resolve_access_key(settings)  # generated here once; the workers read it from the data dir
    if settings.mqtt_tls and settings.embedded_broker and not settings.mqtt_url:
        for which in ("server", "service"):
            _embedded_tls(settings, which)
    db = Database(database_url(settings))
    asyncio.run(_migrate(db))
    sock = uvicorn.Config(_no_app, host=settings.host, port=settings.port).bind_socket()
    ctx = multiprocessing.get_context("spawn")
    workers: dict[int, tuple[BaseProcess, multiprocessing.connection.Connection]] = {}
    stop_requested: list[int] = []  # the signal, once one came

    def stop(signum: int, frame: Any) -> None:
        stop_requested.append(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    def start(index: int) -> None:
        receiver, sender = ctx.Pipe(duplex=False)
        proc = ctx.Process(
            target=run_worker, args=(settings, WorkerRole(index, count), sock, sender), name=f"fleetjobs-worker-{index}"
        )
        proc.start()
        sender.close()
        workers[index] = (proc, receiver)

    try:
        for index in range(count):
            start(index)
        if not _all_ready(workers, lambda: bool(stop_requested)):
            sys.exit(1)
        print(banner(settings, key, db, count), flush=True)
        while not stop_requested:
            sentinels = {proc.sentinel: index for index, (proc, _) in workers.items()}
            for sentinel in multiprocessing.connection.wait(list(sentinels), timeout=0.5):
                index = sentinels[sentinel]  # type: ignore[index]
                proc, receiver = workers.pop(index)
                receiver.close()
                if stop_requested:
                    continue
                log.warning("worker %d ended (exit code %s); starting it again", index, proc.exitcode)
                time.sleep(RESTART_DELAY)
                start(index)
    finally:
        _stop_all(workers)
        sock.close()


def _all_ready(workers: dict[int, tuple[BaseProcess, multiprocessing.connection.Connection]], stopping: Any) -> bool:
    """Wait for every worker's "ready" (port served, migrations done); False if one died first."""
    waiting = {receiver: index for index, (_, receiver) in workers.items()}
    deadline = time.monotonic() + START_TIMEOUT
    while waiting and not stopping() and time.monotonic() < deadline:
        for ready in multiprocessing.connection.wait(list(waiting), timeout=0.5):
            receiver = cast(multiprocessing.connection.Connection, ready)
            index = waiting.pop(receiver)
            try:
                receiver.recv()
            except EOFError:
                log.error("worker %d could not start", index)
                return False
    return not waiting


def _stop_all(workers: dict[int, tuple[BaseProcess, multiprocessing.connection.Connection]]) -> None:
    for proc, _ in workers.values():
        if proc.is_alive():
            proc.terminate()  # SIGTERM: uvicorn's graceful shutdown
    deadline = time.monotonic() + 15
    for proc, _ in workers.values():
        proc.join(max(0.0, deadline - time.monotonic()))
        if proc.is_alive():
            proc.kill()
            proc.join()


async def _migrate(db: Database) -> None:
    try:
        await db.migrate()
    finally:
        await db.close()


async def _no_app(scope: Any, receive: Any, send: Any) -> None:  # only for Config.bind_socket
    raise RuntimeError("not served")


def run_worker(
    settings: Settings, role: WorkerRole, sock: socket.socket, ready: multiprocessing.connection.Connection
) -> None:
    """One worker: the whole server (its loops, its gateway) on the supervisor's socket."""
    _die_with_parent()
    configure_logging(settings)
    key = resolve_access_key(settings)
    app, _, _ = build(settings, key, role=role)

    def started() -> None:
        ready.send(role.index)
        ready.close()

    server = StartedServer(uvicorn_config(settings, app), started)
    server.run(sockets=[sock])


def _die_with_parent() -> None:
    """Linux: the kernel kills this worker when the supervisor dies, however it dies."""
    parent = os.getppid()
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the supervisor died before the call took effect
        os._exit(1)
