"""InputError: the one exception for bad user input (a file, a frame, an option)."""
from __future__ import annotations

import os


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
