"""MDConfig: the options of one molecular-dynamics run; the only place their defaults live."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from ..errors import InputError

__all__ = ["MDConfig", "ENGINES", "ENSEMBLES"]

ENGINES = ("ase", "openmm")
#: Float fields and the ``pbcgnn md`` options that set them.
_FLOAT_OPTIONS = {"temperature_K": "--temperature", "timestep_fs": "--timestep", "friction_per_ps": "--friction",
                  "pressure_bar": "--pressure", "tdamp_fs": "tdamp_fs", "pdamp_fs": "pdamp_fs",
                  "initial_temperature_K": "--initial-temperature", "skin": "--skin"}
ENSEMBLES = ("nve", "nvt", "npt")


@dataclass(frozen=True)
class MDConfig:
    """One MD run. Units: K, fs, 1/ps, bar, Angstrom.

    Thermostats and barostats per engine:

    ==========  ===============================  ==========================================
    ensemble    ``ase``                          ``openmm``
    ==========  ===============================  ==========================================
    nve         ``VelocityVerlet``               ``VerletIntegrator``
    nvt         ``Langevin`` (``friction``)      ``LangevinMiddleIntegrator`` (``friction``)
    npt         ``IsotropicMTKNPT`` (Nose-Hoover ``LangevinMiddleIntegrator`` +
                chains, ``tdamp_fs``,            ``MonteCarloBarostat`` every
                ``pdamp_fs``)                    ``barostat_interval`` steps
    ==========  ===============================  ==========================================

    Attributes:
        engine: ``ase`` or ``openmm``.
        ensemble: ``nve``, ``nvt`` or ``npt``.
        temperature_K: thermostat target; also the Maxwell-Boltzmann temperature of the
            initial velocities unless ``initial_temperature_K`` is given.
        timestep_fs: integration time step.
        steps: number of steps.
        friction_per_ps: Langevin friction coefficient.
        pressure_bar: barostat target (npt).
        tdamp_fs, pdamp_fs: ASE MTK thermostat and barostat time constants (npt).
        barostat_interval: OpenMM Monte Carlo barostat attempt interval in steps (npt).
        initial_temperature_K: temperature of the initial velocities (``None``: the target).
        velocities: ``maxwell`` draws initial velocities (seeded); ``file`` keeps those of
            the structure (e.g. the last frame of a previous run's ``trajectory.xyz``).
        seed: seeds the initial velocities and the Langevin noise.
        interval: steps between rows of ``thermo.csv`` and frames of ``trajectory.xyz``.
        skin: Verlet skin of the neighbour list, Angstrom.
        openmm_platform: OpenMM platform (``Reference`` keeps positions in double precision;
            the model itself runs on ``device``).
        beads: ring-polymer beads (path-integral MD through OpenMM's ``RPMDIntegrator``;
            ``nvt`` thermostats every normal mode (PILE), ``nve`` none). 1: classical MD.
        tabulate: evaluate the filters from precomputed cells, equal to the exact model within
            float32 rounding (:func:`pbcgnn.model.tabulate.tabulate`); False: the exact networks.
    """

    engine: str = "ase"
    ensemble: str = "nvt"
    temperature_K: float = 300.0
    timestep_fs: float = 0.5
    steps: int = 1000
    friction_per_ps: float = 1.0
    pressure_bar: float = 1.0
    tdamp_fs: float = 50.0
    pdamp_fs: float = 500.0
    barostat_interval: int = 25
    initial_temperature_K: float | None = None
    velocities: str = "maxwell"
    seed: int = 0
    interval: int = 10
    skin: float = 1.0
    openmm_platform: str = "Reference"
    beads: int = 1
    tabulate: bool = True

    def validate(self) -> MDConfig:
        """Raise :class:`InputError` for an impossible option (naming its ``pbcgnn md`` option); returns self."""
        self._check_finite()
        checks = [
            (self.engine in ENGINES, f"expected engine in {ENGINES}, found {self.engine!r}"),
            (self.ensemble in ENSEMBLES, f"expected ensemble in {ENSEMBLES}, found {self.ensemble!r}"),
            (self.temperature_K >= 0, f"expected temperature >= 0 K, found {self.temperature_K}"),
            (self.ensemble == "nve" or self.temperature_K > 0,
             f"expected a positive temperature for {self.ensemble}, found {self.temperature_K} K"),
            (self.timestep_fs > 0, f"expected a positive time step, found {self.timestep_fs} fs"),
            (self.steps >= 0, f"expected steps >= 0, found {self.steps}"),
            (self.friction_per_ps > 0, f"expected a positive friction, found {self.friction_per_ps} 1/ps"),
            (self.tdamp_fs > 0 and self.pdamp_fs > 0, "expected positive tdamp_fs and pdamp_fs"),
            (self.barostat_interval >= 1, f"expected barostat_interval >= 1, found {self.barostat_interval}"),
            (self.initial_temperature_K is None or self.initial_temperature_K >= 0,
             f"expected initial temperature >= 0 K, found {self.initial_temperature_K}"),
            (self.velocities in ("maxwell", "file"), f"expected velocities maxwell or file, found {self.velocities!r}"),
            (self.interval >= 1, f"expected interval >= 1, found {self.interval}"),
            (self.skin >= 0, f"expected skin >= 0 A, found {self.skin}"),
            (self.beads >= 1, f"expected beads >= 1, found {self.beads}"),
            (self.beads == 1 or (self.engine == "openmm" and self.ensemble in ("nve", "nvt")),
             f"expected engine openmm and ensemble nvt or nve for beads > 1, found {self.engine} {self.ensemble}"),
            (self.beads == 1 or (self.temperature_K > 0 and self.velocities == "maxwell"),
             "expected a positive temperature and velocities=maxwell for beads > 1 (the springs depend on T)"),
        ]
        for ok, message in checks:
            if not ok:
                raise InputError(message)
        return self

    def _check_finite(self) -> None:
        """NaN or inf fails later and elsewhere (a NaN pressure as a cell without volume, an infinite
        temperature as NaN positions), so it is refused here, by its option's name."""
        for name, option in _FLOAT_OPTIONS.items():
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise InputError(f"expected a finite number for {option}, found {value}")

    @property
    def start_temperature_K(self) -> float:
        """Temperature of the Maxwell-Boltzmann initial velocities, K."""
        return self.temperature_K if self.initial_temperature_K is None else self.initial_temperature_K

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
