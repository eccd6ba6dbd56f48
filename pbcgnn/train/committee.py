"""fit_committee(): train N members (own seeds, optional bootstrap) and combine them into one checkpoint."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..checkpoint import combine_checkpoints, model_from_checkpoint, read_checkpoint, save_checkpoint
from ..config import Config
from ..dataset import FrameDataset, load_datasets
from ..device import resolve_device
from ..errors import InputError
from ..evaluation.calibration import fit_calibration, recalibrate
from ..evaluation.metrics import prediction_metrics
from ..evaluation.predict import predict
from .loop import RESUMABLE, fit_model, resumed_config
from .state import FitResult

__all__ = ["fit_committee", "member_config"]

log = logging.getLogger(__name__)


def member_config(config: Config, k: int, init_members: int = 1) -> Config:
    """The single-model config of member ``k``: seed ``train.seed + k``, committee size 1 (the
    bootstrap flag kept, so the member draws its own resample from its seed) and, when
    fine-tuning from a committee of ``init_members``, member ``k % init_members`` as the start."""
    changes: dict[str, dict[str, Any]] = {"train": {"seed": config.train.seed + k}, "committee": {"size": 1}}
    if config.transfer.init_from is not None:
        changes["transfer"] = {"init_member": k % init_members}
    return config.replace(**changes)


def _calibrate(ckpt: dict[str, Any], val_set: FrameDataset, device) -> dict[str, float]:
    """Fit the spread calibration on the validation frames into ``ckpt``; return the errors of the
    committee mean and the scores of its calibrated spread there (in-sample for the calibration).

    Too few labelled validation frames leave the identity (raw spreads), with a warning.
    """
    model = model_from_checkpoint(ckpt, device=device)
    pred = predict(model, val_set, device=device)
    try:
        calibration = fit_calibration(pred, fitted_on="the training run's validation frames")
    except InputError as err:
        log.warning("committee spread not calibrated (raw spreads reported): %s; fit one on more frames "
                    "with `pbcgnn calibrate`", err)
        return prediction_metrics(pred, model.calibration)
    ckpt["calibration"] = calibration.to_dict()
    log.info("committee calibration: %s", calibration.describe())
    return prediction_metrics(recalibrate(pred, calibration), calibration)


def _fit_members(config: Config, out: Path, resume: bool, progress: bool,
                 datasets: tuple[FrameDataset, FrameDataset]) -> list[FitResult]:
    """Each member as an ordinary single-model run in ``out/member_k``, on the shared split."""
    init_members = 1
    if config.transfer.init_from is not None:
        init_members = len(read_checkpoint(config.transfer.init_from).get("members", [None]))
    results = []
    for k in range(config.committee.size):
        member_dir = out / f"member_{k}"
        again = resume and (member_dir / "last.pt").is_file()
        log.info("committee member %d of %d (seed %d)%s", k + 1, config.committee.size, config.train.seed + k,
                 ", resumed" if again else "")
        member, saved = member_config(config, k, init_members), None
        if again:
            # the committee's call already chose what it takes; each member takes it up, unless its
            # final phase began
            member, saved = resumed_config(member, member_dir, RESUMABLE)
        results.append(fit_model(member.validate(), member_dir, saved=saved, progress=progress, datasets=datasets))
        if results[-1].stopped == "paused":  # --stop-after: the rest waits for --resume
            break
    return results


def fit_committee(config: Config, out_dir, *, resume: bool = False, progress: bool = True,
                  datasets: tuple[FrameDataset, FrameDataset] | None = None) -> FitResult:
    """Train ``config.committee.size`` members one after the other, then combine them.

    Member k is an ordinary single-model run in ``out_dir/member_k`` with the config of
    :func:`member_config`; all members share the training/validation split. ``out_dir/best.pt``
    combines the members' ``best.pt`` and ``out_dir/last.pt`` their ``last.pt``; both load as a
    :class:`pbcgnn.model.Committee`. Each holds the calibration of its spread fitted on the
    validation frames (:func:`pbcgnn.evaluation.calibration.fit_calibration`), and its
    ``metrics`` are the committee mean's validation errors and the calibrated spread's scores. ``train.max_minutes`` applies to each member; ``train.stop_after``
    to each member's part, and a paused member pauses the committee (``stopped`` is ``paused``).

    Args:
        config: validated committee config (``committee.size`` > 1).
        out_dir: output folder.
        resume: resume unfinished members from their ``last.pt`` and train missing ones.
        progress, datasets: as :func:`pbcgnn.train.run.fit`.

    Returns:
        The committee's :class:`FitResult`; ``history`` holds every member's epochs with a ``member`` key.
    """
    out = Path(out_dir)
    n = config.committee.size
    if not resume:  # a resumable marker first: an interrupted committee run is resumed as one
        save_checkpoint(out / "last.pt", {"config": config.to_dict(), "model": {}, "elements": [], "epoch": 0,
                                          "train_state": {"committee_size": n}})
    datasets = datasets if datasets is not None else load_datasets(config)
    results = _fit_members(config, out, resume, progress, datasets)
    history = [{**rec, "member": k} for k, r in enumerate(results) for rec in r.history]
    trained = sum(r.trained for r in results)
    if results[-1].stopped == "paused":  # nothing to combine yet; the marker last.pt resumes it
        return FitResult(results[-1].best, results[-1].last, results[-1].metrics, history, "paused", trained)
    dirs = [out / f"member_{k}" for k in range(n)]
    device = resolve_device(config.train.device)
    metrics = {}
    for name in ("best", "last"):
        ckpt = combine_checkpoints(config, [read_checkpoint(getattr(r, name)) for r in results], dirs)
        if name == "last":
            ckpt["train_state"] = {"committee_size": n}
        metrics[name] = ckpt["metrics"] = _calibrate(ckpt, datasets[1], device)
        save_checkpoint(out / f"{name}.pt", ckpt)
    m = metrics["best"]
    log.info("committee of %d: val E RMSE %.3f meV/atom, F RMSE %.1f meV/A; spread vs error Spearman "
             "energy %.2f, forces %.2f", n, m["energy_rmse_mev_per_atom"], m["force_rmse_mev_per_A"],
             m["spearman_energy"], m["spearman_forces"])
    stopped = "; ".join(f"member {k}: {r.stopped}" for k, r in enumerate(results))
    return FitResult(out / "best.pt", out / "last.pt", metrics["best"], history, stopped, trained)
