"""Checkpoint-driven evaluation: errors of a trained model on data files, written as metrics.json,
predictions.xyz and plots (metric definitions: :mod:`pbcgnn.evaluation.metrics`).

For a committee checkpoint the predictions are the committee mean, and the report adds the
spread scored as an uncertainty (:func:`pbcgnn.evaluation.metrics.calibration_metrics`: Spearman,
coverage, miscalibration area, NLL, all of the calibrated spread), ``calibration.png``, and in
``metrics.json`` the committee's stored calibration under ``"calibration"`` (the identity for a
checkpoint without one: then every score is of the raw spread).
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import ase.io

from ..checkpoint import load_checkpoint
from ..config import Config
from ..dataset import FrameDataset, load_datasets
from ..errors import OutputError
from ..model import Calibration, Committee
from .metrics import prediction_metrics
from .predict import Predictions, concat_predictions, predict, predictions_to_atoms

__all__ = ["evaluate", "evaluate_validation"]

log = logging.getLogger(__name__)


def evaluate(
    checkpoint: str | os.PathLike,
    paths: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    format: str | None = None,
    length_unit: str | None = None,
    energy_unit: str | None = None,
    device: str = "cpu",
    batch_size: int = 8,
    plot: bool = True,
    energy_key: str | None = None,
    forces_key: str | None = None,
    stress_key: str | None = None,
) -> dict[str, dict[str, float]]:
    """Evaluate a checkpoint on data files; write ``metrics.json``, ``predictions.xyz``
    and ``parity.png`` to ``out_dir``.

    Frames the model cannot know are refused, as by the calculator and ``pbcgnn md``
    (:func:`pbcgnn.io.checks.check_supported`): elements outside the checkpoint's
    ``elements``, and, for a model trained on periodic frames (``periodic``, default True),
    frames without a 3-D periodic cell.

    Returns:
        Metrics per data file (keyed by the path as given) plus ``"total"``.

    Raises:
        InputError: an unreadable file, or a frame the model cannot know (naming file and frame).
    """
    model, ckpt = load_checkpoint(checkpoint, device=device)
    read = dict(format=format, length_unit=length_unit, energy_unit=energy_unit, energy_key=energy_key,
                forces_key=forces_key, stress_key=stress_key, **_support(ckpt))
    named = {}
    for path in paths:
        dataset = FrameDataset(path, model.cutoff, **read)
        named[os.fspath(path)] = predict(model, dataset, device=device, batch_size=batch_size)
    return _report(named, out_dir, plot, _calibration(model))


def _support(ckpt: dict) -> dict:
    """What the model knows: training elements, and whether it was trained on periodic frames."""
    return {"elements": ckpt.get("elements"), "periodic": bool(ckpt.get("periodic", True))}


def evaluate_validation(
    checkpoint: str | os.PathLike, out_dir: str | os.PathLike, *, device: str = "cpu", batch_size: int = 8,
    plot: bool = True,
) -> dict[str, dict[str, float]]:
    """Evaluate a checkpoint on the validation frames of its own training run (same files, split and seed)."""
    model, ckpt = load_checkpoint(checkpoint, device=device)
    _, val = load_datasets(Config.from_dict(ckpt["config"]), **_support(ckpt))
    pred = predict(model, val, device=device, batch_size=batch_size)
    return _report({"validation": pred}, out_dir, plot, _calibration(model))


def _calibration(model) -> Calibration | None:
    """A committee's calibration (logged: whether its spreads are calibrated), None for a single model."""
    if not isinstance(model, Committee):
        return None
    log.info("committee calibration: %s", model.calibration.describe())
    return model.calibration


def _report(named: dict[str, Predictions], out_dir: str | os.PathLike, plot: bool,
            calibration: Calibration | None = None) -> dict[str, dict[str, float]]:
    """metrics.json, predictions.xyz and parity.png (committees: calibration.png) per data source."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    named = {**named, "total": concat_predictions(list(named.values()))}
    results = {name: prediction_metrics(p, calibration) for name, p in named.items()}
    total = named["total"]
    target = out / "metrics.json"
    try:  # a full disk mid-write: one line naming the file being written
        with open(target, "w") as f:
            extra = {"calibration": calibration.to_dict()} if calibration is not None else {}
            json.dump({**results, **extra}, f, indent=2)
        target = out / "predictions.xyz"
        ase.io.write(target, predictions_to_atoms(total), format="extxyz")
        if plot:
            from .plots import calibration_plot, parity_plot  # matplotlib only when plotting

            target = out / "parity.png"
            parity_plot(total, target)
            if total.energy_std is not None:
                target = out / "calibration.png"
                calibration_plot(total, target)
    except OSError as err:
        raise OutputError.from_os(err, target) from None
    return results
