"""NVE/NVT/NPT through OpenMM (optional): the model as an ``openmm.PythonForce``.

OpenMM (>= 8.6, ``pip install pbcgnn[openmm]``) is imported inside the functions, so pbcgnn
works without it. OpenMM works in nm, ps, kJ/mol, amu and K; the calculator in eV and
Angstrom. The conversions are the constants of :mod:`pbcgnn.units` and happen only here:
positions and box in (nm -> Angstrom), energy (eV -> kJ/mol) and forces
(eV/Angstrom -> kJ/mol/nm) out, velocities (ASE units -> nm/ps) once at the start.

With ``beads`` > 1 the run is ring-polymer MD (``openmm.RPMDIntegrator``): every bead is a
copy of the system on which the model is evaluated (one shared neighbour list, since beads
stay within the skin of each other), so nuclear quantum effects are included at P times the
cost. ``trajectory.xyz`` then holds the centroids, ``quantum_kinetic_eV`` in its header.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator

from ..errors import InputError
from ..units import EV_TO_KJ_PER_MOL, FORCE_TO_OPENMM, KB, NM, VELOCITY_TO_OPENMM
from .config import MDConfig
from .output import MDRecorder, check_motion, md_steps, spread_results

__all__ = ["ModelForce", "make_system", "make_integrator", "make_context", "openmm_energy_forces", "run_openmm"]

log = logging.getLogger(__name__)


def _openmm():
    try:
        import openmm
    except ImportError:
        raise InputError("engine openmm needs OpenMM >= 8.6: pip install 'pbcgnn[openmm]'") from None
    if not hasattr(openmm, "PythonForce"):
        raise InputError(f"engine openmm needs OpenMM >= 8.6 (PythonForce), found {openmm.__version__}")
    return openmm


class ModelForce:
    """The computation an ``openmm.PythonForce`` calls: ``state -> (kJ/mol, [N, 3] kJ/mol/nm)``.

    Positions and box vectors from the OpenMM ``State`` (nm) are written into a private copy
    of the atoms (Angstrom) and passed to the ASE calculator, whose Verlet-skin neighbour list
    is reused across steps (OpenMM may wrap atoms into the box; the calculator maps a whole
    lattice-vector jump back, so wrapping costs no rebuild).

    Args:
        calc: ASE calculator in eV and Angstrom (e.g. :class:`pbcgnn.PbcgnnCalculator`).
        atoms: the system (numbers, pbc; positions are overwritten on every call).
    """

    def __init__(self, calc: Calculator, atoms: Atoms) -> None:
        self.calc = calc
        self.atoms = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
        self.atoms.info.update({k: v for k, v in atoms.info.items() if k.startswith("source")})
        #: The last InputError the calculator raised; OpenMM turns it into an OpenMMException.
        self.error: InputError | None = None

    def __call__(self, state) -> tuple[float, np.ndarray]:
        try:
            return self._compute(state)
        except InputError as err:
            self.error = err
            raise

    def _compute(self, state) -> tuple[float, np.ndarray]:
        from openmm import unit

        pos = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)  # [N, 3] nm
        box = state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer)  # [3, 3] nm
        self.atoms.set_cell(np.asarray(box) * NM, scale_atoms=False)
        self.atoms.positions = np.asarray(pos) * NM
        energy = self.calc.get_potential_energy(self.atoms)  # eV
        forces = self.calc.get_forces(self.atoms)  # [N, 3] eV/Angstrom
        return energy * EV_TO_KJ_PER_MOL, forces * FORCE_TO_OPENMM


def _box_vectors(atoms: Atoms):
    """The cell as OpenMM box vectors (nm), which must be in OpenMM's reduced form."""
    openmm = _openmm()
    if not (np.all(atoms.pbc) and atoms.cell.rank == 3):
        raise InputError(f"engine openmm needs a cell periodic in x, y and z, found pbc={atoms.pbc.tolist()}")
    a, b, c = np.asarray(atoms.cell.array, dtype=np.float64)
    reduced = (a[1] == a[2] == b[2] == 0.0 and a[0] > 0 and b[1] > 0 and c[2] > 0
               and a[0] >= 2 * abs(b[0]) and a[0] >= 2 * abs(c[0]) and b[1] >= 2 * abs(c[1]))
    if not reduced:
        raise InputError(
            "OpenMM needs a lower-triangular, reduced cell (a along x, b in the xy plane); found "
            f"{atoms.cell.array.round(4).tolist()}; rotate it first, e.g. "
            "atoms.set_cell(atoms.cell.standard_form()[0], scale_atoms=True)")
    return [openmm.Vec3(*(v / NM)) for v in (a, b, c)]


def make_system(atoms: Atoms, calc: Calculator):
    """``(system, model_force)``: an ``openmm.System`` with masses (amu), the periodic box, the
    model as a ``PythonForce`` and a ``CMMotionRemover`` (so the thermostat acts on 3N - 3
    degrees of freedom), and the :class:`ModelForce` the ``PythonForce`` calls."""
    openmm = _openmm()
    system = openmm.System()
    for mass in atoms.get_masses():
        system.addParticle(float(mass))
    system.setDefaultPeriodicBoxVectors(*_box_vectors(atoms))
    model_force = ModelForce(calc, atoms)
    force = openmm.PythonForce(model_force)
    force.setUsesPeriodicBoundaryConditions(True)
    force.setName("pbcgnn")
    system.addForce(force)
    system.addForce(openmm.CMMotionRemover(1))
    return system, model_force


def make_integrator(system, config: MDConfig):
    """``VerletIntegrator`` (nve), ``LangevinMiddleIntegrator`` (nvt), the latter plus a
    ``MonteCarloBarostat`` added to ``system`` (npt); with ``config.beads`` > 1 an
    ``RPMDIntegrator`` (PILE thermostat for nvt, centroid friction ``friction_per_ps``)."""
    openmm = _openmm()
    from openmm import unit

    dt = config.timestep_fs * 1e-3 * unit.picosecond
    seed = config.seed % (2**31 - 2) + 1  # OpenMM treats 0 as "pick a random seed"
    if config.beads > 1:  # ring polymer: PILE thermostat (nvt) or none (nve)
        integrator = openmm.RPMDIntegrator(config.beads, config.temperature_K * unit.kelvin,
                                           config.friction_per_ps / unit.picosecond, dt)
        integrator.setRandomNumberSeed(seed)
        integrator.setApplyThermostat(config.ensemble == "nvt")
        return integrator
    if config.ensemble == "nve":
        return openmm.VerletIntegrator(dt)
    integrator = openmm.LangevinMiddleIntegrator(config.temperature_K * unit.kelvin,
                                                 config.friction_per_ps / unit.picosecond, dt)
    integrator.setRandomNumberSeed(seed)
    if config.ensemble == "npt":
        barostat = openmm.MonteCarloBarostat(config.pressure_bar * unit.bar, config.temperature_K * unit.kelvin,
                                             config.barostat_interval)
        barostat.setRandomNumberSeed(seed + 1)
        system.addForce(barostat)
    return integrator


def make_context(atoms: Atoms, calc: Calculator, config: MDConfig):
    """``(context, model_force)``: a ``Context`` (system, integrator, platform) holding the
    positions, box and velocities of ``atoms``, and its :class:`ModelForce`."""
    openmm = _openmm()
    from openmm import unit

    system, model_force = make_system(atoms, calc)
    integrator = make_integrator(system, config)
    names = [openmm.Platform.getPlatform(k).getName() for k in range(openmm.Platform.getNumPlatforms())]
    if config.openmm_platform not in names:
        raise InputError(f"unknown OpenMM platform {config.openmm_platform!r}; expected one of {', '.join(names)}")
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName(config.openmm_platform))
    context.setPeriodicBoxVectors(*_box_vectors(atoms))
    positions = unit.Quantity(np.asarray(atoms.positions) / NM, unit.nanometer)
    context.setPositions(positions)
    if config.beads == 1:
        velocities = atoms.get_velocities() * VELOCITY_TO_OPENMM  # [N, 3] nm/ps
        context.setVelocities(unit.Quantity(velocities, unit.nanometer / unit.picosecond))
        return context, model_force
    rng = np.random.default_rng(config.seed + 1)
    for k in range(config.beads):  # every bead starts at the structure, with its own velocities
        integrator.setPositions(k, positions)
        velocities = _bead_velocities(atoms.get_masses(), config.beads * config.start_temperature_K, rng)
        integrator.setVelocities(k, unit.Quantity(velocities * VELOCITY_TO_OPENMM, unit.nanometer / unit.picosecond))
    return context, model_force


def _bead_velocities(masses: np.ndarray, temperature_K: float, rng: np.random.Generator) -> np.ndarray:
    """[N, 3] Maxwell-Boltzmann velocities (ASE units) at ``temperature_K``, zero total momentum.
    Beads of a ring polymer of P copies move at P times the physical temperature."""
    v = np.sqrt(KB * temperature_K / masses)[:, None] * rng.standard_normal((len(masses), 3))
    return v - (masses[:, None] * v).sum(0) / masses.sum()


@contextmanager
def _model_errors(model_force: ModelForce) -> Iterator[None]:
    """Re-raise the calculator's InputError that OpenMM wrapped into an OpenMMException."""
    import openmm

    try:
        yield
    except openmm.OpenMMException:
        if model_force.error is not None:
            raise model_force.error from None
        raise


def _read_state(state) -> dict:
    """A ``State`` in ASE units: ``positions``, ``cell`` [3, 3] and ``forces`` (Angstrom, eV/A),
    ``velocities`` (ASE), ``energy`` and ``kinetic`` (eV)."""
    from openmm import unit

    nm, kj = unit.nanometer, unit.kilojoule_per_mole
    return {
        "positions": state.getPositions(asNumpy=True).value_in_unit(nm) * NM,
        "cell": state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(nm) * NM,
        "velocities": state.getVelocities(asNumpy=True).value_in_unit(nm / unit.picosecond) / VELOCITY_TO_OPENMM,
        "forces": np.asarray(state.getForces(asNumpy=True).value_in_unit(kj / nm)) / FORCE_TO_OPENMM,
        "energy": state.getPotentialEnergy().value_in_unit(kj) / EV_TO_KJ_PER_MOL,
        "kinetic": state.getKineticEnergy().value_in_unit(kj) / EV_TO_KJ_PER_MOL,
    }


def _snapshot(context, template: Atoms, config: MDConfig) -> tuple[Atoms, float, np.ndarray, float, dict]:
    """(atoms, energy eV, forces eV/A, kinetic eV, extra) of the current state.

    With beads (RPMD): ``atoms`` holds the centroid positions and velocities, energy and forces
    are bead averages, the kinetic energy is sum_k K_k / P^2 (beads move at P T, so this
    estimates the physical temperature) and ``extra`` has the centroid-virial estimate of the
    quantum kinetic energy, ``quantum_kinetic_eV`` = 3N kT/2 - sum_k (r_k - r_c) . F_k / 2P.
    """
    kwargs = dict(getEnergy=True, getForces=True, getPositions=True, getVelocities=True)
    if config.beads == 1:
        states = [_read_state(context.getState(**kwargs))]
    else:
        integrator = context.getIntegrator()
        states = [_read_state(integrator.getState(k, **kwargs)) for k in range(config.beads)]
    cell = states[0]["cell"]
    pos = np.stack([s["positions"] for s in states])  # [P, N, 3]
    jumps = np.round((pos - pos[0]) @ np.linalg.inv(cell))  # beads of one atom on the same image
    pos = pos - jumps @ cell
    forces = np.stack([s["forces"] for s in states])  # [P, N, 3]
    atoms = template.copy()
    atoms.set_cell(cell, scale_atoms=False)
    atoms.positions = pos.mean(0)
    atoms.set_velocities(np.mean([s["velocities"] for s in states], axis=0))
    beads = len(states)
    kinetic = sum(s["kinetic"] for s in states) / beads**2
    extra = {}
    if beads > 1:
        virial = float(np.sum((pos - pos.mean(0)) * forces))
        extra["quantum_kinetic_eV"] = 1.5 * len(atoms) * KB * config.temperature_K - virial / (2 * beads)
    return atoms, float(np.mean([s["energy"] for s in states])), forces.mean(0), kinetic, extra


def openmm_energy_forces(atoms: Atoms, calc: Calculator, platform: str = "Reference") -> tuple[float, np.ndarray]:
    """Energy (eV) and forces ([N, 3] eV/Angstrom) of ``atoms`` as OpenMM sees them through the
    ``PythonForce``, converted back: the round trip the engine makes at every step."""
    config = MDConfig(engine="openmm", ensemble="nve", openmm_platform=platform)
    context, model_force = make_context(atoms, calc, config)
    with _model_errors(model_force):
        _, energy, forces, _, _ = _snapshot(context, atoms, config)
    return energy, forces


def run_openmm(atoms: Atoms, calc: Calculator, config: MDConfig, recorder: MDRecorder) -> Atoms:
    """Integrate ``config.steps`` steps from ``atoms`` (positions and velocities) with OpenMM.

    Returns:
        The final state (positions, cell, velocities; ASE units).
    """
    if config.beads > 1 and hasattr(calc, "lists"):  # a neighbour list per bead
        calc.lists = max(calc.lists, config.beads)
    context, model_force = make_context(atoms, calc, config)
    integrator = context.getIntegrator()
    log.info("OpenMM %s: %s on %s, %d atoms, %d steps of %g fs", config.ensemble, type(integrator).__name__,
             context.getPlatform().getName(), len(atoms), config.steps, config.timestep_fs)

    def record(step: int) -> Atoms:
        with _model_errors(model_force):
            now, energy, forces, kinetic, extra = _snapshot(context, atoms, config)
        extra.update(spread_results(calc) if config.beads == 1 else {"beads": config.beads})
        recorder.record(step, now, energy, forces, kinetic=kinetic, extra=extra)
        return now

    now = record(0)
    done = 0
    while done < config.steps:
        n = min(config.interval, config.steps - done)
        with md_steps(done + 1, done + n):
            with _model_errors(model_force):
                integrator.step(n)
            before, now = now, record(done + n)
            check_motion(before.positions, now.positions, n)  # a run that blew up stops here
        done += n
    return now
