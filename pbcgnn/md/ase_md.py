"""NVE/NVT/NPT with ASE's integrators: VelocityVerlet, Langevin, IsotropicMTKNPT."""
from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator

from ..units import ASE_FS, BAR
from .config import MDConfig
from .output import MDRecorder, check_motion, md_steps, spread_results

__all__ = ["make_dynamics", "run_ase"]

log = logging.getLogger(__name__)


def make_dynamics(atoms: Atoms, config: MDConfig):
    """The ASE integrator for ``config.ensemble`` acting on ``atoms`` (which carries the calculator).

    * ``nve``: :class:`ase.md.verlet.VelocityVerlet`.
    * ``nvt``: :class:`ase.md.langevin.Langevin` with ``friction_per_ps``, the centre of mass
      held fixed by :class:`ase.constraints.FixCom` (ASE's advice since 3.28), noise seeded
      by ``config.seed``.
    * ``npt``: :class:`ase.md.nose_hoover_chain.IsotropicMTKNPT` (Martyna-Tobias-Klein,
      isotropic cell; ASE's successor to the deprecated ``ase.md.npt.NPT``), with
      ``tdamp_fs`` and ``pdamp_fs``. Needs the stress, so a 3-D periodic cell.
    """
    dt = config.timestep_fs * ASE_FS
    if config.ensemble == "nve":
        from ase.md.verlet import VelocityVerlet

        return VelocityVerlet(atoms, timestep=dt)
    if config.ensemble == "nvt":
        from ase.constraints import FixCom
        from ase.md.langevin import Langevin

        atoms.set_constraint(FixCom())
        friction = config.friction_per_ps / (1000.0 * ASE_FS)  # 1/ps -> 1/(ASE time)
        return Langevin(atoms, timestep=dt, temperature_K=config.temperature_K, friction=friction, fixcm=False,
                        rng=np.random.default_rng(config.seed + 1))
    from ase.md.nose_hoover_chain import IsotropicMTKNPT

    return IsotropicMTKNPT(atoms, timestep=dt, temperature_K=config.temperature_K,
                           pressure_au=config.pressure_bar * BAR, tdamp=config.tdamp_fs * ASE_FS,
                           pdamp=config.pdamp_fs * ASE_FS)


def _runaway_check(atoms: Atoms) -> Callable[[], None]:
    """An observer for ASE's dynamics: :func:`check_motion` from the previous step to this one."""
    last = atoms.get_positions()

    def check() -> None:
        nonlocal last
        now = atoms.get_positions()
        check_motion(last, now)
        last = now

    return check


def run_ase(atoms: Atoms, calc: Calculator, config: MDConfig, recorder: MDRecorder) -> Atoms:
    """Integrate ``config.steps`` steps from ``atoms`` (positions and velocities) with ASE.

    Args:
        atoms: the start; copied, not modified.
        calc: the ASE calculator of the potential (e.g. :class:`pbcgnn.PbcgnnCalculator`).
        config: validated options.
        recorder: where rows and frames go, every ``config.interval`` steps and at step 0.

    Returns:
        The final state (positions, cell, velocities) with ``calc`` attached.
    """
    atoms = atoms.copy()
    atoms.calc = calc
    dyn = make_dynamics(atoms, config)
    log.info("ASE %s: %s, %d atoms, %d steps of %g fs", config.ensemble, type(dyn).__name__, len(atoms),
             config.steps, config.timestep_fs)
    recorder.record(0, atoms, atoms.get_potential_energy(), atoms.get_forces(), extra=spread_results(calc))
    dyn.attach(_runaway_check(atoms), interval=1)  # after every step: a run that blew up stops at once
    done = 0
    while done < config.steps:
        n = min(config.interval, config.steps - done)
        with md_steps(done + 1, done + n):
            dyn.run(n)
        done += n
        recorder.record(done, atoms, atoms.get_potential_energy(), atoms.get_forces(), extra=spread_results(calc))
    return atoms
