"""Labelling a round's picks: an ASE calculator named ``module:function``, or an external step.

In process, each frame's label is appended to ``labelled.xyz`` (extended XYZ, the candidate's
``learn_id`` in the header) as soon as it is computed, and each failure (the calculator raised,
or gave a non-finite result) to ``failed.jsonl`` with its error: a killed run loses at most the
frame being computed, and a resumed one skips every id already in either file. In the external
step the user writes ``labelled.xyz`` from ``to_label.xyz``; ids of ``to_label.xyz`` missing
from it are recorded as failed.
"""
from __future__ import annotations

import importlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator
from ase.calculators.singlepoint import SinglePointCalculator

from ..errors import InputError, OutputError, first_line
from ..io import read_frames, write_frames

__all__ = ["ID", "load_calculator", "label_frames", "labelled_ids", "failed_ids", "read_external", "structure_of"]

log = logging.getLogger(__name__)

#: ``atoms.info`` key of a candidate's id: ``rRRR-mdKK-sSSSSSS`` (round, trajectory, MD step) or ``pool-KKKKKK``.
ID = "learn_id"


def load_calculator(spec: str) -> Calculator:
    """The ASE calculator made by ``module:function`` (called without arguments), e.g. ``mypkg.dft:make_calc``.

    The module is imported from ``sys.path`` (the CLI puts the current folder first, as ``python -m`` does).

    Raises:
        InputError: a spec without ``:``, a module that does not import, no such function, a
            function that raises or returns something other than an ASE calculator; naming both.
    """
    module_name, sep, func_name = spec.partition(":")
    if not sep or not module_name or not func_name:
        raise InputError(f"expected --calculator as module:function (e.g. mypkg.dft:make_calc), found {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except Exception as err:  # noqa: BLE001 (any error of the user's module: ImportError, SyntaxError, ...)
        raise InputError(f"--calculator {spec}: cannot import module {module_name!r} "
                         f"({type(err).__name__}: {first_line(err)})") from None
    factory = getattr(module, func_name, None)
    if not callable(factory):
        raise InputError(f"--calculator {spec}: module {module_name!r} has no function {func_name!r}")
    try:
        calc = factory()
    except Exception as err:  # noqa: BLE001
        raise InputError(f"--calculator {spec}: {func_name}() raised {type(err).__name__}: {first_line(err)}") from None
    if not (hasattr(calc, "get_potential_energy") and hasattr(calc, "get_forces")):
        raise InputError(f"--calculator {spec}: expected {func_name}() to return an ASE calculator, "
                         f"found {type(calc).__name__}")
    return calc


def structure_of(atoms: Atoms, **info) -> Atoms:
    """Numbers, positions, cell and periodicity of ``atoms`` only (no labels, velocities or spreads), with ``info``."""
    clean = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    clean.info.update(info)
    return clean


def _reference(atoms: Atoms, calc: Calculator) -> Atoms:
    """``atoms`` with the energy (eV) and forces ([N, 3] eV/Angstrom) of ``calc`` as a single-point result.

    Raises:
        ValueError: a non-finite energy or force (recorded as a failure, as if the calculator raised).
    """
    work = atoms.copy()
    work.calc = calc
    energy = float(work.get_potential_energy())
    forces = np.array(work.get_forces(), dtype=np.float64)
    if not (np.isfinite(energy) and np.isfinite(forces).all() and forces.shape == (len(atoms), 3)):
        raise ValueError(f"expected a finite energy and [{len(atoms)}, 3] finite forces, found energy {energy} "
                         f"and forces of shape {forces.shape}")
    labelled = structure_of(atoms, **{ID: atoms.info[ID]})
    labelled.calc = SinglePointCalculator(labelled, energy=energy, forces=forces)
    return labelled


def _append(path: Path, data: bytes) -> None:
    """Append ``data`` in one write and fsync, so a kill leaves whole records (a torn tail is trimmed on resume)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as err:
        raise OutputError.from_os(err, path) from None


def _append_frame(path: Path, atoms: Atoms) -> None:
    """Append one labelled frame to the extended XYZ file ``path`` (written by :func:`pbcgnn.io.write_frames`)."""
    part = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        write_frames(part, [atoms], format="extxyz")
        _append(path, part.read_bytes())
    finally:
        part.unlink(missing_ok=True)


def trim_torn_tail(path: Path) -> None:
    """Cut a last frame that a kill left incomplete from pbcgnn's own extended XYZ file ``path``
    (frames are a count line, a header line and that many atom lines)."""
    if not path.is_file():
        return
    lines = path.read_bytes().splitlines(keepends=True)
    k = good = 0
    while k < len(lines):
        try:
            n = int(lines[k])
        except ValueError:
            break
        frame = lines[k:k + n + 2]
        if len(frame) < n + 2 or not frame[-1].endswith(b"\n"):
            break
        k += n + 2
        good += sum(len(line) for line in frame)
    size = path.stat().st_size
    if good < size:
        log.warning("%s: removed an incomplete last frame (%d bytes) left by an interrupted run", path, size - good)
        with open(path, "rb+") as f:
            f.truncate(good)


def labelled_ids(path: Path) -> list[str]:
    """The ``learn_id`` of every frame of the labels file ``path`` (none when it does not exist)."""
    if not path.is_file() or path.stat().st_size == 0:
        return []
    return [str(a.info.get(ID)) for a in read_frames(path, format="extxyz")]


def failed_ids(path: Path) -> dict[str, str]:
    """id -> error of the failures recorded in ``path`` (JSON lines; a torn last line is ignored)."""
    failed = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            failed[str(record["id"])] = str(record["error"])
    return failed


def record_failure(path: Path, frame_id: str, error: str) -> None:
    """Append ``{"id": ..., "error": ...}`` to the failures file ``path``."""
    _append(path, (json.dumps({"id": frame_id, "error": error}) + "\n").encode())


def label_frames(frames: Sequence[Atoms], calc: Calculator, labels: Path, failures: Path) -> tuple[int, int]:
    """Label every frame of ``frames`` not yet in ``labels`` or ``failures``, appending each result at once.

    A calculator that raises (any ``Exception``) or returns a non-finite result fails that frame
    only: the error is recorded and logged, and the next frame is labelled.

    Returns:
        (labelled, failed) in this call.
    """
    trim_torn_tail(labels)
    done = set(labelled_ids(labels)) | set(failed_ids(failures))
    ok = bad = 0
    for atoms in frames:
        frame_id = str(atoms.info[ID])
        if frame_id in done:
            continue
        try:
            result = _reference(atoms, calc)
        except Exception as err:  # noqa: BLE001 (a failed reference calculation is recorded, never fatal)
            error = f"{type(err).__name__}: {first_line(err)}"
            record_failure(failures, frame_id, error)
            log.warning("reference calculation of %s failed (%s); skipped", frame_id, error)
            bad += 1
            continue
        _append_frame(labels, result)
        ok += 1
        log.info("labelled %s (%d of %d)", frame_id, len(done) + ok + bad, len(frames))
    return ok, bad


def read_external(to_label: Sequence[Atoms], labels: Path, failures: Path) -> tuple[int, int]:
    """Check the user's ``labels`` file against ``to_label``; record ids it lacks as failed.

    Returns:
        (labelled, failed).

    Raises:
        InputError: no such file; a frame without a ``learn_id`` of ``to_label.xyz``, with another
            composition than that frame, or twice; a frame without an energy (any reader error).
    """
    if not labels.is_file():
        raise InputError(f"expected the labelled frames of {labels.with_name('to_label.xyz').name} (energies and "
                         f"forces, each with its {ID}) to continue, found no file", path=labels)
    wanted = {str(a.info[ID]): a for a in to_label}
    seen: set[str] = set()
    for k, atoms in enumerate(read_frames(labels)):
        frame_id = str(atoms.info.get(ID))
        if frame_id not in wanted or frame_id in seen:
            what = "a second frame with" if frame_id in seen else "a frame with"
            raise InputError(f"expected each frame once with a {ID} of to_label.xyz, found {what} {ID} {frame_id!r}",
                             path=labels, frame=k)
        if not np.array_equal(atoms.numbers, wanted[frame_id].numbers):
            raise InputError(f"expected the atoms of {frame_id} in to_label.xyz, found {atoms.get_chemical_formula()}",
                             path=labels, frame=k)
        seen.add(frame_id)
    recorded = failed_ids(failures)
    missing = [i for i in wanted if i not in seen and i not in recorded]
    for frame_id in missing:
        record_failure(failures, frame_id, f"not in {labels.name}")
    return len(seen), len(missing) + len(recorded)
