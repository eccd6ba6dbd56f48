"""run_lock(): one writer per run folder, an ``flock`` on ``OUT/.lock`` that names its holder."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from ..errors import InputError, OutputError

try:
    import fcntl
except ImportError:  # not POSIX (Windows): runs go unlocked
    fcntl = None

__all__ = ["LOCK_NAME", "run_lock"]

log = logging.getLogger(__name__)

#: The lock file inside a run folder; present only while a run holds the folder (or after a kill).
LOCK_NAME = ".lock"


@contextlib.contextmanager
def run_lock(out: str | os.PathLike) -> Iterator[None]:
    """Hold the run folder ``out`` for the block: a second training process on it is refused.

    Two runs on one folder would interleave epochs, checkpoints and TensorBoard events, the
    last writer winning. The lock is an exclusive ``fcntl.flock`` on ``out/.lock``, which the
    kernel releases when its holder exits however it dies, so a lock file a killed run left
    behind is taken over; the file holds the holder's pid, host and start time for the message
    of a refused run, and is removed on release. Under ``torchrun`` only rank 0 takes it (the
    other ranks write nothing). Without ``fcntl`` (not POSIX) the folder is not locked.

    Raises:
        InputError: another live process holds ``out``, naming its pid and host.
        OutputError: ``out`` or the lock file cannot be created.
    """
    if fcntl is None or (int(os.environ.get("WORLD_SIZE", "1")) > 1 and os.environ.get("RANK", "0") != "0"):
        yield
        return
    path = Path(out) / LOCK_NAME
    fd = _acquire(path)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):  # gone already (removed by hand): nothing to release but the fd
            path.unlink()
        os.close(fd)  # releases the flock


def _acquire(path: Path) -> int:
    """An open descriptor of ``path`` holding its flock, with our pid, host and start time written in."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder(fd)
                os.close(fd)
                raise InputError(f"run folder in use: {holder} trains in it (stop that run, or wait for it "
                                 "to finish, before training here)", path=path.parent) from None
            # the holder may have removed the file between our open and flock: lock the file at path
            if _same_file(fd, path):
                break
            os.close(fd)
        if os.fstat(fd).st_size:
            log.info("taking over %s, left by %s (no longer running)", path, _holder(fd))
        record = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        return fd
    except OSError as err:
        raise OutputError.from_os(err, path) from None


def _same_file(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the file open as ``fd``."""
    try:
        here, there = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def _holder(fd: int) -> str:
    """The holder a lock file names, e.g. ``pid 1234 on host node7 (since 2025-01-01T12:00:00+0000)``."""
    try:
        raw = os.pread(fd, 4096, 0).decode(errors="replace")
        record = json.loads(raw)
        return f"pid {record['pid']} on host {record['host']} (since {record['since']})"
    except (OSError, ValueError, TypeError, KeyError):  # written by no pbcgnn, or still being written
        return "another process"
