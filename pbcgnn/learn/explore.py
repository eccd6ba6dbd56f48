"""A round's exploration: committee MD from the start frames at each temperature (or a pool of frames),
every frame scored by the committee's calibrated force spread.

Each trajectory runs in ``round_NNN/explore/mdKK`` (:func:`pbcgnn.md.run_md`: ``trajectory.xyz``
with the spread of every sampled frame, ``run.json`` when it finished). One that blows up keeps
the frames it sampled, and its error goes to ``failed.json`` there: an exploration that leaves the
training data is what the loop is for, not a reason to stop. Its last sampled frame, the nearest
the loop has to where the dynamics broke, is a candidate whatever its spread (``learn_failure``
in ``info``; picked first). A resumed round reruns only the
trajectories with neither file (each is seeded, so it repeats itself).
"""
from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ase import Atoms

from ..calculator import PbcgnnCalculator
from ..errors import InputError
from ..evaluation.metrics import frame_spread
from ..io import iter_frames, read_frames
from ..io.checks import check_supported
from ..md import MDConfig, run_md
from .config import LearnConfig
from .label import ID, structure_of

__all__ = ["Exploration", "check_frames", "explore", "start_frames"]

log = logging.getLogger(__name__)


@dataclass
class Exploration:
    """What a round explored.

    Attributes:
        rows: per explored frame: ``id`` and its spreads ``max_force``, ``forces`` (eV/Angstrom)
            and ``energy`` (eV/atom), calibrated.
        candidates: the frames whose spread (``LearnConfig.by``) exceeds the threshold, and the last
            sampled frame of each failed trajectory; structures only, with ``learn_id``,
            ``learn_spread`` (eV/Angstrom) and ``learn_failure`` (bool) in ``info``.
        failures: trajectory folder name -> the error that stopped it.
        above: how many explored frames lie above the threshold.
    """

    rows: list[dict] = field(default_factory=list)
    candidates: list[Atoms] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)
    above: int = 0

    def add(self, frame_id: str, atoms: Atoms, energy_std: float, forces_std: np.ndarray, config: LearnConfig,
            failure: bool = False) -> None:
        """Score one frame (``forces_std`` [N, 3] eV/Angstrom, ``energy_std`` eV, calibrated);
        ``failure``: the last frame before its trajectory failed, a candidate whatever its spread."""
        spread = frame_spread(np.array([energy_std]), forces_std, np.array([len(atoms)]))
        row = {"id": frame_id, **{k: float(v[0]) for k, v in spread.items()}}
        self.rows.append(row)
        self.above += row[config.by] > config.threshold
        if row[config.by] > config.threshold or failure:
            self.candidates.append(structure_of(atoms, **{ID: frame_id, "learn_spread": row[config.by],
                                                          "learn_failure": failure}))

    @property
    def fraction(self) -> float:
        """Fraction of explored frames above the threshold (0 when none was explored)."""
        return self.above / len(self.rows) if self.rows else 0.0


def start_frames(config: LearnConfig) -> list[Atoms]:
    """Every frame of every ``config.structures`` file, in order."""
    opts = dict(format=config.format, length_unit=config.length_unit, energy_unit=config.energy_unit)
    return [a for path in config.structures for a in read_frames(path, require_energy=False, **opts)]


def check_frames(config: LearnConfig, elements: list[int] | None, periodic: bool) -> int:
    """Refuse, before any work, a start or pool frame the committee cannot know (elements it was not
    trained on, no 3-D periodic cell: :func:`pbcgnn.io.checks.check_supported`); returns the number of frames.

    Raises:
        InputError: naming the file and frame.
    """
    opts = dict(format=config.format, length_unit=config.length_unit, energy_unit=config.energy_unit)
    n = 0
    for path in config.structures or (config.pool,):
        for atoms in iter_frames(path, require_energy=False, **opts):
            check_supported(atoms, elements, periodic)
            n += 1
    return n


@contextlib.contextmanager
def _own_columns() -> Iterator[None]:
    """Silence the reader's note on unread label-like columns while reading a trajectory: its
    ``energy_std``/``forces_std`` columns are the committee's spread, read here from ``arrays``/``info``."""
    reader = logging.getLogger("pbcgnn.io.ase_formats")
    quiet = logging.Filter("none")  # a filter with another name passes no record
    reader.addFilter(quiet)
    try:
        yield
    finally:
        reader.removeFilter(quiet)


def _trajectory(calc: PbcgnnCalculator, atoms: Atoms, temperature: float, seed: int, folder: Path,
                config: LearnConfig, progress: bool) -> str | None:
    """One NVT trajectory into ``folder``; the error that stopped it, or None."""
    md = MDConfig(engine="ase", ensemble="nvt", temperature_K=temperature, timestep_fs=config.timestep_fs,
                  steps=config.steps, friction_per_ps=config.friction_per_ps, seed=seed,
                  interval=config.sample_every, tabulate=config.tabulate)
    try:
        run_md(calc, atoms, md, folder, progress=progress)
    except InputError as err:  # the calculator refused a state, or the run blew up: keep its frames
        (folder / "failed.json").write_text(json.dumps({"error": str(err)}))
        log.warning("%s stopped early, its sampled frames kept: %s", folder.name, err)
        return str(err)
    return None


def _explore_md(calc: PbcgnnCalculator, config: LearnConfig, round_index: int, folder: Path,
                progress: bool) -> Exploration:
    """Run (or, resumed, finish) the round's trajectories; score their sampled frames (not step 0, the start)."""
    found = Exploration()
    starts = [(a, t) for a in start_frames(config) for t in config.temperatures_K]
    for k, (atoms, temperature) in enumerate(starts):
        run = folder / f"md{k:02d}"
        if (run / "run.json").is_file():
            error = None
        elif (run / "failed.json").is_file():
            error = json.loads((run / "failed.json").read_text())["error"]
        else:
            calc.reset()  # a fresh neighbour list for each start frame
            error = _trajectory(calc, atoms, temperature, config.seed + 1000 * round_index + k, run, config, progress)
        if error is not None:
            found.failures[run.name] = error
        if not (run / "trajectory.xyz").is_file() or (run / "trajectory.xyz").stat().st_size == 0:
            continue
        with _own_columns():
            frames = [f for f in iter_frames(run / "trajectory.xyz", format="extxyz", require_energy=False)
                      if int(f.info["step"]) > 0]
        for i, frame in enumerate(frames):
            found.add(f"r{round_index:03d}-md{k:02d}-s{int(frame.info['step']):06d}", frame,
                      float(frame.info["energy_std"]), frame.arrays["forces_std"], config,
                      failure=error is not None and i == len(frames) - 1)
    return found


def _explore_pool(calc: PbcgnnCalculator, config: LearnConfig, exclude: set[str]) -> Exploration:
    """Score the pool frames whose ids are not in ``exclude`` (labelled, or failed, in earlier rounds)."""
    found = Exploration()
    opts = dict(format=config.format, length_unit=config.length_unit, energy_unit=config.energy_unit)
    for k, atoms in enumerate(iter_frames(config.pool, require_energy=False, **opts)):
        frame_id = f"pool-{k:06d}"
        if frame_id in exclude:
            continue
        work = structure_of(atoms)
        work.calc = calc
        work.get_forces()
        found.add(frame_id, atoms, calc.results["energy_std"], calc.results["forces_std"], config)
    return found


def explore(committee: str | Path, config: LearnConfig, round_index: int, folder: Path, *, exclude: set[str],
            device: str, progress: bool = False) -> Exploration:
    """Explore with the committee checkpoint ``committee`` (MD into ``folder``, or the pool) and score the frames.

    Args:
        committee: the round's committee checkpoint.
        config: the run's options.
        round_index: the round (seeds and ids).
        folder: the round's ``explore`` folder (MD only).
        exclude: ids not to score again (pool only).
        device: torch device of the committee.
        progress: MD progress bars.
    """
    calc = PbcgnnCalculator.from_checkpoint(committee, device=device, tabulate=config.tabulate, skin=1.0)
    if config.pool is not None:
        return _explore_pool(calc, config, exclude)
    return _explore_md(calc, config, round_index, folder, progress)
