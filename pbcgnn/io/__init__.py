"""Frame I/O: iter_frames/read_frames/write_frames dispatch by format; shared checks on every frame read.

Every reader yields ``ase.Atoms`` in eV and Angstrom, one frame at a time (:func:`iter_frames`,
bounded memory) or as a list (:func:`read_frames`): positions and cell in
Angstrom, ``atoms.calc`` a ``SinglePointCalculator`` holding ``energy`` in eV and (when the frame
has them) ``forces`` in eV/Angstrom, and ``atoms.info`` with ``has_forces`` (bool), ``source``
(``"path:line"`` or ``"path: frame K"``), ``source_path`` (str) and ``source_frame`` (0-based).
Bad input raises :class:`pbcgnn.errors.InputError` naming the file and the line or frame.

Formats: ``"n2p2"`` (RuNNer/n2p2 ``input.data``, Bohr and Hartree by default; see
:mod:`pbcgnn.io.n2p2`) and anything ``ase.io`` reads (extended XYZ by default, eV and Angstrom; see
:mod:`pbcgnn.io.ase_formats`).
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import ase.io.formats  # ase's format table: what it writes, and whether a format holds one frame only
from ase import Atoms

from ..errors import InputError
from .ase_formats import iter_ase, write_ase
from .checks import check_path, validate_frames
from .compression import iter_lines, strip_compression
from .labels import LabelKeys
from .n2p2 import iter_n2p2, write_n2p2
from .tokens import BOM

__all__ = ["LabelKeys", "check_path", "detect_format", "iter_frames", "read_frames", "validate_frames",
           "write_format", "write_frames"]

#: Format names that mean the n2p2/RuNNer reader. ASE 3.29's own ``runnerdata`` reader converts
#: with ASE's CODATA 2014 constants, so pbcgnn routes that name to its own reader too.
N2P2_NAMES = frozenset({"n2p2", "runner", "runnerdata"})


def detect_format(path: str | os.PathLike) -> str:
    """Guess the format of ``path``: ``"n2p2"`` or ``"ase"`` (left to ``ase.io`` to refine).

    ``"n2p2"`` when the file is called ``input.data``, its name ends in ``.data``, or its first
    non-blank line is ``begin`` (leading whitespace and a byte-order mark allowed); ``"ase"``
    otherwise. A compression suffix (``.gz``, ``.bz2``, ``.xz``) is looked through.
    """
    name = strip_compression(path)
    if name == "input.data" or name.endswith(".data"):
        return "n2p2"
    try:
        for _, raw in zip(range(1000), iter_lines(path)):
            if raw.strip():
                return "n2p2" if raw.removeprefix(BOM.encode()).split()[0] == b"begin" else "ase"
    except InputError:
        pass  # unreadable: the reader says so
    return "ase"


def iter_frames(
    path: str | os.PathLike,
    format: str | None = None,
    length_unit: str | None = None,
    energy_unit: str | None = None,
    require_energy: bool = True,
    energy_key: str | None = None,
    forces_key: str | None = None,
    stress_key: str | None = None,
) -> Iterator[Atoms]:
    """The frames of ``path`` one at a time, converted to eV and Angstrom: files larger than memory.

    Yields exactly the frames :func:`read_frames` returns. The path, format, units and label
    keys are checked at the call; the file is then read as the iteration goes, about one frame
    in memory at a time (n2p2 and (ext)XYZ, compressed or not; other ``ase.io`` formats as
    lazily as ``ase.io.iread`` reads them). Each frame passes every check before it is yielded;
    the end-of-file checks (a truncated last frame, no frames at all, a named label column never
    found) raise, and the warning about unread look-alike columns is logged, when the iteration
    reaches the end of the file. Arguments as for :func:`read_frames`.

    Raises:
        InputError: the file is missing, empty or malformed, or a value is not physical; a
            problem in frame K is raised when the iteration reaches frame K.
    """
    check_path(path)
    fmt = "auto" if format is None else format.lower()
    if fmt == "auto":
        fmt = detect_format(path)
    keys = LabelKeys(energy_key, forces_key, stress_key)
    if fmt in N2P2_NAMES:
        if keys.given():
            named = ", ".join(f"--{what}-key {key}" for what, key in keys.given().items())
            raise InputError(f"expected no label keys for n2p2 data (its columns are fixed), found {named}",
                             path=path)
        return iter_n2p2(path, length_unit or "bohr", energy_unit or "hartree", require_energy)
    return iter_ase(path, None if fmt == "ase" else format, length_unit or "angstrom", energy_unit or "ev",
                    require_energy, keys)


def read_frames(
    path: str | os.PathLike,
    format: str | None = None,
    length_unit: str | None = None,
    energy_unit: str | None = None,
    require_energy: bool = True,
    energy_key: str | None = None,
    forces_key: str | None = None,
    stress_key: str | None = None,
) -> list[Atoms]:
    """Read every frame of ``path`` and convert it to eV and Angstrom: ``list(iter_frames(...))``.

    Compressed files (``.gz``, ``.bz2``, ``.xz``) are read by the same pbcgnn readers.

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
        energy_key, forces_key, stress_key: the columns holding the labels in ASE formats
            (e.g. ``REF_forces``); default: see :mod:`pbcgnn.io.labels`. n2p2 has fixed columns.

    Returns:
        One ``ase.Atoms`` per frame, in file order, as described in the module docstring.

    Raises:
        InputError: the file is missing, empty or malformed, or a value is not physical.
    """
    return list(iter_frames(path, format, length_unit, energy_unit, require_energy, energy_key, forces_key,
                            stress_key))


def write_format(path: str | os.PathLike, format: str | None = None, n_frames: int | None = None) -> str:
    """The format :func:`write_frames` writes ``path`` in: check it before any work.

    ``"n2p2"`` for ``input.data``, ``*.data`` or an n2p2 ``format``; else the ``ase.io`` format
    (``"extxyz"`` for ``.xyz``/``.extxyz``, otherwise as ``ase.io.write`` guesses from the name).

    Args:
        path: the file to write.
        format: as for :func:`write_frames`.
        n_frames: how many frames will be written, to refuse a format that holds one (POSCAR).

    Raises:
        InputError: a name or format no writer takes, or several frames for a one-frame format.
    """
    name = Path(path).name
    fmt = "auto" if format is None else format.lower()
    by_name = fmt in ("auto", "ase")  # "ase": by the name, but not n2p2's
    if by_name:
        if fmt == "auto" and (name == "input.data" or name.endswith(".data")):
            return "n2p2"
        if name.endswith((".xyz", ".extxyz")):
            return "extxyz"
        with contextlib.suppress(ase.io.formats.UnknownFileTypeError):
            fmt = ase.io.formats.filetype(os.fspath(path), read=False)
    if fmt in N2P2_NAMES:
        return "n2p2"
    io_format = ase.io.formats.ioformats.get(fmt)
    if io_format is None or not io_format.can_write:
        if by_name:
            raise InputError("expected an output name ending in .data or .xyz (or another suffix ase.io writes, "
                             f"e.g. .extxyz, .traj, .cif), found {name!r}", path=path)
        raise InputError(f"expected an output format that ase.io writes, found {fmt!r}", path=path)
    if n_frames is not None and n_frames > 1 and io_format.single:
        raise InputError(f"expected a format that holds several frames for {n_frames} frames, found {fmt!r} "
                         "(one frame per file)", path=path)
    return fmt


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
            ``ase.io`` format name; see :func:`write_format`.
        length_unit: unit to write lengths in; default ``"bohr"`` for n2p2, ``"angstrom"`` else.
        energy_unit: unit to write energies in; default ``"hartree"`` for n2p2, ``"ev"`` else.

    Raises:
        InputError: a name or format no writer takes (:func:`write_format`).
    """
    fmt = write_format(path, format, len(frames))
    if fmt == "n2p2":
        write_n2p2(path, frames, length_unit or "bohr", energy_unit or "hartree")
        return
    write_ase(path, frames, fmt, length_unit or "angstrom", energy_unit or "ev")
