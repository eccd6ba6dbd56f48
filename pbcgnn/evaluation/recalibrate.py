"""Refitting a committee checkpoint's spread calibration on labelled frames (``pbcgnn calibrate``)."""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..checkpoint import model_from_checkpoint, read_checkpoint, save_checkpoint
from ..dataset import FrameDataset
from ..errors import InputError, ensure_writable_dir
from ..model import Calibration
from .calibration import fit_calibration, recalibrate
from .metrics import prediction_metrics
from .predict import concat_predictions, predict
from .report import _support

__all__ = ["CalibrationResult", "calibrate_checkpoint"]

log = logging.getLogger(__name__)


@dataclass
class CalibrationResult:
    """What :func:`calibrate_checkpoint` did.

    Attributes:
        calibration: the new calibration, as written.
        previous: the checkpoint's calibration before (the identity if it had none).
        before, after: :func:`pbcgnn.evaluation.metrics.prediction_metrics` on the frames with
            the previous and the new calibration (``after`` is in-sample).
        out: the checkpoint written.
    """

    calibration: Calibration
    previous: Calibration
    before: dict[str, float]
    after: dict[str, float]
    out: Path


def calibrate_checkpoint(
    checkpoint: str | os.PathLike,
    paths: Sequence[str | os.PathLike],
    out: str | os.PathLike | None = None,
    *,
    device: str = "cpu",
    batch_size: int = 8,
    **read,
) -> CalibrationResult:
    """Fit the spread calibration of a committee checkpoint on the labelled frames of ``paths``
    (:func:`pbcgnn.evaluation.calibration.fit_calibration`) and write the checkpoint with it.

    The rest of the checkpoint (weights, config, members, training state) is written unchanged.
    The file is written next to ``out`` and renamed (:func:`pbcgnn.checkpoint.save_checkpoint`),
    so a failed write leaves an existing file, ``checkpoint`` itself included, intact.

    Args:
        checkpoint: a committee checkpoint (``pbcgnn train --committee N``).
        paths: data files with reference energies (and forces, to calibrate the force spread).
        out: the checkpoint to write (default: ``checkpoint`` itself).
        device, batch_size: for the predictions.
        **read: how to read the files (``format``, ``length_unit``, ``energy_unit``, label keys:
            :class:`pbcgnn.dataset.FrameDataset`).

    Raises:
        InputError: not a committee checkpoint, ``out`` a folder, an unreadable file, frames the
            model cannot know, or fewer labelled frames than a calibration needs (naming the file).
        OutputError: ``out`` cannot be written (its folder is checked before any work).
    """
    out = Path(out if out is not None else checkpoint)
    if out.is_dir():
        raise InputError("expected a file name for the calibrated checkpoint, found a folder", path=out)
    ensure_writable_dir(out.parent)
    ckpt = read_checkpoint(checkpoint)
    if len(ckpt.get("members") or []) < 2:
        raise InputError("expected a committee checkpoint (train with --committee N, N >= 2), found a single "
                         "model: only a committee has a spread to calibrate", path=checkpoint)
    model = model_from_checkpoint(ckpt, device=device, path=checkpoint)
    preds = [predict(model, FrameDataset(p, model.cutoff, **read, **_support(ckpt)), device=device,
                     batch_size=batch_size) for p in paths]
    pred = concat_predictions(preds)
    names = ", ".join(os.fspath(p) for p in paths)
    try:
        calibration = fit_calibration(pred, fitted_on=names)
    except InputError as err:
        raise InputError(err.reason, path=names) from None
    ckpt["calibration"] = calibration.to_dict()
    save_checkpoint(out, ckpt)
    log.info("calibration of %s: %s", out, calibration.describe())
    return CalibrationResult(calibration, model.calibration, prediction_metrics(pred, model.calibration),
                             prediction_metrics(recalibrate(pred, calibration), calibration), out)
