"""Analysis of MD runs: radial distribution functions, NVE energy drift, density, temperature."""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from itertools import combinations_with_replacement
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers, chemical_symbols

from .errors import InputError
from .io import read_frames
from .md.ipi_output import find_ipi_output, read_ipi_frames, read_ipi_properties
from .md.output import read_thermo
from .neighbors import neighbor_list
from .units import AMU_PER_A3

__all__ = ["rdf", "element_pairs", "energy_drift", "density", "read_run", "analyze"]

log = logging.getLogger(__name__)


def _z(symbol: str | int) -> int:
    if isinstance(symbol, (int, np.integer)):
        return int(symbol)
    if symbol not in atomic_numbers:
        raise InputError(f"unknown element {symbol!r} in an RDF pair")
    return atomic_numbers[symbol]


def rdf(
    frames: Sequence[Atoms], pair: tuple[str | int, str | int], r_max: float = 6.0, nbins: int = 120
) -> tuple[np.ndarray, np.ndarray]:
    r"""Radial distribution function :math:`g_{AB}(r)` averaged over periodic frames.

    .. math::
        g_{AB}(r) = \left\langle \frac{V}{N_A N_B'} \sum_{i \in A} \sum_{j \in B, j \ne i}
        \frac{n_{ij}(r, r + \Delta r)}{4 \pi r^2 \Delta r} \right\rangle_\text{frames}

    over every periodic image (:func:`pbcgnn.neighbors.neighbor_list`, so ``r_max`` may
    exceed half the box), with :math:`N_B' = N_B - 1` when A = B (an atom is not its own
    neighbour; its periodic images are not counted either). The shell volume is exact,
    :math:`\frac{4\pi}{3}(r_{k+1}^3 - r_k^3)`, and each frame uses its own volume (NPT).
    :math:`g \to 1` at large r for an uncorrelated liquid. (``ase.geometry.rdf.get_rdf`` divides
    like pairs by :math:`N_B` instead, and needs ``r_max`` below half the box.)

    Args:
        frames: periodic frames (Angstrom), all with the same atoms.
        pair: element symbols or numbers (A, B), e.g. ``("O", "H")``.
        r_max: largest distance, Angstrom.
        nbins: number of bins on [0, r_max].

    Returns:
        ``(r, g)``: [nbins] bin centres in Angstrom and g(r).
    """
    if not frames:
        raise InputError("expected at least one frame for the RDF, found none")
    za, zb = _z(pair[0]), _z(pair[1])
    edges = np.linspace(0.0, r_max, nbins + 1)
    shell = 4.0 / 3.0 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)  # [nbins] Angstrom^3
    total = np.zeros(nbins)
    for k, atoms in enumerate(frames):
        if not (np.all(atoms.pbc) and atoms.cell.rank == 3):
            raise InputError("expected a periodic frame for the RDF, found no 3-D cell", frame=k)
        numbers = atoms.numbers
        n_a, n_b = int(np.sum(numbers == za)), int(np.sum(numbers == zb))
        n_pairs = n_a * (n_b - 1) if za == zb else n_a * n_b
        if n_pairs == 0:
            raise InputError(f"no {chemical_symbols[za]}-{chemical_symbols[zb]} pairs in the frame", frame=k)
        pos, cell = atoms.positions, atoms.cell.array
        (j, i), shifts = neighbor_list(pos, cell, atoms.pbc, r_max, name="--r-max")  # rows (j, i), [E, 3]
        keep = (numbers[i] == za) & (numbers[j] == zb) & (i != j)
        d = np.linalg.norm(pos[j[keep]] - pos[i[keep]] + shifts[keep] @ cell, axis=1)  # [E'] Angstrom
        counts, _ = np.histogram(d, bins=edges)
        total += counts * abs(atoms.cell.volume) / n_pairs / shell
    return 0.5 * (edges[1:] + edges[:-1]), total / len(frames)


def element_pairs(numbers: Sequence[int]) -> list[tuple[str, str]]:
    """All unordered element pairs, heavier element first: water gives O-O, O-H, H-H."""
    elements = sorted(set(int(z) for z in numbers), reverse=True)
    return [(chemical_symbols[a], chemical_symbols[b]) for a, b in combinations_with_replacement(elements, 2)]


def energy_drift(time_ps: np.ndarray, total_eV: np.ndarray, natoms: int) -> float:
    """Slope of a least-squares line through the total energy per atom, meV/atom/ps.

    Args:
        time_ps: [T] times, ps (at least two distinct).
        total_eV: [T] total energies (potential + kinetic), eV.
        natoms: atoms in the system.
    """
    time_ps, total_eV = np.asarray(time_ps, dtype=np.float64), np.asarray(total_eV, dtype=np.float64)
    if time_ps.size < 2 or np.ptp(time_ps) == 0:
        raise InputError(f"expected at least two times for an energy drift, found {time_ps.size}")
    slope = np.polyfit(time_ps, total_eV / natoms, 1)[0]  # eV/atom/ps
    return float(slope * 1000.0)


def density(atoms: Atoms) -> float:
    """Mass density in g/cm^3 of a periodic frame."""
    return float(atoms.get_masses().sum() / abs(atoms.cell.volume) * AMU_PER_A3)


def read_run(run_dir: str | os.PathLike, skip_ps: float = 0.0) -> tuple[dict[str, np.ndarray], list[Atoms], int | None]:
    """``(thermo columns, frames at or after skip_ps, i-PI beads)`` of a ``pbcgnn md`` folder
    (beads None), or of an i-PI run (no ``thermo.csv``; :mod:`pbcgnn.md.ipi_output`): every
    bead's frames, so the RDF is the path-integral average over beads."""
    run = Path(run_dir)
    ipi = None if (run / "thermo.csv").is_file() else find_ipi_output(run)
    if ipi is not None:
        properties, trajectories = ipi
        if not trajectories:
            raise InputError("no i-PI bead trajectories PREFIX.pos_K.extxyz (<trajectory format='ase'> positions "
                             "</trajectory>) in the run folder", path=run)
        thermo = read_ipi_properties(properties)
        moved = thermo["step"] > 0
        timestep_ps = float(thermo["time_ps"][moved][0] / thermo["step"][moved][0]) if moved.any() else 0.0
        return thermo, read_ipi_frames(trajectories, timestep_ps, skip_ps), len(trajectories)
    thermo = read_thermo(run / "thermo.csv")
    traj = run / "trajectory.xyz"
    if not traj.is_file():
        raise InputError("no trajectory.xyz in the run folder", path=run)
    frames = [a for a in read_frames(traj, format="extxyz", require_energy=False)
              if a.info.get("time_ps", 0.0) >= skip_ps]
    return thermo, frames, None


def _check_finite(thermo: dict[str, np.ndarray], rows: np.ndarray, run: Path) -> None:
    """Refuse NaN or inf in the rows analysed (a run that blew up): its means and drift would be NaN."""
    for key in ("time_ps", "temperature_K", "potential_eV", "total_eV", "volume_A3"):
        bad = np.flatnonzero(rows & ~np.isfinite(thermo[key]))
        if bad.size:
            k = int(bad[0])
            raise InputError(f"expected finite thermodynamics, found {thermo[key][k]} in {key} at step "
                             f"{int(thermo['step'][k])} (a run that blew up has no mean or drift)", path=run)


def analyze(
    run_dir: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    *,
    r_max: float = 6.0,
    nbins: int = 120,
    skip_ps: float = 0.0,
    plot: bool = True,
) -> dict:
    """Analyse a ``pbcgnn md`` or i-PI output folder; write ``rdf.csv``, ``rdf.png``, ``thermo.png``
    and ``analysis.json`` to ``out_dir`` (default: ``run_dir``).

    Reads ``thermo.csv``, ``trajectory.xyz`` and (if present) ``run.json`` for the ensemble;
    in a folder without ``thermo.csv``, i-PI's properties file and bead trajectories
    (:mod:`pbcgnn.md.ipi_output`; the RDFs average over all beads, ``ipi_beads`` says how many).

    Args:
        run_dir: the folder ``pbcgnn md`` wrote.
        out_dir: where to write (default ``run_dir``).
        r_max, nbins: RDF range (Angstrom) and bins.
        skip_ps: leave out frames and rows before this time (equilibration), ps.
        plot: write the PNG figures.

    Returns:
        The summary written to ``analysis.json``: frames used, mean and standard deviation of
        the temperature (K), potential energy (eV), volume (Angstrom^3) and density (g/cm^3),
        the ``energy_drift_mev_per_atom_per_ps`` (a linear fit; meaningful for NVE) and the
        position of the highest peak of each RDF (Angstrom).
    """
    run = Path(run_dir)
    out = Path(out_dir) if out_dir is not None else run
    out.mkdir(parents=True, exist_ok=True)
    thermo, frames, beads = read_run(run, skip_ps)
    rows = thermo["time_ps"] >= skip_ps
    if not frames or rows.sum() < 2:
        raise InputError(f"fewer than two rows or no frames at or after {skip_ps} ps", path=run)
    _check_finite(thermo, rows, run)
    ensemble = json.loads((run / "run.json").read_text()).get("config", {}).get("ensemble") \
        if (run / "run.json").is_file() else None
    natoms = len(frames[0])

    r, curves = None, {}
    for a, b in element_pairs(frames[0].numbers):
        r, curves[f"{a}-{b}"] = rdf(frames, (a, b), r_max=r_max, nbins=nbins)
    header = "r_A," + ",".join(f"g_{name}" for name in curves)
    np.savetxt(out / "rdf.csv", np.column_stack([r, *curves.values()]), delimiter=",", header=header, comments="")

    def stats(key: str) -> dict[str, float]:
        values = thermo[key][rows]
        return {"mean": float(values.mean()), "std": float(values.std())}

    densities = np.array([density(f) for f in frames])  # [F] g/cm^3
    summary = {
        "ensemble": ensemble,
        "ipi_beads": beads,
        "natoms": natoms,
        "frames": len(frames),
        "skip_ps": skip_ps,
        "time_ps": [float(thermo["time_ps"][rows][0]), float(thermo["time_ps"][rows][-1])],
        "temperature_K": stats("temperature_K"),
        "potential_eV": stats("potential_eV"),
        "volume_A3": stats("volume_A3"),
        "density_g_cm3": {"mean": float(densities.mean()), "std": float(densities.std())},
        "energy_drift_mev_per_atom_per_ps": energy_drift(thermo["time_ps"][rows], thermo["total_eV"][rows], natoms),
        "rdf_peak_A": {name: float(r[np.argmax(g)]) for name, g in curves.items()},
    }
    (out / "analysis.json").write_text(json.dumps(summary, indent=2, allow_nan=False))  # strict JSON
    if plot:
        from .md.plots import plot_rdf, plot_thermo

        plot_rdf(r, curves, out / "rdf.png", title=f"{natoms} atoms, {len(frames)} frames")
        plot_thermo(thermo, out / "thermo.png", natoms=natoms)
    log.info("analysed %s: %d frames, T = %.1f K, drift %.3g meV/atom/ps", run, len(frames),
             summary["temperature_K"]["mean"], summary["energy_drift_mev_per_atom_per_ps"])
    return summary
