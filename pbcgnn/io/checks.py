"""Checks every reader applies to what it read: the file exists, elements are known, numbers are
finite, cells have a volume, atoms do not overlap. Problems raise InputError naming file and frame."""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.data import chemical_symbols

from ..errors import InputError

__all__ = ["KNOWN_SYMBOLS", "MIN_CELL_VOLUME", "check_path", "cell_problem", "check_supported", "nonfinite_problem",
           "validate_frame", "validate_frames"]

#: Element symbols a frame may contain (ASE's table without the dummy ``"X"``).
KNOWN_SYMBOLS: frozenset[str] = frozenset(chemical_symbols[1:])
#: Smallest accepted |det(cell)| of a periodic frame, in Angstrom^3.
MIN_CELL_VOLUME = 1e-6

def check_path(path: str | os.PathLike) -> Path:
    """Return ``path`` as a Path if it is an existing file, else raise InputError."""
    p = Path(path)
    if p.is_dir():
        raise InputError("is a directory, expected a file", path=path)
    if not p.exists():
        raise InputError("no such file", path=path)
    return p


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
    if what == "cell":  # rows are lattice vectors, not atoms
        where = f" in lattice vector {index[0]}"
    else:
        where = f" at atom {index[0]}" if arr.ndim == 2 else f" at index {index[0]}"
    return f"expected finite {what}, found {float(arr[tuple(index)])}{where}"


def check_supported(atoms: Atoms, elements: Sequence[int] | None, periodic: bool,
                    path: str | os.PathLike | None = None, index: int | None = None) -> None:
    """Refuse a frame a model cannot know: the one check of evaluation, the calculator and MD.

    A model answers anything, so without this check a water model scores a Cu2S frame and
    exits 0. The error names the frame's ``source_path`` and ``source_line``/``source_frame``
    when the reader set them, else ``path`` and ``index``.

    Args:
        atoms: the frame.
        elements: atomic numbers the model was trained on (``None``: no check).
        periodic: the model was trained on periodic frames: require a cell periodic in x, y
            and z with a volume.
        path, index: where the frame came from, when ``atoms.info`` does not say.

    Raises:
        InputError: naming the unknown element symbol(s), or the missing periodicity.
    """
    if elements is not None:
        known = {int(z) for z in elements}
        unknown = sorted({int(z) for z in atoms.numbers} - known)
        if unknown:
            have = ", ".join(chemical_symbols[z] for z in sorted(known))
            raise InputError(f"element(s) {', '.join(chemical_symbols[z] for z in unknown)} not in the "
                             f"model's training set; expected only {have}", **_location(atoms, path, index))
    if periodic and not (np.all(atoms.pbc) and abs(atoms.cell.volume) > MIN_CELL_VOLUME):
        raise InputError(
            "the model was trained on periodic frames, expected a cell periodic in x, y and z, "
            f"found pbc={atoms.pbc.tolist()} and volume {abs(atoms.cell.volume):.3g} A^3",
            **_location(atoms, path, index))


def _location(atoms: Atoms, path: str | os.PathLike | None, k: int | None) -> dict:
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
        validate_frame(atoms, path, k)


def validate_frame(atoms: Atoms, path: str | os.PathLike, k: int) -> None:
    """Check one frame as :func:`validate_frames` does (all but the frame count).

    Args:
        atoms: the frame, in eV and Angstrom.
        path: the file it came from (used when the frame carries no source).
        k: its 0-based index in the file (used when the frame carries no source).
    """
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
