"""What the steps do: the built-in handlers (download-file.sh, reboot.sh), plug-in handler scripts
(install/remove packages, start/stop/restart services, custom operations) and runCommand."""

from __future__ import annotations

import asyncio
import getpass
import hashlib
import os
import shutil
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fleetjobs.security import signing

TAIL = 1024


@dataclass
class StepResult:
    ok: bool
    reason: str = ""
    stdout: str = ""
    stderr: str = ""


class StepFailed(Exception):
    pass


def tail(text: str, n: int = TAIL) -> str:
    return text[-n:]


async def run_process(argv: list[str], limit: float | None, cwd: str | None = None) -> StepResult:
    """Run ``argv`` (no shell); after ``limit`` seconds kill it and fail."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=cwd,
            start_new_session=True,
        )
    except OSError as e:
        return StepResult(False, f"cannot run {argv[0]}: {e}")
    try:
        out, err = await asyncio.wait_for(proc.communicate(), limit)
    except TimeoutError:
        _kill(proc)
        await proc.wait()
        return StepResult(False, f"timed out after {limit:g} s: {argv[0]} was killed")
    except asyncio.CancelledError:
        _kill(proc)
        raise
    stdout, stderr = out.decode(errors="replace"), err.decode(errors="replace")
    if proc.returncode != 0:
        return StepResult(False, f"{argv[0]} exited with status {proc.returncode}", stdout, stderr)
    return StepResult(True, "", stdout, stderr)


def _kill(proc: asyncio.subprocess.Process) -> None:
    try:
        os.killpg(proc.pid, 9)
    except (ProcessLookupError, PermissionError):
        try:
            proc.kill()
        except ProcessLookupError:
            pass


def as_user(argv: list[str], user: str | None) -> list[str]:
    """``sudo -u USER -n`` before argv when the step asks for another user than the agent's."""
    if not user or user == getpass.getuser():
        return argv
    return ["sudo", "-u", user, "-n", *argv]


def find_handler(name: str, path: str | None, handler_dir: Path | None) -> Path | None:
    directory = Path(path).expanduser() if path else handler_dir
    if directory is None:
        return None
    candidate = directory / name
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return candidate
    return None


# -- download-file.sh --------------------------------------------------------------------------


@dataclass
class DownloadOptions:
    chunk: int = 64 * 1024
    delay: float = 0.0  # seconds to sleep after each chunk (throttling; tests)
    timeout: float = 30.0


Progress = Callable[[int, int | None], Awaitable[None]]


def _open(url: str, offset: int, timeout: float) -> Any:
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416:
            return e
        raise


async def download(
    url: str,
    target: Path,
    codesign: dict[str, Any] | None,
    options: DownloadOptions,
    progress: Progress,
) -> tuple[int, int]:
    """Download ``url`` into ``target.part`` (resuming from its size with an HTTP Range), check its
    sha256 / code signature, then rename it into place.  Returns (bytes downloaded now, size).
    Raises :class:`StepFailed`; on a verification failure the part file is removed, nothing installed."""
    if not url.lower().startswith(("http://", "https://")):
        raise StepFailed(f"not an http(s) URL: {url[:200]}")
    part, offset = await asyncio.to_thread(prepare_target, target)
    try:
        response = await asyncio.to_thread(_open, url, offset, options.timeout)
    except (urllib.error.URLError, OSError) as e:
        raise StepFailed(f"download failed: {e}") from e
    fetched = 0
    try:
        status = getattr(response, "status", None) or response.code
        total: int | None
        if status == 416:  # the part file is already complete
            total = offset
        else:
            if status == 200 and offset:
                offset = 0  # the server ignored the range: start over
            length = response.headers.get("Content-Length")
            total = offset + int(length) if length is not None else None
            fh = await asyncio.to_thread(open, part, "r+b" if offset else "wb")
            with fh:
                fh.seek(offset)
                fh.truncate()
                done = offset
                while True:
                    chunk = await asyncio.to_thread(response.read, options.chunk)
                    if not chunk:
                        break
                    fh.write(chunk)
                    fh.flush()
                    done += len(chunk)
                    fetched += len(chunk)
                    await progress(done, total)
                    if options.delay:
                        await asyncio.sleep(options.delay)
                os.fsync(fh.fileno())
            if total is not None and done != total:
                raise StepFailed(f"download ended after {done} of {total} bytes")
            total = done
    except (urllib.error.URLError, OSError) as e:
        raise StepFailed(f"download failed: {e}") from e
    finally:
        response.close()
    if codesign:
        await asyncio.to_thread(_verify, part, codesign)
    os.replace(part, target)
    return fetched, total


def part_path(target: Path) -> Path:
    return target.with_name(target.name + ".part")


def prepare_target(target: Path) -> tuple[Path, int]:
    """The part file next to ``target`` (its directory created) and how much of it is there."""
    target.parent.mkdir(parents=True, exist_ok=True)
    part = part_path(target)
    return part, part.stat().st_size if part.exists() else 0


def _verify(part: Path, codesign: dict[str, Any]) -> None:
    expected = codesign.get("sha256")
    if expected:
        h = hashlib.sha256()
        with open(part, "rb") as fh:
            while block := fh.read(1 << 20):
                h.update(block)
        if h.hexdigest() != str(expected).lower():
            part.unlink(missing_ok=True)
            raise StepFailed("sha256 mismatch: the downloaded file is not the signed one; nothing installed")
    certificate = codesign.get("certificate")
    if not certificate:
        part.unlink(missing_ok=True)
        raise StepFailed("codesign has no certificate to verify the signature with; nothing installed")
    if not signing.verify(part, str(codesign.get("signature", "")), certificate):
        part.unlink(missing_ok=True)
        raise StepFailed("code signature verification failed; nothing installed")


def which(program: str) -> str | None:
    return shutil.which(program)
