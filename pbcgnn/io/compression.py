"""Compressed inputs (.gz, .bz2, .xz): one place that opens, decompresses and names them.

pbcgnn's own readers read compressed files through :func:`iter_lines`/:func:`read_bytes`, so
a ``input.data.gz`` goes through the n2p2 reader (units converted once, by :mod:`pbcgnn.units`)
and never through ASE's own RuNNer reader. A file that is not what its suffix says raises
:class:`pbcgnn.errors.InputError` naming it.
"""
from __future__ import annotations

import bz2
import gzip
import lzma
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from ..errors import InputError

__all__ = ["COMPRESSIONS", "iter_lines", "read_bytes", "strip_compression"]

#: Suffix -> opener in binary mode.
COMPRESSIONS: dict[str, Callable[..., IO[bytes]]] = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
#: What the decompressors raise on bytes that are not their format (or are cut short).
_DECOMPRESSION_ERRORS = (OSError, EOFError, lzma.LZMAError, gzip.BadGzipFile)


def strip_compression(path: str | os.PathLike) -> str:
    """The file name without a compression suffix (``input.data.gz`` -> ``input.data``)."""
    name = Path(path).name
    suffix = Path(name).suffix.lower()
    return name[: -len(suffix)] if suffix in COMPRESSIONS else name


def _opener(path: str | os.PathLike) -> Callable[..., IO[bytes]]:
    return COMPRESSIONS.get(Path(path).suffix.lower(), open)


def iter_lines(path: str | os.PathLike) -> Iterator[bytes]:
    """The file's lines as bytes (newlines kept), decompressed by suffix.

    Raises:
        InputError: the file cannot be opened or decompressed.
    """
    opener = _opener(path)
    try:
        with opener(path, "rb") as f:
            yield from f
    except _DECOMPRESSION_ERRORS as err:
        kind = Path(path).suffix.lower()
        what = f"a {kind} compressed file" if opener is not open else "a readable file"
        raise InputError(f"expected {what}, found unreadable data ({type(err).__name__}: {err})",
                         path=path) from None


def read_bytes(path: str | os.PathLike) -> bytes:
    """The whole (decompressed) file; see :func:`iter_lines`."""
    return b"".join(iter_lines(path))
