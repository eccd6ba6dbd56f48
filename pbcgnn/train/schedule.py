"""Learning-rate schedules that follow a run's budget of epochs or wall-clock minutes."""
from __future__ import annotations

import math

from ..config import TrainConfig
from .state import TrainState

__all__ = ["cosine_lr", "annealed_lr", "budget_progress", "scheduled_lr", "in_final_phase", "energy_weight",
           "validation_energy_weight"]


def cosine_lr(lr: float, min_lr: float, progress: float) -> float:
    """Half a cosine from ``lr`` (progress 0) to ``min_lr`` (progress 1 and beyond)."""
    p = min(max(progress, 0.0), 1.0)
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * p))


def annealed_lr(lr_from: float, min_lr: float, progress: float, anneal: float) -> float | None:
    """The rate in the final ``anneal`` fraction of the budget: half a cosine from ``lr_from``
    (where the plateaus left it) to ``min_lr``; ``None`` before that phase (or with ``anneal`` 0)."""
    start = 1.0 - anneal
    if anneal <= 0.0 or progress < start:
        return None
    return cosine_lr(lr_from, min(min_lr, lr_from), (progress - start) / anneal)


def budget_progress(tc: TrainConfig, epoch: int, step: int, steps: int, elapsed_s: float, epoch_s: float) -> float:
    """Fraction of the run's budget used before optimiser step ``step`` of ``steps`` in epoch
    ``epoch`` (both 0-based): the larger of the epochs done and the minutes used.

    Within an epoch the time is interpolated from ``elapsed_s`` (at the epoch's start) and
    ``epoch_s`` (the previous epoch's duration, 0 for the first), rather than read from the
    clock at every step: every data-parallel process then sets the same learning rate.
    """
    frac = step / max(steps, 1)
    progress = (epoch + frac) / tc.epochs
    if tc.max_minutes is not None:
        progress = max(progress, (elapsed_s + frac * epoch_s) / (60.0 * tc.max_minutes))
    return progress


def scheduled_lr(tc: TrainConfig, state: TrainState, current_lr: float, progress: float) -> float | None:
    """The learning rate at ``progress`` of the budget, or ``None`` to leave it to ReduceLROnPlateau.

    ``cosine`` follows :func:`cosine_lr`. ``plateau`` leaves the rate alone until the final
    anneal, which decays from the rate the plateaus left (``current_lr`` when it starts, then
    kept in ``state.anneal_from``, and so in ``last.pt``) to ``min_lr``. A resumed run given a
    larger budget returns from the anneal to that rate.
    """
    if tc.lr_schedule == "cosine":
        return cosine_lr(tc.lr, tc.min_lr, progress)
    lr_from = state.anneal_from if state.anneal_from is not None else current_lr
    lr = annealed_lr(lr_from, tc.min_lr, progress, tc.anneal)
    if lr is not None:
        state.anneal_from = lr_from
    elif state.anneal_from is not None:  # --resume gave a finished run a larger budget: back to the plateaus
        lr, state.anneal_from = state.anneal_from, None
    return lr


def in_final_phase(tc: TrainConfig, progress: float) -> bool:
    """Whether ``progress`` lies in the last ``anneal`` fraction of the budget."""
    return tc.anneal > 0.0 and progress >= 1.0 - tc.anneal


def energy_weight(tc: TrainConfig, progress: float) -> float:
    """The loss's energy weight at ``progress``. With ``final_energy_weight`` set, over the final
    phase it rises from ``energy_weight`` to ``final_energy_weight`` as the annealed rate falls:
    geometrically, along the same half cosine (linearly when either weight is 0).

    A sudden tenfold jump at a high rate blew a run up: Adam's second-moment average (~1000
    steps) still holds the old gradient scale, so the first steps after it are far too long.
    """
    if tc.final_energy_weight is None or not in_final_phase(tc, progress):
        return tc.energy_weight
    start, end = tc.energy_weight, tc.final_energy_weight
    s = 1.0 - cosine_lr(1.0, 0.0, (progress - (1.0 - tc.anneal)) / tc.anneal)  # 0 -> 1 over the phase
    if start > 0.0 and end > 0.0:
        return start * (end / start) ** s
    return start + (end - start) * s


def validation_energy_weight(tc: TrainConfig, progress: float) -> float:
    """The energy weight of the validation loss at ``progress``: the final one throughout the final
    phase, so that its epochs compare with each other while the training weight rises."""
    if tc.final_energy_weight is not None and in_final_phase(tc, progress):
        return tc.final_energy_weight
    return tc.energy_weight
