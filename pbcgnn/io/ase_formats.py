"""Extended XYZ and other ``ase.io`` formats: read with unit conversion and label mapping, write.

Source units are eV and Angstrom by default (the shared ``.xyz`` files); other units are
converted with :mod:`pbcgnn.units`: lengths by ``length_unit``, energies by ``energy_unit``,
forces by ``energy_unit / length_unit``, stress by ``energy_unit / length_unit**3``.

Labels: which columns hold the energy, forces and stress is decided by :mod:`pbcgnn.io.labels`
(the usual names, or the ones a user names, e.g. ``REF_forces``); look-alike columns left unread
are named in one WARNING per file. A key used as a label is removed from ``info``/``arrays`` so
no unconverted copy stays behind. A ``weight`` in ``info`` must be a finite number >= 0.

(Ext)XYZ text, compressed or not, is checked by :mod:`pbcgnn.io.xyz_text` one frame at a time, and
ASE parses each checked frame alone, so a file of any length is read in bounded memory.
"""
from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterator, Sequence
from typing import Any

import ase.io
import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io.formats import UnknownFileTypeError, filetype, ioformats
from ase.stress import full_3x3_to_voigt_6_stress

from ..errors import InputError
from ..units import energy_factor, length_factor
from .checks import KNOWN_SYMBOLS, check_path, validate_frame
from .compression import iter_lines
from .labels import LabelKeys, Labels, take_labels, unread_message
from .tokens import decode
from .xyz_text import iter_xyz_frames

__all__ = ["iter_ase", "read_ase", "write_ase", "write_extxyz"]

log = logging.getLogger(__name__)

#: Exceptions ase.io raises on malformed input; they become InputError.
_ASE_ERRORS = (ValueError, IndexError, KeyError, AssertionError, OSError, StopIteration,
               UnknownFileTypeError, UnicodeDecodeError)
#: Bookkeeping keys set by pbcgnn readers; not written out (they describe the old file).
_SOURCE_KEYS = ("source", "source_path", "source_frame", "source_line", "has_forces")


def _describe(err: Exception) -> str:
    """Turn an exception from ase.io into an "expected ..., found ..." message."""
    if isinstance(err, KeyError) and err.args and str(err.args[0]) not in KNOWN_SYMBOLS:
        return f"expected a chemical element symbol, found {err.args[0]!r} (ASE: KeyError)"
    return f"ASE could not read this frame: {type(err).__name__}: {err}"


def _number(value: Any, what: str, path: str, k: int, positive: bool = False) -> float:
    """A finite (with ``positive``: >= 0) float from a comment-line value, else InputError naming the frame."""
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
    if ok and np.isfinite(value) and (not positive or value >= 0):  # weight 0: the frame counts for nothing
        return float(value)
    need = "a finite non-negative" if positive else "a finite"
    shown = float(value) if ok else repr(value)
    raise InputError(f"expected {need} {what}, found {shown}", path=path, frame=k)


def _array(value: Any, what: str, shapes: tuple[tuple[int, ...], ...], path: str, k: int) -> np.ndarray:
    """``value`` as a float array of one of ``shapes``, else InputError naming the frame."""
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise InputError(f"expected numbers for the {what}, found {value!r}", path=path, frame=k) from None
    if arr.shape not in shapes:
        raise InputError(f"expected the {what} with shape {' or '.join(map(str, shapes))}, found {arr.shape}",
                         path=path, frame=k)
    return arr


def _convert(atoms: Atoms, k: int, path: str, lf: float, ef: float, keys: LabelKeys) -> tuple[Atoms, Labels]:
    labels = take_labels(atoms, keys)
    if "weight" in atoms.info:  # a per-frame loss weight: nan or -1 would poison training later
        atoms.info["weight"] = _number(atoms.info["weight"], "weight", path, k, positive=True)
    out = Atoms(atoms.numbers, positions=atoms.positions * lf, cell=atoms.cell.array * lf,
                pbc=atoms.pbc)
    for key, value in atoms.arrays.items():
        if key not in ("numbers", "positions"):
            out.arrays[key] = value
    out.info.update(atoms.info)
    new, got = {}, labels.values
    if "energy" in got:
        new["energy"] = _number(got["energy"], "energy", path, k) * ef
    if "forces" in got:
        new["forces"] = _array(got["forces"], "forces", ((len(out), 3),), path, k) * (ef / lf)
    if "stress" in got:
        stress = _array(got["stress"], "stress", ((6,), (3, 3), (9,)), path, k) * (ef / lf**3)
        new["stress"] = full_3x3_to_voigt_6_stress(stress.reshape(3, 3)) if stress.size == 9 else stress
    out.calc = SinglePointCalculator(out, **new)
    out.info.update(has_forces="forces" in new, source=f"{path}: frame {k}",
                    source_path=path, source_frame=k)
    return out, labels


def _xyz_frames(name: str, fmt: str) -> Iterator[Atoms]:
    """ASE's frames of an (ext)XYZ file, compressed or not, parsed one checked frame at a time.

    Each frame's text passes :mod:`.xyz_text` before ASE parses it alone: ASE's own reader
    would index the whole file before its first frame.
    """
    lines = (decode(data, name, first_line=i) for i, data in enumerate(iter_lines(name), 1))
    for frame in iter_xyz_frames(lines, name):
        yield from ase.io.iread(io.StringIO(frame.text), index=":", format=fmt, do_not_split_by_at_sign=True)


def _no_energy(keys: LabelKeys, seen: bool) -> str:
    """What a frame without an energy lacks; a named column no frame so far had is named as such."""
    if keys.energy is not None and not seen:  # most likely a misspelt --energy-key
        return f"expected a column {keys.energy!r} (--energy-key), found none in this frame or any before it"
    return f"expected an energy (one of {', '.join(keys.candidates('energy'))}), found none"


def _iter_labelled(name: str, fmt: str, lf: float, ef: float, keys: LabelKeys,
                   require_energy: bool) -> Iterator[Atoms]:
    """Frames with labels taken, converted and checked, one at a time; at the end, the checks of the
    whole file (some frame, every named column found) and one warning about look-alike columns left unread."""
    if fmt in ("xyz", "extxyz"):
        raw = _xyz_frames(name, fmt)
    else:  # as lazily as ase.io reads the format
        raw = ase.io.iread(name, index=":", format=fmt, do_not_split_by_at_sign=True)
    unread: set[str] = set()
    sources: dict[str, set[str]] = {}
    k = 0
    while True:
        try:
            atoms = next(raw, None)
            if atoms is None:
                break
            frame, labels = _convert(atoms, k, name, lf, ef, keys)
        except InputError:
            raise
        except _ASE_ERRORS as err:
            raise InputError(_describe(err), path=name, frame=k) from None
        for what, column in labels.sources.items():
            sources.setdefault(what, set()).add(column)
        if require_energy and "energy" not in frame.calc.results:
            raise InputError(_no_energy(keys, "energy" in sources), path=name, frame=k)
        validate_frame(frame, name, k)
        unread |= labels.unread
        yield frame
        k += 1
    if not k:
        raise InputError("no frames found", path=name)
    for what, key in keys.given().items():
        if what not in sources:
            raise InputError(f"expected a column {key!r} (--{what}-key) in some frame, found none", path=name)
    if unread:
        log.warning(unread_message(name, unread, sources))


def iter_ase(
    path: str | os.PathLike,
    format: str | None = None,
    length_unit: str = "angstrom",
    energy_unit: str = "ev",
    require_energy: bool = True,
    keys: LabelKeys | None = None,
) -> Iterator[Atoms]:
    """The frames of a file ``ase.io`` understands (extended XYZ by default), one at a time.

    The path, units and format are checked at the call; frames are read as the iteration goes
    (one in memory at a time for (ext)XYZ; other formats as lazily as ``ase.io.iread`` reads
    them), each checked before it is yielded; the end-of-file checks (no frames, a named label
    column never found) run, and the warning about unread look-alike columns is logged, when
    the iteration reaches the end.

    (Ext)XYZ text, compressed or not (``.gz``, ``.bz2``, ``.xz``), is decompressed and checked
    by pbcgnn (:mod:`pbcgnn.io.xyz_text`: same numbers, symbols and BOM rule as the n2p2
    reader) before ASE parses it. ASE's own RuNNer reader is refused: it converts units itself.

    Args:
        path: the file.
        format: an ``ase.io`` format name, or None to let ASE guess from the name and content.
        length_unit: unit of positions and cell in the file (default Angstrom).
        energy_unit: unit of energies in the file (default eV); forces in
            ``energy_unit / length_unit``.
        require_energy: raise when a frame has no energy.
        keys: the label columns (:class:`pbcgnn.io.labels.LabelKeys`; None: the usual names).

    Yields:
        Frames in Angstrom, eV and eV/Angstrom with ``pbc`` as the file says, a
        ``SinglePointCalculator`` (energy, and forces/stress when present), and ``atoms.info``
        ``has_forces``, ``source`` (``"path: frame K"``), ``source_path``, ``source_frame``;
        a ``weight`` in ``info`` is a finite float >= 0.

    Raises:
        InputError: naming the path and, where known, the line and frame.
    """
    check_path(path)
    name = os.fspath(path)
    keys = keys or LabelKeys()
    lf, ef = length_factor(length_unit), energy_factor(energy_unit)
    if format is not None and format not in ioformats:
        raise InputError(f"expected an ase.io format name, found {format!r}", path=name)
    if not any(line.strip() for line in iter_lines(name)):  # stops at the first non-blank line
        raise InputError("no frames found", path=name)
    try:
        fmt = format or filetype(name, read=True)
    except _ASE_ERRORS as err:
        raise InputError(f"expected a file format ASE recognises, found none ({err})",
                         path=name) from None
    if fmt == "runnerdata":  # CODATA 2014 and its own unit conversion: never through ASE
        raise InputError("expected --format n2p2 for RuNNer/n2p2 data, found ASE's runnerdata", path=name)
    return _iter_labelled(name, fmt, lf, ef, keys, require_energy)


def read_ase(
    path: str | os.PathLike,
    format: str | None = None,
    length_unit: str = "angstrom",
    energy_unit: str = "ev",
    require_energy: bool = True,
    keys: LabelKeys | None = None,
) -> list[Atoms]:
    """Every frame of a file ``ase.io`` understands: ``list(iter_ase(...))``, see :func:`iter_ase`."""
    return list(iter_ase(path, format, length_unit, energy_unit, require_energy, keys))


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
