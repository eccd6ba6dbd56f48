"""n2p2/RuNNer ``input.data`` reader and writer: strict, line-numbered, lossless round trip.

Format, one block per frame (any keyword may be indented, blank lines are ignored)::

    begin
    comment <free text>                      (zero or more)
    lattice ax ay az                         (zero or three: none = non-periodic frame)
    atom x y z Element charge n fx fy fz     (one per atom; or 7 columns, without forces)
    energy E
    charge Q                                 (optional, default 0)
    end

Source units: positions and lattice in ``length_unit`` (default Bohr), energies (``E`` and the
per-atom ``n`` column) in ``energy_unit`` (default Hartree), forces in ``energy_unit /
length_unit``; per-atom and total charges in e. Values are converted to Angstrom, eV and eV/Angstrom
with :mod:`pbcgnn.units` (CODATA 2018). Numbers, symbols and text follow :mod:`pbcgnn.io.tokens`
(a UTF-8 byte-order mark is accepted at the start of the file); ``.gz``, ``.bz2`` and ``.xz``
files are decompressed on the fly (:mod:`pbcgnn.io.compression`). Frames are fully periodic (``pbc`` all True) when the
lattice is given. A frame whose atom lines all have 7 columns has no forces
(``atoms.info["has_forces"] = False``); mixing 7 and 10 columns in one frame is an error.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from ..errors import InputError
from ..units import energy_factor, length_factor
from .checks import cell_problem, check_path, validate_frame
from .compression import iter_lines
from .tokens import decode, is_symbol, parse_number

__all__ = ["iter_n2p2", "read_n2p2", "write_n2p2"]

_KEYWORDS = ("begin", "comment", "lattice", "atom", "energy", "charge", "end")
_ATOM_COLUMNS = ("x", "y", "z", "element", "charge", "n", "fx", "fy", "fz")


def _factors(length_unit: str, energy_unit: str) -> tuple[float, float, float]:
    """Angstrom per length unit, eV per energy unit, eV/Angstrom per force unit."""
    lf, ef = length_factor(length_unit), energy_factor(energy_unit)
    return lf, ef, ef / lf


@dataclass
class _Block:
    """One ``begin`` ... ``end`` block as read, in file units."""

    begin: int  # 1-based line of `begin`
    comments: list[str] = field(default_factory=list)
    lattice: list[list[float]] = field(default_factory=list)
    lattice_line: int = 0  # line of the first lattice line
    symbols: list[str] = field(default_factory=list)
    rows: list[list[float]] = field(default_factory=list)  # x y z charge n [fx fy fz]
    ncols: int = 0  # column count of the first atom line
    first_atom_line: int = 0
    # "energy"/"charge" -> (value, line)
    scalars: dict[str, tuple[float, int]] = field(default_factory=dict)


class _Parser:
    """Line-by-line state machine; raises InputError at the offending line."""

    def __init__(self, path: str, length_factor_: float, require_energy: bool) -> None:
        self.path = path
        self.lf = length_factor_
        self.require_energy = require_energy
        self.block: _Block | None = None
        self.count = 0  # frames completed
        self.line = 0

    def error(self, message: str, line: int | None = None) -> InputError:
        return InputError(message, path=self.path, line=self.line if line is None else line)

    def number(self, token: str, what: str) -> float:
        value = parse_number(token)
        if value is None:
            raise self.error(f"expected a number for {what}, found {token!r}")
        if not np.isfinite(value):
            raise self.error(f"expected a finite number for {what}, found {token!r}")
        return value

    def feed(self, line: int, fields: list[str], raw: str) -> _Block | None:
        """Take one line; returns the frame its ``end`` completes, else None."""
        self.line = line
        if not fields:
            return None
        key, b = fields[0], self.block
        if key == "begin":
            if b is not None:
                raise self.error(
                    f"expected 'end' of the frame starting at line {b.begin}, found 'begin'"
                )
            self.expect_alone(fields)
            self.block = _Block(begin=line)
            return None
        if b is None:
            raise self.error(f"expected 'begin', found {key!r}")
        if 0 < len(b.lattice) < 3 and key != "lattice":
            raise self.error(
                f"expected 3 lattice lines starting at line {b.lattice_line}, "
                f"found {len(b.lattice)} followed by {key!r}"
            )
        if key not in _KEYWORDS:
            raise self.error(f"expected one of {', '.join(_KEYWORDS)}; found {key!r}")
        if key == "end":
            return self.on_end(b, fields)
        handler = "scalar" if key in ("energy", "charge") else key
        getattr(self, f"on_{handler}")(b, fields, raw)
        return None

    def expect_alone(self, fields: list[str]) -> None:
        if len(fields) != 1:
            found = " ".join(fields)
            raise self.error(f"expected {fields[0]!r} alone on its line, found {found!r}")

    def on_comment(self, b: _Block, fields: list[str], raw: str) -> None:
        b.comments.append(raw.strip()[len("comment"):].strip())

    def on_lattice(self, b: _Block, fields: list[str], raw: str) -> None:
        if b.symbols:
            raise self.error(
                f"expected lattice lines before the first atom line (line {b.first_atom_line}), "
                "found 'lattice' after it"
            )
        if len(b.lattice) == 3:
            raise self.error(
                f"expected 3 lattice lines starting at line {b.lattice_line}, found a 4th"
            )
        if len(fields) != 4:
            raise self.error(f"expected 4 columns (lattice ax ay az), found {len(fields)}")
        if not b.lattice:
            b.lattice_line = self.line
        b.lattice.append([self.number(t, f"lattice {c}") for t, c in zip(fields[1:], "xyz")])
        if len(b.lattice) == 3:
            problem = cell_problem(np.array(b.lattice) * self.lf, np.ones(3, dtype=bool))
            if problem is not None:
                raise self.error(problem, line=b.lattice_line)

    def on_atom(self, b: _Block, fields: list[str], raw: str) -> None:
        n = len(fields)
        if n not in (7, 10):
            raise self.error(
                "expected 10 columns (atom x y z element charge n fx fy fz) "
                f"or 7 (without forces), found {n}"
            )
        if not b.symbols:
            b.ncols, b.first_atom_line = n, self.line
        elif n != b.ncols:
            raise self.error(
                f"expected {b.ncols} columns like the first atom line of this frame "
                f"(line {b.first_atom_line}), found {n}"
            )
        b.rows.append([
            self.number(t, f"{name} (column {i + 2})")
            for i, (t, name) in enumerate(zip(fields[1:], _ATOM_COLUMNS)) if i != 3
        ])
        if not is_symbol(fields[4]):
            raise self.error(f"expected a chemical element symbol in column 5, found {fields[4]!r}")
        b.symbols.append(fields[4])

    def on_scalar(self, b: _Block, fields: list[str], raw: str) -> None:
        key = fields[0]  # "energy" or "charge"
        if key in b.scalars:
            raise self.error(
                f"expected one {key!r} line per frame, found a second "
                f"(first at line {b.scalars[key][1]})"
            )
        if len(fields) != 2:
            n = len(fields)
            raise self.error(f"expected {key!r} followed by one number, found {n} columns")
        b.scalars[key] = (self.number(fields[1], key), self.line)

    def on_end(self, b: _Block, fields: list[str]) -> _Block:
        self.expect_alone(fields)
        if not b.symbols:
            raise self.error(
                f"expected at least one atom line in the frame starting at line {b.begin}, "
                "found none"
            )
        if "energy" not in b.scalars and self.require_energy:
            raise self.error(
                f"expected an 'energy' line in the frame starting at line {b.begin}, found none"
            )
        self.block = None
        self.count += 1
        return b

    def finish(self) -> None:
        """The end-of-file checks: no truncated last frame, at least one frame."""
        if self.block is not None:
            raise self.error(
                f"frame starting at line {self.block.begin} is truncated: "
                "expected 'end', found end of file"
            )
        if not self.count:
            raise InputError("no frames found", path=self.path)


def _to_atoms(b: _Block, k: int, path: str, factors: tuple[float, float, float]) -> Atoms:
    lf, ef, ff = factors
    rows = np.array(b.rows, dtype=float)  # [N, 5 or 8]: x y z charge n [fx fy fz]
    atoms = Atoms(
        symbols=b.symbols,
        positions=rows[:, 0:3] * lf,
        cell=np.array(b.lattice, dtype=float) * lf if b.lattice else None,
        pbc=bool(b.lattice),
    )
    atoms.arrays["n2p2_atom_charge"] = rows[:, 3].copy()
    atoms.arrays["n2p2_atom_energy"] = rows[:, 4] * ef
    results = {"forces": rows[:, 5:8] * ff} if b.ncols == 10 else {}
    if "energy" in b.scalars:
        results["energy"] = b.scalars["energy"][0] * ef
    atoms.calc = SinglePointCalculator(atoms, **results)
    atoms.info.update(
        has_forces=b.ncols == 10,
        source=f"{path}:{b.begin}",
        source_path=path,
        source_frame=k,
        source_line=b.begin,
        comment=list(b.comments),
        charge=b.scalars.get("charge", (0.0, 0))[0],
    )
    return atoms


def iter_n2p2(
    path: str | os.PathLike,
    length_unit: str = "bohr",
    energy_unit: str = "hartree",
    require_energy: bool = True,
) -> Iterator[Atoms]:
    """The frames of an n2p2/RuNNer ``input.data`` file, one at a time, each checked before it is yielded.

    The path and units are checked at the call; the file is read as the iteration goes, one
    frame in memory at a time, and the end-of-file checks (truncated last frame, no frames)
    run when the iteration reaches the end.

    Args:
        path: the file.
        length_unit: unit of positions and lattice in the file (default Bohr).
        energy_unit: unit of ``energy`` and the ``n`` column (default Hartree); forces are in
            ``energy_unit / length_unit``.
        require_energy: raise when a frame has no ``energy`` line.

    Yields:
        Frames in Angstrom, eV and eV/Angstrom. ``atoms.info``: ``has_forces``, ``source``
        (``"path:line"`` of ``begin``), ``source_path``, ``source_frame`` (0-based),
        ``source_line`` (1-based), ``comment`` (list of str), ``charge`` (total, e).
        ``atoms.arrays``: ``n2p2_atom_charge`` [N] in e, ``n2p2_atom_energy`` [N] in eV.

    Raises:
        InputError: at the exact line for any malformed line, bad or non-finite number,
            unknown element, singular cell, missing ``end``/``energy`` or truncated frame.
    """
    p = check_path(path)
    factors = _factors(length_unit, energy_unit)
    return _iter_frames(p, _Parser(os.fspath(path), factors[0], require_energy), factors)


def _iter_frames(p: Path, parser: _Parser, factors: tuple[float, float, float]) -> Iterator[Atoms]:
    """Feed the file line by line; convert and check each frame as its ``end`` completes it."""
    name = parser.path
    for lineno, data in enumerate(iter_lines(p), 1):
        raw = decode(data, name, first_line=lineno)
        block = parser.feed(lineno, raw.split(), raw)
        if block is not None:
            atoms = _to_atoms(block, parser.count - 1, name, factors)
            validate_frame(atoms, name, parser.count - 1)
            yield atoms
    parser.finish()


def read_n2p2(
    path: str | os.PathLike,
    length_unit: str = "bohr",
    energy_unit: str = "hartree",
    require_energy: bool = True,
) -> list[Atoms]:
    """Every frame of an n2p2/RuNNer ``input.data`` file: ``list(iter_n2p2(...))``, see :func:`iter_n2p2`."""
    return list(iter_n2p2(path, length_unit, energy_unit, require_energy))


def _from_ev(values: np.ndarray | float, factor: float) -> np.ndarray:
    """Divide by ``factor`` so that multiplying the result by ``factor`` gives ``values`` again.

    ``(v / f) * f == v`` is not guaranteed by IEEE rounding (though rarely, if ever, violated);
    stepping to a neighbouring float makes it hold for every ``v`` the reader produced (``x * f``).
    """
    a = np.asarray(values, dtype=float)
    if factor == 1.0:
        return a
    y = a / factor
    for _ in range(4):
        miss = (y * factor != a) & np.isfinite(a)
        if not miss.any():
            break
        step = np.where(y * factor < a, np.inf, -np.inf)
        y = np.where(miss, np.nextafter(y, step), y)
    return y


def _r(value: float) -> str:
    return repr(float(value))


def _frame_lines(atoms: Atoms, k: int, name: str, factors: tuple[float, float, float]) -> list[str]:
    lf, ef, ff = factors
    lines = ["begin"]
    comments = atoms.info.get("comment", [])
    for text in [comments] if isinstance(comments, str) else comments:
        if "\n" in str(text):
            raise InputError(f"expected one-line comments, found {text!r}", path=name, frame=k)
        lines.append(f"comment {text}".rstrip())
    if atoms.pbc.all():
        lines += ["lattice " + " ".join(map(_r, row)) for row in _from_ev(atoms.cell.array, lf)]
    elif atoms.pbc.any():
        raise InputError(
            "expected a fully periodic or non-periodic frame for n2p2, "
            f"found pbc={atoms.pbc.tolist()}",
            path=name, frame=k,
        )
    n = len(atoms)
    results = atoms.calc.results if atoms.calc is not None else {}
    has_forces = "forces" in results and atoms.info.get("has_forces", True)
    positions = _from_ev(atoms.positions, lf)
    charges = atoms.arrays.get("n2p2_atom_charge", np.zeros(n))
    atom_energies = _from_ev(atoms.arrays.get("n2p2_atom_energy", np.zeros(n)), ef)
    forces = _from_ev(results["forces"], ff) if has_forces else None
    for i, symbol in enumerate(atoms.get_chemical_symbols()):
        cols = [*map(_r, positions[i]), symbol, _r(charges[i]), _r(atom_energies[i])]
        if forces is not None:
            cols += map(_r, forces[i])
        lines.append("atom " + " ".join(cols))
    if results.get("energy") is not None:
        lines.append("energy " + _r(_from_ev(results["energy"], ef)))
    lines.append("charge " + _r(atoms.info.get("charge", 0.0)))
    lines.append("end")
    return lines


def write_n2p2(
    path_or_file: str | os.PathLike | IO[str],
    frames: list[Atoms],
    length_unit: str = "bohr",
    energy_unit: str = "hartree",
) -> None:
    """Write frames (Angstrom, eV) as n2p2 ``input.data`` in the given units.

    Floats are written with ``repr`` (shortest exact form), so reading the file back with the
    same units returns bit-identical positions, cell, energy, forces and charges. Writes the
    comments (``atoms.info["comment"]``), per-atom charge (``n2p2_atom_charge``, 0 if absent),
    ``n`` column (``n2p2_atom_energy`` in eV, 0 if absent) and total charge
    (``atoms.info["charge"]``, 0 if absent). Non-periodic frames get no lattice lines; frames
    without forces (or with ``has_forces`` False) get 7-column atom lines; frames without an
    energy get no ``energy`` line.

    Args:
        path_or_file: a path (overwritten) or an open text file.
        frames: the frames.
        length_unit: unit for positions and lattice (default Bohr).
        energy_unit: unit for energies (default Hartree); forces in ``energy_unit/length_unit``.

    Raises:
        InputError: a frame is periodic in only some directions or has a multi-line comment.
    """
    factors = _factors(length_unit, energy_unit)
    is_file = hasattr(path_or_file, "write")
    name = getattr(path_or_file, "name", "<stream>") if is_file else os.fspath(path_or_file)
    text = "".join(
        "\n".join(_frame_lines(atoms, k, str(name), factors)) + "\n"
        for k, atoms in enumerate(frames)
    )
    if is_file:
        path_or_file.write(text)
    else:
        Path(path_or_file).write_text(text, encoding="utf-8")
