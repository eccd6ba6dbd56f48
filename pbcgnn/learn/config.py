"""LearnConfig: the options of an active-learning run (``pbcgnn learn``); the only place their defaults live."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from ..errors import InputError

__all__ = ["LearnConfig", "RESUMABLE", "resumed_options"]

#: Options a resumed run may change: budgets, the stop rule's fraction, where labels and training run.
RESUMABLE = ("max_labels", "max_rounds", "stop_fraction", "calculator", "device", "epochs", "max_minutes")
#: Options naming files, stored as absolute paths.
PATH_FIELDS = ("committee", "structures", "pool", "data")
#: The spreads a round may rank by (keys of :func:`pbcgnn.evaluation.metrics.frame_spread`): the largest
#: atomic force spread of the frame, or its RMS over force components.
BY = ("max_force", "forces")


@dataclass(frozen=True)
class LearnConfig:
    """One active-learning run: rounds of explore, select, label and retrain. Units: eV/Angstrom, K, fs, 1/ps.

    Attributes:
        committee: the committee checkpoint the first round explores with.
        structures: explore by MD (ASE, Langevin NVT) from every frame of these files ...
        pool: ... or score the frames of this file (candidates for labelling; labels it holds are ignored).
        format, length_unit, energy_unit: how to read ``structures``/``pool`` (:func:`pbcgnn.io.read_frames`).
        temperatures_K: each start frame runs once per temperature.
        steps, sample_every: MD steps per trajectory, and steps between sampled frames (the start is not one).
        timestep_fs, friction_per_ps: the Langevin integrator.
        threshold: a frame is uncertain when its calibrated force spread (``by``) exceeds this, eV/Angstrom.
        by: ``max_force``, the largest atomic force spread |sigma_i| of the frame (default: one atom
            off the training data is enough), or ``forces``, the RMS over all force components.
        min_rmsd: a candidate within this RMSD (Angstrom, minimum image, same atoms and cell) of a
            frame already picked in the round is skipped: no two labels of nearly the same configuration.
        max_per_round: labels requested per round at most.
        stop_fraction: stop when the fraction of explored frames above ``threshold`` falls below this.
        max_labels: stop when this many frames are labelled (failed ones not counted).
        max_rounds: stop before round ``max_rounds`` (0-based) would start.
        calculator: ``module:function`` returning an ASE calculator (the reference method); ``None``:
            an external step (frames written to ``round_NNN/to_label.xyz``, labels read from
            ``round_NNN/labelled.xyz`` on ``--resume``).
        data: training files of the committee (``()``: those stored in its checkpoint).
        epochs, max_minutes: the budget of each retraining (other training options: the committee's own).
        seed: MD velocities and noise; trajectory k of round r uses ``seed + 1000 r + k``.
        device: ``auto``, ``cpu`` or ``cuda[:k]`` for MD, scoring and training.
        tabulate: MD and scoring through precomputed filter tables (:func:`pbcgnn.model.tabulate.tabulate`).
    """

    committee: str | None = None
    structures: tuple[str, ...] = ()
    pool: str | None = None
    format: str | None = None
    length_unit: str | None = None
    energy_unit: str | None = None
    temperatures_K: tuple[float, ...] = (300.0,)
    steps: int = 1000
    sample_every: int = 10
    timestep_fs: float = 0.5
    friction_per_ps: float = 1.0
    threshold: float = 0.0
    by: str = "max_force"
    min_rmsd: float = 0.1
    max_per_round: int = 10
    stop_fraction: float = 0.05
    max_labels: int = 100
    max_rounds: int = 10
    calculator: str | None = None
    data: tuple[str, ...] = ()
    epochs: int = 50
    max_minutes: float | None = None
    seed: int = 0
    device: str = "auto"
    tabulate: bool = True

    def validate(self) -> LearnConfig:
        """Raise :class:`InputError` naming the ``pbcgnn learn`` option of the first bad value; returns self."""
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise InputError(f"expected a finite number for {_option(f.name)}, found {value}")
        checks = [
            (self.committee is not None, "expected a committee checkpoint (COMMITTEE)"),
            (bool(self.structures) != (self.pool is not None),
             "expected either --structure (explore by MD) or --pool (score a pool of frames), one of them"),
            (self.threshold > 0, f"expected --threshold > 0 eV/A (required), found {self.threshold:g}"),
            (self.by in BY, f"expected --by in {BY}, found {self.by!r}"),
            (bool(self.temperatures_K) and min(self.temperatures_K) > 0,
             f"expected positive temperatures (K), found {list(self.temperatures_K)}"),
            (self.steps >= 1 and self.sample_every >= 1,
             f"expected --steps >= 1 and --sample-every >= 1, found {self.steps} and {self.sample_every}"),
            (self.timestep_fs > 0 and self.friction_per_ps > 0, "expected a positive --timestep and --friction"),
            (self.min_rmsd >= 0, f"expected --min-rmsd >= 0 A, found {self.min_rmsd}"),
            (self.max_per_round >= 1, f"expected --max-per-round >= 1, found {self.max_per_round}"),
            (0 <= self.stop_fraction <= 1, f"expected 0 <= --stop-fraction <= 1, found {self.stop_fraction}"),
            (self.max_labels >= 1 and self.max_rounds >= 1,
             f"expected --max-labels and --max-rounds >= 1, found {self.max_labels} and {self.max_rounds}"),
            (self.epochs >= 1, f"expected --epochs >= 1, found {self.epochs}"),
            (self.max_minutes is None or self.max_minutes > 0, f"expected --max-minutes > 0, found {self.max_minutes}"),
        ]
        for ok, message in checks:
            if not ok:
                raise InputError(message)
        return self

    def absolute(self) -> LearnConfig:
        """The same options with every file path absolute (a resumed run may start in another folder)."""
        return replace(self, **{name: _absolute(getattr(self, name)) for name in PATH_FIELDS})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LearnConfig:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise InputError(f"unknown learn options: {', '.join(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def _absolute(value: str | tuple[str, ...] | None) -> str | tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, tuple):
        return tuple(str(Path(v).resolve()) for v in value)
    return str(Path(value).resolve())


def _option(name: str) -> str:
    """The ``pbcgnn learn`` option of field ``name``."""
    special = {"temperatures_K": "--temperature", "timestep_fs": "--timestep", "friction_per_ps": "--friction",
               "structures": "--structure", "committee": "COMMITTEE"}
    return special.get(name, "--" + name.replace("_", "-"))


def resumed_options(stored: LearnConfig, given: dict[str, Any]) -> LearnConfig:
    """The stored options with those of :data:`RESUMABLE` that this call ``given`` (field -> value);
    any other given option must equal the stored one: a resumed run keeps its options.

    Raises:
        InputError: a given option differs from the stored one.
    """
    given = {k: _absolute(v) if k in PATH_FIELDS else v for k, v in given.items()}
    for name, value in given.items():
        if name not in RESUMABLE and getattr(stored, name) != value:
            raise InputError(f"{_option(name)} {value!r} given, but this run was started with "
                             f"{getattr(stored, name)!r}; a resumed run keeps its options (only "
                             f"{', '.join(_option(n) for n in RESUMABLE)} may change)")
    return replace(stored, **{k: v for k, v in given.items() if k in RESUMABLE}).validate()
