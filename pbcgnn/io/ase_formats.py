"""Extended XYZ and other ``ase.io`` formats: read with unit conversion and label mapping, write.

Source units are eV and Angstrom by default (the shared ``.xyz`` files); other units are
converted with :mod:`pbcgnn.units`: lengths by ``length_unit``, energies by ``energy_unit``,
forces by ``energy_unit / length_unit``, stress by ``energy_unit / length_unit**3``.

Labels: the energy comes from the calculator ASE attaches (extxyz ``energy=``), else from the
``atoms.info`` keys ``energy``, ``Energy``, ``TotEnergy`` or ``free_energy``; forces from the
calculator (extxyz ``forces:R:3``), else from ``atoms.arrays`` ``forces`` or ``force``. A key
used as a label is removed from ``info``/``arrays`` so no unconverted copy stays behind.
"""
from __future__ import annotations

import os
from collections.abc import Sequence

import ase.io
import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io.formats import UnknownFileTypeError, filetype, ioformats

from ..errors import InputError
from ..units import energy_factor, length_factor
from .checks import KNOWN_SYMBOLS, check_path, validate_frames

__all__ = ["read_ase", "write_ase", "write_extxyz"]

ENERGY_KEYS = ("energy", "Energy", "TotEnergy", "free_energy")
FORCE_KEYS = ("forces", "force")
#: Exceptions ase.io raises on malformed input; they become InputError.
_ASE_ERRORS = (ValueError, IndexError, KeyError, AssertionError, OSError, StopIteration,
               UnknownFileTypeError, UnicodeDecodeError)
#: Bookkeeping keys set by pbcgnn readers; not written out (they describe the old file).
_SOURCE_KEYS = ("source", "source_path", "source_frame", "source_line", "has_forces")


def _scan_xyz(path: str) -> None:
    """Check the frame layout of an (ext)XYZ file: count line, comment line, that many atom lines.

    ASE stops silently at a blank line and reports miscounted frames without a location; this
    names the line and frame instead.
    """
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = f.read().split("\n")
    if lines and not lines[-1]:
        lines.pop()  # the newline ending the last line
    i, k, n = 0, 0, len(lines)
    while i < n:
        head = lines[i].split()
        if not head:
            if any(line.strip() for line in lines[i:]):
                raise InputError(f"expected the atom count of frame {k}, found a blank line "
                                 "followed by more data", path=path, line=i + 1, frame=k)
            return
        if len(head) != 1 or not head[0].isdigit():
            hint = f" (does the atom count of frame {k - 1} match its atom lines?)" if k else ""
            raise InputError(f"expected the atom count of frame {k}, found {lines[i].strip()!r}"
                             + hint, path=path, line=i + 1, frame=k)
        natoms = int(head[0])
        for j in range(i + 2, i + 2 + natoms):
            found = _not_an_atom_line(lines, j)
            if found is not None:
                raise InputError(
                    f"expected {natoms} atom lines after the count at line {i + 1}, "
                    f"found {max(j - i - 2, 0)} followed by {found}",
                    path=path, line=min(j + 1, n), frame=k)
        i, k = i + 2 + natoms, k + 1
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


def _is_blank(path: str) -> bool:
    """True if the file holds only whitespace (ASE calls it an unknown format)."""
    with open(path, "rb") as f:
        return not any(line.strip() for line in f)


def _describe(err: Exception) -> str:
    """Turn an exception from ase.io into an "expected ..., found ..." message."""
    if isinstance(err, KeyError) and err.args and str(err.args[0]) not in KNOWN_SYMBOLS:
        return f"expected a chemical element symbol, found {err.args[0]!r} (ASE: KeyError)"
    return f"ASE could not read this frame: {type(err).__name__}: {err}"


def _label(results: dict, keys: Sequence[str], store: dict, what: str):
    if what in results:
        return results[what]
    for key in keys:
        if key in store:
            return store.pop(key)
    return None


def _convert(atoms: Atoms, k: int, path: str, lf: float, ef: float) -> Atoms:
    results = dict(atoms.calc.results) if atoms.calc is not None else {}
    energy = _label(results, ENERGY_KEYS, atoms.info, "energy")
    if energy is None and "free_energy" in results:
        energy = results["free_energy"]
    forces = _label(results, FORCE_KEYS, atoms.arrays, "forces")
    out = Atoms(atoms.numbers, positions=atoms.positions * lf, cell=atoms.cell.array * lf,
                pbc=atoms.pbc)
    for key, value in atoms.arrays.items():
        if key not in ("numbers", "positions"):
            out.arrays[key] = value
    out.info.update(atoms.info)
    new = {}
    if energy is not None:
        try:
            new["energy"] = float(energy) * ef
        except (TypeError, ValueError):
            raise InputError(f"expected a number for the energy, found {energy!r}",
                             path=path, frame=k) from None
    if forces is not None:
        new["forces"] = np.asarray(forces, dtype=float).reshape(len(out), 3) * (ef / lf)
    if "stress" in results:
        new["stress"] = np.asarray(results["stress"], dtype=float) * (ef / lf**3)
    out.calc = SinglePointCalculator(out, **new)
    out.info.update(has_forces=forces is not None, source=f"{path}: frame {k}",
                    source_path=path, source_frame=k)
    return out


def read_ase(
    path: str | os.PathLike,
    format: str | None = None,
    length_unit: str = "angstrom",
    energy_unit: str = "ev",
    require_energy: bool = True,
) -> list[Atoms]:
    """Read every frame of a file ``ase.io`` understands (extended XYZ by default).

    Args:
        path: the file.
        format: an ``ase.io`` format name, or None to let ASE guess from the name and content.
        length_unit: unit of positions and cell in the file (default Angstrom).
        energy_unit: unit of energies in the file (default eV); forces in
            ``energy_unit / length_unit``.
        require_energy: raise when a frame has no energy.

    Returns:
        Frames in Angstrom, eV and eV/Angstrom with ``pbc`` as the file says, a
        ``SinglePointCalculator`` (energy, and forces/stress when present), and ``atoms.info``
        ``has_forces``, ``source`` (``"path: frame K"``), ``source_path``, ``source_frame``.

    Raises:
        InputError: naming the path and, where known, the line and frame.
    """
    check_path(path)
    name = os.fspath(path)
    lf, ef = length_factor(length_unit), energy_factor(energy_unit)
    if format is not None and format not in ioformats:
        raise InputError(f"expected an ase.io format name, found {format!r}", path=name)
    if _is_blank(name):
        raise InputError("no frames found", path=name)
    try:
        fmt = format or filetype(name, read=True)
    except _ASE_ERRORS as err:
        raise InputError(f"expected a file format ASE recognises, found none ({err})",
                         path=name) from None
    if fmt in ("xyz", "extxyz"):
        _scan_xyz(name)
    frames: list[Atoms] = []
    try:
        for atoms in ase.io.iread(name, index=":", format=fmt, do_not_split_by_at_sign=True):
            frames.append(_convert(atoms, len(frames), name, lf, ef))
    except InputError:
        raise
    except _ASE_ERRORS as err:
        raise InputError(_describe(err), path=name, frame=len(frames)) from None
    if not frames:
        raise InputError("no frames found", path=name)
    if require_energy:
        for k, atoms in enumerate(frames):
            if "energy" not in atoms.calc.results:
                raise InputError(f"expected an energy (one of {', '.join(ENERGY_KEYS)}), "
                                 "found none", path=name, frame=k)
    validate_frames(frames, name)
    return frames


def _to_units(atoms: Atoms, lf: float, ef: float) -> Atoms:
    out = atoms.copy()  # copies info and arrays, not the calculator
    out.positions = atoms.positions / lf
    out.cell = atoms.cell.array / lf
    for key in _SOURCE_KEYS:
        out.info.pop(key, None)
    results = atoms.calc.results if atoms.calc is not None else {}
    new = {}
    if "energy" in results:
        new["energy"] = results["energy"] / ef
    if "forces" in results and atoms.info.get("has_forces", True):
        new["forces"] = np.asarray(results["forces"]) * (lf / ef)
    if "stress" in results:
        new["stress"] = np.asarray(results["stress"]) * (lf**3 / ef)
    if new:
        out.calc = SinglePointCalculator(out, **new)
    return out


def write_ase(
    path: str | os.PathLike,
    frames: Sequence[Atoms],
    format: str | None = None,
    length_unit: str = "angstrom",
    energy_unit: str = "ev",
) -> None:
    """Write frames (Angstrom, eV) with ``ase.io.write`` in the given units.

    The reader bookkeeping keys (``source*``, ``has_forces``) are not written.

    Args:
        path: the file (overwritten).
        frames: the frames.
        format: an ``ase.io`` format name, or None to let ASE choose from the file name.
        length_unit: unit for positions and cell (default Angstrom).
        energy_unit: unit for energies (default eV); forces in ``energy_unit / length_unit``.
    """
    lf, ef = length_factor(length_unit), energy_factor(energy_unit)
    ase.io.write(os.fspath(path), [_to_units(a, lf, ef) for a in frames], format=format)


def write_extxyz(
    path: str | os.PathLike,
    frames: Sequence[Atoms],
    length_unit: str = "angstrom",
    energy_unit: str = "ev",
) -> None:
    """Write frames as extended XYZ (``energy=``, ``forces:R:3``); see :func:`write_ase`."""
    write_ase(path, frames, "extxyz", length_unit, energy_unit)
