"""The text layer of (extended) XYZ, checked before ASE parses it: frame layout, columns, numbers
and element symbols under the same rules as the n2p2 reader (:mod:`pbcgnn.io.tokens`).

ASE stops silently at a blank line, reports miscounted frames without a location, reads
``1_000`` and non-ASCII digits as numbers (Python's ``float``), capitalises ``HO`` to holmium
and ignores columns beyond ``Properties``. This module names the line and frame instead.
"""
from __future__ import annotations

import re

from ase.io.extxyz import UNPROCESSED_KEYS, parse_properties

from ..errors import InputError
from .tokens import is_integer, is_symbol, parse_number

__all__ = ["check_xyz_text"]

#: Properties when the comment line has none (ASE's default).
_DEFAULT_PROPERTIES = "species:S:1:pos:R:3"
_QUOTES = {"'": "'", '"': '"', "{": "}", "[": "]"}


def check_xyz_text(lines: list[str], path: str) -> None:
    """Check every frame of an (ext)XYZ file given as lines (without newlines).

    Raises:
        InputError: naming the line and frame of the first problem.
    """
    i, k, n = 0, 0, len(lines)
    while i < n:
        head = lines[i].split()
        if not head:
            if any(line.strip() for line in lines[i:]):
                raise InputError(f"expected the atom count of frame {k}, found a blank line "
                                 "followed by more data", path=path, line=i + 1, frame=k)
            return
        if len(head) != 1 or not is_integer(head[0]) or head[0][0] in "+-":
            hint = f" (does the atom count of frame {k - 1} match its atom lines?)" if k else ""
            raise InputError(f"expected the atom count of frame {k}, found {lines[i].strip()!r}"
                             + hint, path=path, line=i + 1, frame=k)
        natoms = int(head[0])
        end = i + 2 + natoms
        for j in range(i + 2, end):
            found = _not_an_atom_line(lines, j)
            if found is not None:
                raise InputError(
                    f"expected {natoms} atom lines after the count at line {i + 1}, "
                    f"found {max(j - i - 2, 0)} followed by {found}",
                    path=path, line=min(j + 1, n), frame=k)
        has_vec = end < n and lines[end].lstrip().startswith("VEC")
        comment = lines[i + 1] if i + 1 < n else ""
        columns = _columns(comment, has_vec, path, i + 2, k)
        for j in range(i + 2, end):
            _check_atom_line(lines[j], columns, path, j + 1, k)
        i, k = end, k + 1
        while i < n and lines[i].lstrip().startswith("VEC"):  # extxyz VEC1..3 cell lines
            i += 1


def _not_an_atom_line(lines: list[str], j: int) -> str | None:
    """What stands at line index ``j`` where an atom line is expected, or None if plausible."""
    if j >= len(lines):
        return "end of file"
    fields = lines[j].split()
    if not fields:
        return "a blank line"
    if len(fields) == 1:  # e.g. the next frame's atom count: no atom line has one column
        return repr(lines[j].strip())
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
