"""Checkpoint-driven evaluation: errors of a trained model on data files, written as metrics.json,
predictions.xyz and plots (metric definitions: :mod:`pbcgnn.evaluation.metrics`).

Files are evaluated as a stream, in bounded memory for any number of frames: the graphs of a
chunk of frames are built, predicted in batches and dropped (:func:`~pbcgnn.evaluation.predict.graph_chunks`),
after their errors are added up (:class:`~pbcgnn.evaluation.running.RunningMetrics`: the same
numbers as over all predictions at once) and their predictions appended to ``predictions.xyz``,
which is written under a temporary name and renamed when complete.

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
from collections.abc import Iterable, Sequence
from pathlib import Path

import ase.io
from torch_geometric.data import Data

from ..checkpoint import load_checkpoint
from ..config import Config
from ..dataset import iter_graphs, load_datasets
from ..errors import InputError, OutputError
from ..model import Calibration, Committee
from .predict import Predictions, graph_chunks, predict, predictions_to_atoms
from .running import RunningMetrics

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

    The files are read one frame at a time and evaluated a chunk of frames at a time, so memory
    does not grow with their size (module docstring). A bad frame stops the run when it is
    reached, with the reader's one-line error; ``predictions.xyz`` is then not written.

    Returns:
        Metrics per data file (keyed by the path as given) plus ``"total"``.

    Raises:
        InputError: an unreadable file, or a frame the model cannot know (naming file and frame).
    """
    if not paths:
        raise InputError("expected at least one data file, found none")
    model, ckpt = load_checkpoint(checkpoint, device=device)
    read = dict(format=format, length_unit=length_unit, energy_unit=energy_unit, energy_key=energy_key,
                forces_key=forces_key, stress_key=stress_key, **_support(ckpt))
    sources = [(os.fspath(path), iter_graphs(path, model.cutoff, **read)) for path in paths]  # read when reached
    return _report(model, sources, out_dir, plot, device, batch_size)


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
    return _report(model, [("validation", (val[i] for i in range(len(val))))], out_dir, plot, device, batch_size)


def _calibration(model) -> Calibration | None:
    """A committee's calibration (logged: whether its spreads are calibrated), None for a single model."""
    if not isinstance(model, Committee):
        return None
    log.info("committee calibration: %s", model.calibration.describe())
    return model.calibration


def _report(model, sources: Sequence[tuple[str, Iterable[Data]]], out_dir: str | os.PathLike, plot: bool,
            device: str, batch_size: int) -> dict[str, dict[str, float]]:
    """Evaluate each named stream of graphs; write metrics.json, predictions.xyz and parity.png
    (committees: calibration.png). Returns the metrics per name, plus ``"total"``."""
    calibration = _calibration(model)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with PartialFile(out / "predictions.xyz") as written:
        named = _evaluate_streams(model, sources, written, device, batch_size)
        results = {name: running.metrics(calibration) for name, running in named.items()}
        target = out / "metrics.json"
        try:  # a full disk mid-write: one line naming the file being written
            with open(target, "w") as f:
                extra = {"calibration": calibration.to_dict()} if calibration is not None else {}
                json.dump({**results, **extra}, f, indent=2)
        except OSError as err:
            raise OutputError.from_os(err, target) from None
        written.commit()
    if plot:
        _plot(named["total"], out)
    return results


def _evaluate_streams(model, sources: Sequence[tuple[str, Iterable[Data]]], written: PartialFile, device: str,
                      batch_size: int) -> dict[str, RunningMetrics]:
    """Predict every stream chunk by chunk, adding each chunk to its metrics and the total and
    appending it to ``written``; nothing per atom outlives its chunk but the metrics' sample."""
    named: dict[str, RunningMetrics] = {}
    total = RunningMetrics() if len(sources) > 1 else None  # one source: its metrics are the total
    for name, graphs in sources:
        running, frames = RunningMetrics(), 0
        named[name] = running
        for chunk in graph_chunks(graphs, batch_size):
            pred = predict(model, chunk, device=device, batch_size=batch_size)
            for metrics in (running, total):
                if metrics is not None:
                    metrics.add(pred)
            written.write_predictions(pred)
            frames += len(chunk)
        log.info("%s: %d frames evaluated", name, frames)
    named["total"] = total if total is not None else running
    return named


def _plot(running: RunningMetrics, out: Path) -> None:
    """parity.png and, for a committee, calibration.png."""
    from .plots import calibration_plot, parity_plot  # matplotlib only when plotting

    target = out / "parity.png"
    try:
        parity_plot(running, target)
        if running.committee:
            target = out / "calibration.png"
            calibration_plot(running, target)
    except OSError as err:
        raise OutputError.from_os(err, target) from None


class PartialFile:
    """``predictions.xyz`` written as the predictions come, under a temporary name beside ``path``
    (``.NAME.partial-PID``) renamed to ``path`` by :meth:`commit`: a run that fails midway leaves
    neither a half file under the final name nor the temporary one.

    Raises:
        OutputError: the file cannot be written, naming ``path``.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
        self._file = None

    def __enter__(self) -> PartialFile:
        try:
            self._file = open(self.partial, "w")
        except OSError as err:
            raise OutputError.from_os(err, self.path) from None
        return self

    def write_predictions(self, pred: Predictions) -> None:
        """Append frames with predicted and reference labels (:func:`~pbcgnn.evaluation.predict.predictions_to_atoms`)."""
        try:
            ase.io.write(self._file, predictions_to_atoms(pred), format="extxyz")
        except OSError as err:
            raise OutputError.from_os(err, self.path) from None

    def commit(self) -> None:
        """Close the file and give it its final name."""
        try:
            self._file.close()
            os.replace(self.partial, self.path)
        except OSError as err:
            raise OutputError.from_os(err, self.path) from None

    def __exit__(self, *exc) -> None:
        self._file.close()
        self.partial.unlink(missing_ok=True)  # gone after commit; else the half file
