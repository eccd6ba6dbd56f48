"""Frame I/O: read_frames/write_frames dispatch by format; shared checks on every frame read.

Every reader returns a list of ``ase.Atoms`` in eV and Angstrom: positions and cell in
Angstrom, ``atoms.calc`` a ``SinglePointCalculator`` holding ``energy`` in eV and (when the frame
has them) ``forces`` in eV/Angstrom, and ``atoms.info`` with ``has_forces`` (bool), ``source``
(``"path:line"`` or ``"path: frame K"``), ``source_path`` (str) and ``source_frame`` (0-based).
Bad input raises :class:`pbcgnn.errors.InputError` naming the file and the line or frame.

Formats: ``"n2p2"`` (RuNNer/n2p2 ``input.data``, Bohr and Hartree by default; see
:mod:`pbcgnn.io.n2p2`) and anything ``ase.io`` reads (extended XYZ by default, eV and Angstrom; see
:mod:`pbcgnn.io.ase_formats`).
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.data import chemical_symbols

from ..errors import InputError

__all__ = ["detect_format", "read_frames", "validate_frames", "write_frames"]

#: Element symbols a frame may contain (ASE's table without the dummy ``"X"``).
KNOWN_SYMBOLS: frozenset[str] = frozenset(chemical_symbols[1:])
#: Smallest accepted |det(cell)| of a periodic frame, in Angstrom^3.
MIN_CELL_VOLUME = 1e-6
#: Format names that mean the n2p2/RuNNer reader. ASE 3.29's own ``runnerdata`` reader converts
#: with ASE's CODATA 2014 constants, so pbcgnn routes that name to its own reader too.
N2P2_NAMES = frozenset({"n2p2", "runner", "runnerdata"})


def check_path(path: str | os.PathLike) -> Path:
    """Return ``path`` as a Path if it is an existing file, else raise InputError."""
    p = Path(path)
    if p.is_dir():
        raise InputError("is a directory, expected a file", path=path)
    if not p.exists():
        raise InputError("no such file", path=path)
    return p


def detect_format(path: str | os.PathLike) -> str:
    """Guess the format of ``path``: ``"n2p2"`` or ``"ase"`` (left to ``ase.io`` to refine).

    ``"n2p2"`` when the file is called ``input.data``, its name ends in ``.data``, or its first
    non-blank line is ``begin`` (leading whitespace allowed); ``"ase"`` otherwise.
    """
    p = Path(path)
    if p.name == "input.data" or p.name.endswith(".data"):
        return "n2p2"
    try:
        with open(p, "rb") as f:
            for _, raw in zip(range(1000), f):
                if raw.strip():
                    return "n2p2" if raw.split()[0] == b"begin" else "ase"
    except OSError:
        pass
    return "ase"


def read_frames(
    path: str | os.PathLike,
    format: str | None = None,
    length_unit: str | None = None,
    energy_unit: str | None = None,
    require_energy: bool = True,
) -> list[Atoms]:
    """Read every frame of ``path`` and convert it to eV and Angstrom.

    Args:
        path: the file to read.
        format: ``None`` or ``"auto"`` (see :func:`detect_format`), ``"n2p2"``, or an ``ase.io``
            format name such as ``"extxyz"``.
        length_unit: unit of positions and cell in the file; default ``"bohr"`` for n2p2,
            ``"angstrom"`` otherwise. Forces are read in ``energy_unit / length_unit``.
        energy_unit: unit of energies in the file; default ``"hartree"`` for n2p2, ``"ev"``
            otherwise.
        require_energy: raise when a frame has no energy (otherwise the frame's calculator holds
            no energy).

    Returns:
        One ``ase.Atoms`` per frame, in file order, as described in the module docstring.

    Raises:
        InputError: the file is missing, empty or malformed, or a value is not physical.
    """
    check_path(path)
    fmt = "auto" if format is None else format.lower()
    if fmt == "auto":
        fmt = detect_format(path)
    # Imported here: the reader modules import the checks defined in this module.
    if fmt in N2P2_NAMES:
        from .n2p2 import read_n2p2

        return read_n2p2(path, length_unit or "bohr", energy_unit or "hartree", require_energy)
    from .ase_formats import read_ase

    return read_ase(
        path,
        None if fmt == "ase" else format,
        length_unit or "angstrom",
        energy_unit or "ev",
        require_energy,
    )


def write_frames(
    path: str | os.PathLike,
    frames: Sequence[Atoms],
    format: str | None = None,
    length_unit: str | None = None,
    energy_unit: str | None = None,
) -> None:
    """Write frames (eV, Angstrom) to ``path`` in the given units.

    Args:
        path: the file to write (overwritten).
        frames: frames as returned by :func:`read_frames`.
        format: ``None``/``"auto"`` (n2p2 for ``input.data`` and ``*.data``, else extended XYZ
            for ``.xyz``/``.extxyz`` and ``ase.io``'s guess otherwise), ``"n2p2"``, or an
            ``ase.io`` format name.
        length_unit: unit to write lengths in; default ``"bohr"`` for n2p2, ``"angstrom"`` else.
        energy_unit: unit to write energies in; default ``"hartree"`` for n2p2, ``"ev"`` else.
    """
    name = Path(path).name
    fmt = "auto" if format is None else format.lower()
    if fmt == "auto":
        fmt = "n2p2" if name == "input.data" or name.endswith(".data") else "ase"
    if fmt in N2P2_NAMES:
        from .n2p2 import write_n2p2

        write_n2p2(path, frames, length_unit or "bohr", energy_unit or "hartree")
        return
    from .ase_formats import write_ase

    if fmt == "ase" and name.endswith((".xyz", ".extxyz")):
        fmt = "extxyz"
    ase_format = None if fmt == "ase" else ("extxyz" if fmt == "extxyz" else format)
    write_ase(path, frames, ase_format, length_unit or "angstrom", energy_unit or "ev")


def cell_problem(cell: np.ndarray, pbc: np.ndarray) -> str | None:
    """Describe what is wrong with a cell (rows in Angstrom), or return None if it is usable.

    A fully periodic cell needs |det| >= :data:`MIN_CELL_VOLUME`; a partly periodic one needs
    linearly independent periodic rows.
    """
    cell = np.asarray(cell, dtype=float)
    pbc = np.asarray(pbc, dtype=bool)
    if not pbc.any():
        return None
    if not np.isfinite(cell).all():
        return f"expected a finite cell, found {cell.tolist()}"
    if pbc.all():
        det = float(np.linalg.det(cell))
        if abs(det) < MIN_CELL_VOLUME:
            return (
                f"expected a periodic cell with volume of at least {MIN_CELL_VOLUME:g} Å^3, "
                f"found det = {det:.6g} Å^3 (singular cell)"
            )
        return None
    rows = cell[pbc]
    if np.linalg.matrix_rank(rows) < len(rows):
        return f"expected linearly independent periodic cell vectors, found {rows.tolist()}"
    return None


def nonfinite_problem(what: str, values: np.ndarray) -> str | None:
    """Describe the first NaN/inf in ``values`` (e.g. ``"forces"``), or return None."""
    arr = np.asarray(values, dtype=float)
    bad = ~np.isfinite(arr)
    if not bad.any():
        return None
    if arr.ndim == 0:
        return f"expected a finite {what}, found {float(arr)}"
    index = np.argwhere(bad)[0]
    where = f" at atom {index[0]}" if arr.ndim == 2 else f" at index {index[0]}"
    return f"expected finite {what}, found {float(arr[tuple(index)])}{where}"


def _location(atoms: Atoms, path: str | os.PathLike, k: int) -> dict:
    info = atoms.info
    src = info.get("source_path", path)
    if "source_line" in info:
        return {"path": src, "line": info["source_line"]}
    return {"path": src, "frame": info.get("source_frame", k)}


def validate_frames(frames: Sequence[Atoms], path: str | os.PathLike) -> None:
    """Check frames after parsing; raise InputError at the first problem.

    Checks: at least one frame; each frame has at least one atom, only known elements (not
    ``"X"``), finite positions, cell, energy, forces, stress and charges, and a usable cell when
    periodic (see :func:`cell_problem`). The error names ``atoms.info["source_path"]`` and
    ``source_line`` (n2p2) or ``source_frame`` when present, else ``path`` and the list index.

    Args:
        frames: frames in eV and Angstrom.
        path: the file they came from (used when a frame carries no source).
    """
    if len(frames) == 0:
        raise InputError("no frames found", path=path)
    for k, atoms in enumerate(frames):
        problem = _frame_problem(atoms)
        if problem is not None:
            raise InputError(problem, **_location(atoms, path, k))


def _frame_problem(atoms: Atoms) -> str | None:
    if len(atoms) == 0:
        return "expected at least one atom, found none"
    numbers = atoms.numbers
    bad = (numbers < 1) | (numbers >= len(chemical_symbols))
    if bad.any():
        i = int(np.argmax(bad))
        return f"expected a chemical element, found atomic number {numbers[i]} at atom {i}"
    checks = [("positions", atoms.positions), ("cell", atoms.cell.array)]
    results = atoms.calc.results if atoms.calc is not None else {}
    checks += [(key, results[key]) for key in ("energy", "forces", "stress") if key in results]
    if "charge" in atoms.info:
        checks.append(("total charge", atoms.info["charge"]))
    checks += [(key, atoms.arrays[key]) for key in ("n2p2_atom_charge", "n2p2_atom_energy")
               if key in atoms.arrays]
    for what, values in checks:
        problem = nonfinite_problem(what, values)
        if problem is not None:
            return problem
    return cell_problem(atoms.cell.array, atoms.pbc)
