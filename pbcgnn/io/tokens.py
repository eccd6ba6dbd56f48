"""What every pbcgnn reader accepts as text, a number and an element symbol (one rule for all).

- Text: UTF-8; a byte-order mark is accepted at the very start of a file only (editors on
  Windows write one), anywhere else it is an error like any other stray character.
- A number: what Python's ``float`` reads, spelled in ASCII and without ``_`` digit separators
  (``float`` also takes ``1_000`` and non-ASCII digits such as ``١``, which Fortran and C codes
  would not); Fortran's ``1.0d0`` is not a number. Finiteness is checked separately, so the
  error can say "finite".
- An element symbol: exactly as in the periodic table (``O``, ``Ho``): ``HO`` or ``o`` is not
  read as holmium or oxygen, and ASE's dummy ``X`` is no element.
"""
from __future__ import annotations

import os

from ..errors import InputError
from .checks import KNOWN_SYMBOLS

__all__ = ["BOM", "decode", "is_integer", "is_symbol", "parse_number"]

BOM = "\ufeff"


def parse_number(token: str) -> float | None:
    """The value of ``token`` as a number (NaN and inf included), or None if it is not one."""
    if not token.isascii() or "_" in token:
        return None
    try:
        return float(token)
    except ValueError:
        return None


def is_integer(token: str) -> bool:
    """True if ``token`` is an ASCII integer (optional sign, no ``_``)."""
    body = token[1:] if token[:1] in "+-" else token
    return body.isascii() and body.isdigit()


def is_symbol(token: str) -> bool:
    """True if ``token`` is an element symbol spelled exactly as in the periodic table."""
    return token in KNOWN_SYMBOLS


def decode(data: bytes, path: str | os.PathLike, first_line: int = 1) -> str:
    """UTF-8 text of ``data`` (lines of a file starting at ``first_line``), without a leading BOM.

    Raises:
        InputError: at the line of the first undecodable byte.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = first_line + data[: err.start].count(b"\n")
        raise InputError(f"expected UTF-8 text, found undecodable bytes ({err.reason})",
                         path=path, line=line) from None
    return text[1:] if first_line == 1 and text.startswith(BOM) else text
