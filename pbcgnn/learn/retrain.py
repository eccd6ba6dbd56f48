"""Retraining between rounds: the committee continues from its last weights on every label so far.

The next committee is a fine-tuning run (:func:`pbcgnn.train.run.fit` with ``transfer.init_from``)
of the round's committee: member k starts from member k, with the committee's own architecture,
training options, freeze groups and bootstrap flag, for ``epochs``; its spread is recalibrated on
its validation frames at the end (:func:`pbcgnn.train.committee.fit_committee`). Its training
files are the committee's original ones (or ``--data``) and the ``labelled.xyz`` of every round.
"""
from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from ..checkpoint import checkpoint_config, read_checkpoint
from ..config import FINETUNE_LR, Config, DataConfig
from ..errors import InputError
from ..io import read_frames, write_frames
from ..model.calibration import Calibration
from ..train.run import FitResult, fit
from .config import LearnConfig

__all__ = ["base_data", "check_committee", "retrain"]

log = logging.getLogger(__name__)


def check_committee(path: str | Path) -> tuple[Config, dict]:
    """The config and the checkpoint dict of the committee checkpoint ``path``.

    Raises:
        InputError: not a checkpoint, or not a committee of at least 2 members; warns when it
            has no spread calibration (raw spreads then decide).
    """
    ckpt = read_checkpoint(path)
    if len(ckpt.get("members") or []) < 2:
        raise InputError("expected a committee checkpoint (train with --committee N, N >= 2)", path=path)
    if Calibration.from_dict(ckpt.get("calibration"), path).is_identity:
        log.warning("%s has no spread calibration: the threshold applies to the members' raw spread "
                    "(fit one with `pbcgnn calibrate`)", path)
    return checkpoint_config(ckpt, path), ckpt


def _converted(paths: tuple[str, ...], data: DataConfig, folder: Path, name: str) -> tuple[str, ...]:
    """``paths`` read with ``data``'s format, units and label keys, written once as extended XYZ in eV and
    Angstrom (so the labels, written that way, share one reader setting with them)."""
    out = []
    for k, path in enumerate(paths):
        frames = read_frames(path, data.format, data.length_unit, data.energy_unit, energy_key=data.energy_key,
                             forces_key=data.forces_key, stress_key=data.stress_key)
        target = folder / f"{name}_{k}.xyz"
        write_frames(target, frames, format="extxyz")
        out.append(str(target))
    return tuple(out)


def base_data(config: LearnConfig, committee: Config, out: Path) -> DataConfig:
    """The training data every retraining starts from: ``config.data`` (read with the default
    settings), else the committee's own training (and validation) files, as absolute paths.

    Files read with a non-default format, units or label keys are converted once into
    ``out/base`` as extended XYZ in eV and Angstrom.

    Raises:
        InputError: a training file that is not there (naming it; ``--data`` gives others).
    """
    data = DataConfig(paths=config.data) if config.data else committee.data
    for path in (*data.paths, *data.val_paths):
        if not Path(path).is_file():
            raise InputError("training file of the committee not found (give the files with --data)", path=path)
    data = replace(data, paths=tuple(str(Path(p).resolve()) for p in data.paths),
                   val_paths=tuple(str(Path(p).resolve()) for p in data.val_paths))
    plain = DataConfig(paths=data.paths, val_paths=data.val_paths)
    settings = ("format", "length_unit", "energy_unit", "energy_key", "forces_key", "stress_key")
    if all(getattr(data, s) == getattr(plain, s) for s in settings):
        return data
    log.info("converting the committee's training files to extended XYZ in eV and A under %s", out / "base")
    (out / "base").mkdir(parents=True, exist_ok=True)
    return replace(data, paths=_converted(data.paths, data, out / "base", "train"),
                   val_paths=_converted(data.val_paths, data, out / "base", "val"),
                   **{s: getattr(plain, s) for s in settings})


def retrain(previous: str | Path, base: DataConfig, labels: list[Path], config: LearnConfig, out: Path, *,
            device: str, progress: bool = False) -> FitResult:
    """Fine-tune the committee ``previous`` on ``base`` plus the label files into ``out``; an
    interrupted retraining (``out/last.pt`` there) is resumed, a finished one recombined as it was.

    Returns:
        The committee's :class:`FitResult`; ``out/best.pt`` explores the next round.
    """
    stored = checkpoint_config(read_checkpoint(previous), previous)
    lr = FINETUNE_LR if stored.train.lr > FINETUNE_LR > stored.train.min_lr else stored.train.lr  # keeps its weights
    train = replace(stored.train, epochs=config.epochs, max_minutes=config.max_minutes, stop_after=None,
                    device=device, lr=lr)
    run = Config(data=replace(base, paths=base.paths + tuple(str(p) for p in labels)), model=stored.model,
                 train=train, transfer=replace(stored.transfer, init_from=str(previous), init_member=0),
                 committee=stored.committee)
    resume = (out / "last.pt").is_file()
    log.info("retraining the committee on %d label file(s) and the base data%s", len(labels),
             " (resumed)" if resume else "")
    return fit(run, out, resume=resume, progress=progress)
