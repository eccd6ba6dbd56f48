"""What an MD run writes, for every engine: trajectory.xyz, thermo.csv and the progress bar.

``thermo.csv`` columns (one row per ``interval`` steps, the first at step 0):

=================  ===========================================================
``step``           MD step
``time_ps``        simulated time, ps
``potential_eV``   potential energy of the model, eV
``kinetic_eV``     kinetic energy, eV
``total_eV``       potential + kinetic, eV (conserved in NVE)
``temperature_K``  ``2 kinetic / (dof k_B)``, dof = 3N - 3 (centre of mass fixed)
``volume_A3``      cell volume, Angstrom^3
``density_g_cm3``  total mass / volume, g/cm^3
=================  ===========================================================

``trajectory.xyz`` is extended XYZ: positions (Angstrom), cell, ``energy`` (eV), ``forces``
(eV/Angstrom), ``momenta`` (amu Angstrom / ASE time unit, as ASE stores them) and ``step``,
``time_ps`` in the header, so ``ase.io.read(path, ":")`` gives frames with a calculator.
"""
from __future__ import annotations

import csv
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import ase.io
import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from ..errors import InputError, OutputError
from ..units import AMU_PER_A3, KB

__all__ = ["THERMO_COLUMNS", "MDRecorder", "read_thermo", "temperature", "degrees_of_freedom", "ns_per_day",
           "spread_results", "md_steps", "writing", "check_motion", "MAX_STEP_A"]

#: Farthest an atom may move in one MD step, Angstrom. Verlet integration needs forces that change
#: little over a step; in water they change over ~0.1 A, and a hydrogen at 300 K moves ~0.01 A
#: per 0.5 fs step. An atom that moves a bond length in one step is no longer integrated: the run
#: blew up, and left alone its atoms fly apart until every step costs seconds.
MAX_STEP_A = 1.0

#: Calculator results copied into the trajectory when present: a committee's calibrated spread
#: and the members' raw one (:class:`pbcgnn.PbcgnnCalculator`).
SPREAD_KEYS = ("energy_std", "forces_std", "energy_std_raw", "forces_std_raw")

THERMO_COLUMNS = ("step", "time_ps", "potential_eV", "kinetic_eV", "total_eV", "temperature_K", "volume_A3",
                  "density_g_cm3")


def degrees_of_freedom(natoms: int) -> int:
    """3N - 3: both engines remove the centre-of-mass motion (one atom: 3)."""
    return max(3 * natoms - 3, 3)


def temperature(kinetic_eV: float, natoms: int) -> float:
    """Instantaneous temperature in K from the kinetic energy in eV."""
    return 2.0 * kinetic_eV / (degrees_of_freedom(natoms) * KB)


def spread_results(calc) -> dict:
    """The committee spread in ``calc.results`` (:data:`SPREAD_KEYS`), if any."""
    results = getattr(calc, "results", {}) or {}
    return {k: results[k] for k in SPREAD_KEYS if k in results}


@contextmanager
def writing(path: str | os.PathLike) -> Iterator[None]:
    """Turn an ``OSError`` while writing ``path`` (full disk, read-only folder) into an
    :class:`OutputError` naming it; a write to an open file reports no file name of its own."""
    try:
        yield
    except OSError as err:
        raise OutputError.from_os(err, path) from None


@contextmanager
def md_steps(first: int, last: int) -> Iterator[None]:
    """Say which MD steps were running when the potential refused the structure: an
    :class:`InputError` raised inside (e.g. overlapping atoms) gets ``during MD steps
    first-last`` added, so it is not mistaken for a problem of the input file's frame."""
    try:
        yield
    except InputError as err:
        raise InputError(f"during MD steps {first}-{last}: {err.reason} (the dynamics left the region the "
                         "model was trained on: try a smaller time step or a better-trained model)",
                         path=err.path, line=err.line, frame=err.frame) from None


def check_motion(before: np.ndarray, after: np.ndarray, steps: int = 1) -> None:
    """Refuse a run that blew up between two states ``steps`` MD steps apart.

    Args:
        before, after: [N, 3] unwrapped positions, Angstrom.
        steps: MD steps between them.

    Raises:
        InputError: a position is NaN or inf, or an atom moved more than ``steps *``
            :data:`MAX_STEP_A` (raised inside :func:`md_steps`, which names the steps).
    """
    if not np.isfinite(after).all():
        raise InputError("expected finite positions, found NaN or inf")
    moved = np.linalg.norm(after - before, axis=1)  # [N] Angstrom
    k = int(np.argmax(moved)) if len(moved) else 0
    if len(moved) and moved[k] > MAX_STEP_A * steps:
        raise InputError(f"atom {k} moved {moved[k]:.3g} A in {steps} step{'s' if steps > 1 else ''}, expected at "
                         f"most {MAX_STEP_A:g} A per step")


def ns_per_day(steps: int, timestep_fs: float, wall_s: float) -> float:
    """Simulated nanoseconds per day of wall time."""
    return steps * timestep_fs * 1e-6 / wall_s * 86400.0 if wall_s > 0 else float("nan")


class MDRecorder:
    """Writes ``trajectory.xyz`` and ``thermo.csv`` in ``out_dir`` and drives the progress bar.

    Both files are flushed after every record, so a run that is stopped keeps what it did.

    Args:
        out_dir: output folder (created).
        steps: total steps of the run (for the progress bar).
        timestep_fs: time step, fs.
        progress: show a tqdm bar with simulated ns/day and temperature.
    """

    def __init__(self, out_dir: str | os.PathLike, steps: int, timestep_fs: float, progress: bool = True) -> None:
        from tqdm.auto import tqdm

        self.out = Path(out_dir)
        self.timestep_fs = float(timestep_fs)
        with writing(self.out):
            self.out.mkdir(parents=True, exist_ok=True)
        with writing(self.out / "trajectory.xyz"):
            self._traj = open(self.out / "trajectory.xyz", "w")
        try:
            with writing(self.out / "thermo.csv"):
                self._csv_file = open(self.out / "thermo.csv", "w", newline="")
                self._csv = csv.writer(self._csv_file)
                self._csv.writerow(THERMO_COLUMNS)
        except OutputError:
            self._traj.close()
            raise
        self._bar = tqdm(total=steps, unit="step", disable=not progress, dynamic_ncols=True)
        self._start: float | None = None
        self._last_step = 0
        self.wall_s = 0.0
        self.steps_done = 0

    def record(self, step: int, atoms: Atoms, energy: float, forces: np.ndarray, kinetic: float | None = None,
               extra: dict | None = None) -> dict:
        """One row and one frame at ``step``.

        Args:
            step: MD step.
            atoms: the current positions, cell and velocities (not modified).
            energy: potential energy, eV.
            forces: [N, 3] eV/Angstrom.
            kinetic: kinetic energy in eV (default: from ``atoms``' velocities).
            extra: more per-frame results for the trajectory (e.g. a committee's
                ``energy_std`` and [N, 3] ``forces_std``): arrays with one row per atom go
                to the atom columns, everything else to the header.

        Returns:
            The thermo row as a dict.
        """
        now = time.perf_counter()
        if self._start is None:
            self._start, self._first_step = now, step
        kin = float(atoms.get_kinetic_energy() if kinetic is None else kinetic)
        volume = float(abs(atoms.cell.volume)) if atoms.cell.rank == 3 else float("nan")
        row = {
            "step": int(step),
            "time_ps": step * self.timestep_fs * 1e-3,
            "potential_eV": float(energy),
            "kinetic_eV": kin,
            "total_eV": float(energy) + kin,
            "temperature_K": temperature(kin, len(atoms)),
            "volume_A3": volume,
            "density_g_cm3": float(atoms.get_masses().sum()) / volume * AMU_PER_A3,
        }
        with writing(self.out / "thermo.csv"):
            self._csv.writerow([row["step"]] + [repr(row[k]) for k in THERMO_COLUMNS[1:]])
            self._csv_file.flush()
        frame = atoms.copy()
        frame.calc = SinglePointCalculator(frame, energy=float(energy), forces=np.asarray(forces, dtype=np.float64))
        frame.info.update(step=int(step), time_ps=row["time_ps"])
        for key, value in (extra or {}).items():
            if np.ndim(value) and len(value) == len(frame):
                frame.arrays[key] = np.asarray(value)
            else:
                frame.info[key] = value
        for key in ("source", "source_path", "source_frame", "source_line"):
            frame.info.pop(key, None)
        with writing(self.out / "trajectory.xyz"):
            ase.io.write(self._traj, frame, format="extxyz")
            self._traj.flush()
        self.steps_done = step - self._first_step
        self.wall_s = now - self._start
        self._bar.update(step - self._last_step)
        self._last_step = step
        self._bar.set_postfix(ns_day=f"{self.ns_per_day:.3g}", T=f"{row['temperature_K']:.0f}K", refresh=False)
        return row

    @property
    def ns_per_day(self) -> float:
        """Simulated ns per day over the steps recorded so far."""
        return ns_per_day(self.steps_done, self.timestep_fs, self.wall_s)

    def close(self) -> None:
        self._bar.close()
        try:
            with writing(self.out / "trajectory.xyz"):
                self._traj.close()
        finally:
            with writing(self.out / "thermo.csv"):
                self._csv_file.close()

    def __enter__(self) -> MDRecorder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_thermo(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Columns of a ``thermo.csv`` as float arrays (``step`` as int).

    Raises:
        InputError: missing file, missing columns or a row that is not numbers (``path:line``).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("no such thermo file", path=path)
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise InputError("expected a header line, found an empty file", path=path, line=1)
    header = rows[0]
    missing = [c for c in THERMO_COLUMNS[:7] if c not in header]
    if missing:
        raise InputError(f"expected columns {', '.join(missing)}, found {', '.join(header)}", path=path, line=1)
    values = []
    for n, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise InputError(f"expected {len(header)} columns, found {len(row)}", path=path, line=n)
        try:
            values.append([float(v) for v in row])
        except ValueError:
            raise InputError(f"expected numbers, found {','.join(row)!r}", path=path, line=n) from None
    table = np.array(values, dtype=np.float64).reshape(-1, len(header))
    out = {name: table[:, k] for k, name in enumerate(header)}
    out["step"] = out["step"].astype(np.int64)
    return out
