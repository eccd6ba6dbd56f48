"""fit(): one training run, a single model or a committee, new, fine-tuned or resumed."""
from __future__ import annotations

import os
from collections.abc import Collection
from pathlib import Path

from ..config import Config
from ..dataset import FrameDataset
from .committee import fit_committee
from .lock import run_lock
from .loop import fit_model, resumed_config
from .state import FitResult
from .transfer import resolve_config

__all__ = ["fit", "FitResult"]


def fit(
    config: Config,
    out_dir: str | os.PathLike,
    *,
    resume: bool = False,
    given: Collection[str] | None = None,
    progress: bool = True,
    datasets: tuple[FrameDataset, FrameDataset] | None = None,
) -> FitResult:
    """Train a SchNet potential (or a committee); write ``best.pt``, ``last.pt`` and TensorBoard
    logs to ``out_dir``.

    Training: AdamW, an EMA of the weights (validated and saved), the schedule of
    ``config.train``, early stopping, and ``best.pt`` chosen by the validation loss
    (:mod:`pbcgnn.train.loop`). With ``config.transfer.init_from`` the run fine-tunes that
    checkpoint: architecture and cutoff from it (:func:`pbcgnn.train.transfer.resolve_config`),
    its weights as the start, E0 refitted (and the scale re-estimated unless ``keep_scale``) on the
    training frames (:mod:`pbcgnn.train.reference`), ``freeze`` groups fixed. With
    ``config.committee.size`` N > 1, N members are trained into ``out_dir/member_K`` and combined
    (:func:`pbcgnn.train.committee.fit_committee`).

    The run holds ``out_dir`` while it trains (:func:`pbcgnn.train.lock.run_lock`): a second
    run on the same folder is refused, naming the first one's pid and host.

    Args:
        config: options (validated here); when resuming, the options stored in ``last.pt`` are
            used and only ``train.epochs``, ``train.max_minutes`` and ``train.stop_after`` may
            differ.
        out_dir: output folder (created).
        resume: continue from ``out_dir/last.pt``; reaches the same weights as an
            uninterrupted run with the same seed (on the same device).
        given: with ``resume``, the ``"section.field"`` options the caller set explicitly (as
            :func:`pbcgnn.train.loop.resumed_config`): a budget not given is kept, another given
            option must equal the stored one.
        progress: show a progress bar.
        datasets: ``(train, val)`` to use instead of reading ``config.data``; graphs built with
            a cutoff of at least the model's.

    Raises:
        TrainingError: the loss became NaN or inf; names the frames of the batch.
        InputError: bad options, data or checkpoints, or another live run trains in ``out_dir``.
    """
    out = Path(out_dir)
    with run_lock(out):  # before last.pt is read: one writer per folder, members' folders included
        saved = None
        if resume:
            config, saved = resumed_config(config, out, given)
        elif config.transfer.init_from is not None:
            config = resolve_config(config)
        config.validate()
        if config.committee.size > 1:
            return fit_committee(config, out, resume=resume, progress=progress, datasets=datasets)
        return fit_model(config, out, saved=saved, progress=progress, datasets=datasets)
