"""run_md(): start velocities, pick the engine, write the run's files and its run.json summary."""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator
from ase.md.velocitydistribution import Stationary

from .. import __version__
from ..calculator import PbcgnnCalculator
from ..errors import InputError, ensure_writable_dir
from .ase_md import run_ase
from .config import MDConfig
from .output import MDRecorder, writing

__all__ = ["MDResult", "initial_state", "run_md"]

log = logging.getLogger(__name__)


@dataclass
class MDResult:
    """What a run produced.

    Attributes:
        out_dir: folder with ``trajectory.xyz``, ``thermo.csv`` and ``run.json``.
        final: the last state (positions, cell, velocities).
        steps: MD steps integrated.
        wall_s: wall time from the first force evaluation to the end, s.
        steps_per_s, ns_per_day: speed over ``wall_s``; None for a run of 0 steps (only the
            starting state is evaluated and written, so there is no speed to report).
        rebuilds, evaluations: neighbour-list builds and model evaluations (pbcgnn calculator only).
    """

    out_dir: Path
    final: Atoms
    steps: int
    wall_s: float
    steps_per_s: float | None
    ns_per_day: float | None
    rebuilds: int | None = None
    evaluations: int | None = None


def initial_state(atoms: Atoms, config: MDConfig) -> Atoms:
    """A copy of ``atoms`` with the starting velocities.

    ``velocities="maxwell"``: Maxwell-Boltzmann at ``config.start_temperature_K`` from
    ``numpy.random.default_rng(config.seed)``, then the centre-of-mass momentum removed.
    ``velocities="file"``: the structure's own momenta (an error if it has none).
    """
    start = atoms.copy()
    if config.velocities == "file":
        if "momenta" not in start.arrays:
            where = {"path": atoms.info.get("source_path"), "frame": atoms.info.get("source_frame")}
            raise InputError("expected velocities (a momenta column) in the structure for velocities=file, "
                             "found none", **where)
        return start
    try:
        from ase.md.velocitydistribution import thermalize_momenta  # ASE >= 3.29
    except ImportError:  # older ASE
        from ase.md.velocitydistribution import MaxwellBoltzmannDistribution as thermalize_momenta

    thermalize_momenta(start, temperature_K=config.start_temperature_K, rng=np.random.default_rng(config.seed))
    Stationary(start, preserve_temperature=False)  # 3N - 3 degrees of freedom keep their share
    return start


def run_md(
    potential: Calculator | str | os.PathLike,
    atoms: Atoms,
    config: MDConfig,
    out_dir: str | os.PathLike,
    *,
    device: str = "cpu",
    dtype: str | None = None,
    progress: bool = True,
) -> MDResult:
    """Molecular dynamics of ``atoms`` with a pbcgnn potential; writes ``out_dir``.

    Files: ``trajectory.xyz`` and ``thermo.csv`` (see :mod:`pbcgnn.md.output`) and
    ``run.json`` (options, atoms, speed, neighbour-list rebuilds).

    Args:
        potential: an ASE calculator in eV/Angstrom, or a checkpoint path (then a
            :class:`pbcgnn.PbcgnnCalculator` with ``config.skin`` on ``device``/``dtype``).
        atoms: the starting structure (Angstrom); not modified.
        config: run options (validated here).
        out_dir: output folder (created; existing files are overwritten).
        device: torch device when ``potential`` is a checkpoint.
        dtype: ``float32``/``float64`` override when ``potential`` is a checkpoint.
        progress: show a progress bar with simulated ns/day.

    Returns:
        An :class:`MDResult`.
    """
    config.validate()
    out = ensure_writable_dir(out_dir)  # before the model is built: a read-only OUT fails at once
    if isinstance(potential, Calculator):
        calc = potential
    else:
        calc = PbcgnnCalculator.from_checkpoint(potential, device=device, dtype=dtype, skin=config.skin,
                                                tabulate=config.tabulate)
    start = initial_state(atoms, config)
    with MDRecorder(out, config.steps, config.timestep_fs, progress=progress) as recorder:
        if config.engine == "ase":
            final = run_ase(start, calc, config, recorder)
        else:
            from .openmm_md import run_openmm

            final = run_openmm(start, calc, config, recorder)
    wall = recorder.wall_s
    timed = config.steps > 0 and wall > 0
    result = MDResult(out, final, config.steps, wall, config.steps / wall if timed else None,
                      recorder.ns_per_day if timed else None, getattr(calc, "rebuilds", None),
                      getattr(calc, "evaluations", None))
    summary = {
        "pbcgnn_version": __version__,
        "config": config.to_dict(),
        "potential": os.fspath(potential) if not isinstance(potential, Calculator) else type(potential).__name__,
        "natoms": len(atoms),
        "formula": atoms.get_chemical_formula(),
        "steps": result.steps,
        "wall_s": result.wall_s,
        "steps_per_s": result.steps_per_s,
        "ns_per_day": result.ns_per_day,
        "neighbor_list_builds": result.rebuilds,
        "model_evaluations": result.evaluations,
    }
    with writing(out / "run.json"):
        (out / "run.json").write_text(json.dumps(summary, indent=2))
    if timed:
        log.info("%d steps in %.1f s: %.3g steps/s, %.3g ns/day; %s neighbour-list builds", result.steps, wall,
                 result.steps_per_s, result.ns_per_day, result.rebuilds)
    return result
