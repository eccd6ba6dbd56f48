"""The text layer of (extended) XYZ, checked before ASE parses it: frame layout, columns, numbers
and element symbols under the same rules as the n2p2 reader (:mod:`pbcgnn.io.tokens`).

ASE stops silently at a blank line, reports miscounted frames without a location, reads
``1_000`` and non-ASCII digits as numbers (Python's ``float``), capitalises ``HO`` to holmium
and ignores columns beyond ``Properties``. This module names the line and frame instead.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from ase.io.extxyz import UNPROCESSED_KEYS, parse_properties

from ..errors import InputError
from .tokens import is_integer, is_symbol, parse_number

__all__ = ["XyzFrame", "check_xyz_text", "iter_xyz_frames"]

#: Properties when the comment line has none (ASE's default).
_DEFAULT_PROPERTIES = "species:S:1:pos:R:3"
_QUOTES = {"'": "'", '"': '"', "{": "}", "[": "]"}


@dataclass(frozen=True)
class XyzFrame:
    """One checked frame of an (ext)XYZ file, as its text stands in the file.

    Attributes:
        index: 0-based frame index.
        line: 1-based line of the frame's atom count.
        text: the frame's lines (count, comment, atoms, ``VEC`` lines), newlines kept.
    """

    index: int
    line: int
    text: str


class _Lines:
    """Lines of a file with a running line number and one line of look-ahead."""

    def __init__(self, lines: Iterable[str]) -> None:
        self._lines = iter(lines)
        self._held: str | None = None
        self.count = 0  # lines taken so far: at end of file, the file's line count

    def take(self) -> str | None:
        """The next line (newline kept), or None at end of file."""
        raw, self._held = self._held, None
        if raw is None:
            raw = next(self._lines, None)
        if raw is not None:
            self.count += 1
        return raw

    def put_back(self, raw: str) -> None:
        self._held = raw
        self.count -= 1


def iter_xyz_frames(lines: Iterable[str], path: str) -> Iterator[XyzFrame]:
    """Split (ext)XYZ text into frames, checking each one before it is yielded.

    Holds one frame's lines at a time, so a file of any length is checked in bounded memory.

    Args:
        lines: the decoded lines of the file in order, newlines kept (``XyzFrame.text`` joins them).
        path: the file, for messages.

    Raises:
        InputError: naming the line and frame of the first problem, when iteration reaches it.
    """
    src = _Lines(lines)
    k = 0
    while (raw := src.take()) is not None:
        start = src.count
        head = raw.split()
        if not head:
            while (rest := src.take()) is not None:  # blank lines may only end the file
                if rest.strip():
                    raise InputError(f"expected the atom count of frame {k}, found a blank line "
                                     "followed by more data", path=path, line=start, frame=k)
            return
        if len(head) != 1 or not is_integer(head[0]) or head[0][0] in "+-":
            hint = f" (does the atom count of frame {k - 1} match its atom lines?)" if k else ""
            raise InputError(f"expected the atom count of frame {k}, found {raw.strip()!r}" + hint,
                             path=path, line=start, frame=k)
        natoms = int(head[0])
        comment = src.take()
        atoms = _take_atom_lines(src, natoms, path, start, k)
        vecs = []
        while (extra := src.take()) is not None and extra.lstrip().startswith("VEC"):  # extxyz cell lines
            vecs.append(extra)
        if extra is not None:
            src.put_back(extra)
        columns = _columns(comment or "", bool(vecs), path, start + 1, k)
        for j, text in enumerate(atoms, start + 2):
            _check_atom_line(text, columns, path, j, k)
        yield XyzFrame(k, start, "".join([raw, *([comment] if comment is not None else []), *atoms, *vecs]))
        k += 1


def check_xyz_text(lines: list[str], path: str) -> None:
    """Check every frame of an (ext)XYZ file given as lines (without newlines); see :func:`iter_xyz_frames`.

    Raises:
        InputError: naming the line and frame of the first problem.
    """
    for _ in iter_xyz_frames(lines, path):
        pass


def _take_atom_lines(src: _Lines, natoms: int, path: str, start: int, k: int) -> list[str]:
    """The ``natoms`` lines after the comment line; an error where one is plainly no atom line."""
    atoms = []
    for a in range(natoms):
        raw = src.take()
        found = _not_an_atom_line(raw)
        if found is not None:  # at end of file, src.count is the file's last line
            raise InputError(f"expected {natoms} atom lines after the count at line {start}, "
                             f"found {a} followed by {found}", path=path, line=src.count, frame=k)
        atoms.append(raw)
    return atoms


def _not_an_atom_line(raw: str | None) -> str | None:
    """What stands where an atom line is expected (None: end of file), or None if plausible."""
    if raw is None:
        return "end of file"
    fields = raw.split()
    if not fields:
        return "a blank line"
    if len(fields) == 1:  # e.g. the next frame's atom count: no atom line has one column
        return repr(raw.strip())
    return None


def _raw_pairs(text: str) -> dict[str, str]:
    """``key=value`` pairs of an extxyz comment line as strings, split as ASE splits them
    (quotes and brackets group, a backslash escapes, a bare key means ``T``)."""
    pairs: list[list[str]] = [[""]]
    closing, escaped = None, False
    for char in text.strip():
        if escaped:
            pairs[-1][-1] += char
            escaped = False
        elif char == "\\":
            escaped = True
        elif closing:
            if char == closing:
                closing = None
            else:
                pairs[-1][-1] += char
        elif char in _QUOTES:
            closing = _QUOTES[char]
        elif char.isspace():
            if pairs[-1] != [""] and pairs[-1][-1] != "":
                pairs.append([""])
        elif char == "=":
            pairs[-1].append("")
        else:
            pairs[-1][-1] += char
    return {p[0]: "=".join(p[1:]) if len(p) > 1 else "T" for p in pairs if p != [""]}


def _is_python_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _columns(comment: str, has_vec: bool, path: str, line: int, k: int) -> list[tuple[str, str]]:
    """(property name, type R/I/S/L) of each atom-line column; checks the comment's numbers."""
    pairs = {} if has_vec else _raw_pairs(comment)  # with VEC lines the comment is free text
    for key, value in pairs.items():
        tokens = re.findall(r"[^\s,]+", value)
        # ASE converts a value when Python's float reads every token: hold it to our rule
        if key.lower() in UNPROCESSED_KEYS or not tokens or not all(map(_is_python_number, tokens)):
            continue
        for token in tokens:
            if parse_number(token) is None:
                raise InputError(f"expected a number for {key}, found {token!r}", path=path,
                                 line=line - 1, frame=k)
    spec = pairs.get("Properties", _DEFAULT_PROPERTIES)
    try:
        properties, names, _, _ = parse_properties(spec)
    except (ValueError, IndexError) as err:
        raise InputError(f"expected Properties=NAME:TYPE:COLUMNS..., found {spec!r} ({err})",
                         path=path, line=line - 1, frame=k) from None
    spec_types = dict(zip(spec.split(":")[::3], spec.split(":")[1::3]))
    return [(name, spec_types[name]) for name in names for _ in range(properties[name][1])]


def _check_atom_line(text: str, columns: list[tuple[str, str]], path: str, line: int, k: int) -> None:
    fields = text.split()
    if len(fields) != len(columns):
        names = [name for name, _ in columns]
        layout = ", ".join(f"{n} ({names.count(n)})" if names.count(n) > 1 else n for n in dict.fromkeys(names))
        raise InputError(f"expected {len(columns)} columns ({layout}), found {len(fields)}",
                         path=path, line=line, frame=k)
    for c, ((name, kind), token) in enumerate(zip(columns, fields), 1):
        if name == "species" and not is_symbol(token):
            raise InputError(f"expected a chemical element symbol in column {c}, found {token!r}",
                             path=path, line=line, frame=k)
    if text.isascii() and "_" not in text:
        return  # the common case: float/int syntax is left to ASE, which names the frame
    for c, ((name, kind), token) in enumerate(zip(columns, fields), 1):
        bad = (kind == "R" and parse_number(token) is None) or (kind == "I" and not is_integer(token))
        if bad:
            raise InputError(f"expected a number for {name} (column {c}), found {token!r}",
                             path=path, line=line, frame=k)
