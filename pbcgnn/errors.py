"""The project's exceptions: InputError (bad user input), OutputError (a failed write), TrainingError."""
from __future__ import annotations

import errno
import os
import re
import uuid
from pathlib import Path


class InputError(ValueError):
    """Bad user input, located as precisely as the input allows.

    The message reads ``path:line: what is wrong`` when a line is known,
    ``path: frame K: what is wrong`` when only the frame is known, and
    ``path: what is wrong`` otherwise. The CLI prints it as one line and exits 1.

    Args:
        message: what is wrong, e.g. ``"expected 3 lattice lines, found 2"``.
        path: the file (or directory) the input came from, if any.
        line: 1-based line number in ``path``.
        frame: 0-based frame index in ``path``.
    """

    def __init__(
        self,
        message: str,
        path: str | os.PathLike | None = None,
        line: int | None = None,
        frame: int | None = None,
    ) -> None:
        self.reason = message
        self.path = None if path is None else os.fspath(path)
        self.line = line
        self.frame = frame
        super().__init__(self._format())

    def _format(self) -> str:
        where = self.path or ""
        if self.line is not None:
            where = f"{where}:{self.line}"
        if self.frame is not None:
            where = f"{where}: frame {self.frame}" if where else f"frame {self.frame}"
        return f"{where}: {self.reason}" if where else self.reason


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. a non-finite loss); the last good checkpoint is kept."""


class OutputError(OSError):
    """A file or folder pbcgnn must write cannot be written (read-only, full disk, not a folder).

    The message reads ``path: cannot write: reason``, e.g. ``out/best.pt: cannot write: No
    space left on device``; the CLI prints it as one line and exits 1. An ``OSError``, so
    code that handles failed writes in general handles this one too.

    Args:
        path: the file or folder that could not be written.
        reason: the operating system's reason (``strerror``) or the library's.
        errno_: the ``errno`` when the reason came from the operating system.
    """

    def __init__(self, path: str | os.PathLike, reason: str, errno_: int | None = None) -> None:
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(errno_, f"{self.path}: cannot write: {reason}")
        self.filename = self.path

    def __str__(self) -> str:
        return self.args[1]

    @classmethod
    def from_os(cls, err: OSError, path: str | os.PathLike) -> OutputError:
        """The OutputError of an ``OSError`` raised while writing ``path`` (the error's own
        file name wins when it has one: it is the one that failed)."""
        if isinstance(err, OutputError):
            return err
        where = err.filename if err.filename is not None else path
        return cls(where, err.strerror or str(err) or type(err).__name__, err.errno)


def ensure_writable_dir(path: str | os.PathLike) -> Path:
    """Create the output folder ``path`` (with parents) and prove it takes a file, before any work.

    A small probe file is created and removed, so a read-only or full file system, or a
    path through a file, fails here in one line instead of after hours of training. Root
    ignores permission bits, so for root only a file system mounted read-only fails.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        OutputError: the folder cannot be created or written, naming it and the reason.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(path, "expected a folder, found a file", errno.ENOTDIR)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".pbcgnn-write-test.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        with open(probe, "wb") as f:
            f.write(b"0")
        probe.unlink()
    except OSError as err:
        raise OutputError.from_os(err, path) from None
    return path


def first_line(err: BaseException) -> str:
    """The first line of an exception's message, without torch's ``[enforce fail at file.cpp:N]``
    location and ``(Could this error message be improved? ...)`` request: for one-line reports."""
    text = (str(err).strip().splitlines() or [type(err).__name__])[0]
    text = re.sub(r"\[enforce fail at [^\]]*\]\s*\.?\s*", "", text).split(" (Could this error")[0].strip()
    return text or type(err).__name__
