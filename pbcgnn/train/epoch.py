"""One epoch: optimiser steps over the training frames, and the validation that judges it."""
from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import torch

from ..config import TrainConfig
from ..errors import TrainingError
from ..evaluation.metrics import error_metrics
from ..evaluation.predict import predict
from ..model import compute_properties
from . import distributed
from .distributed import Context
from .loss import ValidationLoss, energy_force_loss, loss_denominators
from .setup import Training

__all__ = ["train_epoch", "validate", "finite", "check_finite"]


def finite(tensors) -> bool:
    """Whether every floating-point tensor of ``tensors`` is free of NaN and inf (one device sync)."""
    flags = [torch.isfinite(t.detach()).all() for t in tensors if t.is_floating_point()]
    return not flags or bool(torch.stack(flags).all())


def check_finite(training: Training, val: dict[str, float], epoch: int, out: Path) -> None:
    """Stop before an epoch whose validation loss or weights (raw or EMA) are NaN or inf is saved:
    no checkpoint ever holds them, and a plateau or best.pt never compares a NaN.

    Raises:
        TrainingError: naming the epoch and what is not finite.
    """
    bad = [what for what, ok in (("validation loss", math.isfinite(val["loss"])),
                                 ("weights", finite(training.model.state_dict().values())),
                                 ("EMA weights", finite(training.eval_model.state_dict().values()))) if not ok]
    if bad:
        raise TrainingError(f"epoch {epoch + 1}: NaN or inf in the {' and '.join(bad)} (validation loss {val['loss']:.4g}); "
                            f"training stopped, the last good checkpoints in {out} are kept")


def train_epoch(net: torch.nn.Module, training: Training, loader, tc: TrainConfig, ctx: Context,
                device: torch.device, epoch: int, out: Path,
                lr_at: Callable[[int, int], float | None] | None = None,
                energy_weight_at: Callable[[int, int], float] | None = None) -> dict[str, float]:
    """One pass over this process's share of the training frames; returns the mean loss terms.

    ``lr_at(step, steps)``, when given, sets the learning rate before every optimiser step
    (unless it returns ``None``); ``energy_weight_at(step, steps)`` the loss's energy weight
    (default ``tc.energy_weight``).

    ``net`` is ``training.model`` or its DistributedDataParallel wrapper. With W processes each
    loss is normalised by the global batch and multiplied by W, because DDP averages the gradients.

    Raises:
        TrainingError: the loss (on any process) or the weights after a step are NaN or inf; names
            the frames of the batch.
    """
    model, optimizer = training.model, training.optimizer
    model.train()
    sums = torch.zeros(3, dtype=torch.float64)
    n_batches = 0
    steps = len(loader)
    for step_index, batch in enumerate(loader):
        lr = lr_at(step_index, steps) if lr_at is not None else None
        if lr is not None:
            for group in optimizer.param_groups:
                group["lr"] = lr
        batch = batch.to(device)
        pred = compute_properties(net, batch, forces=True, training=True)
        denominators = distributed.global_sum(loss_denominators(batch), ctx)
        ew = energy_weight_at(step_index, steps) if energy_weight_at is not None else tc.energy_weight
        loss, terms = energy_force_loss(pred, batch, ew, tc.force_weight, denominators, tc.huber_delta)
        step = distributed.global_sum(torch.stack([loss.detach(), terms["energy"], terms["force"]]).double().cpu(), ctx)
        if not torch.isfinite(step).all():  # the same verdict on every rank: none is left waiting
            raise TrainingError(
                f"epoch {epoch + 1}: loss is {loss.item()} on frames {', '.join(batch.source)}; "
                f"training stopped, the last good checkpoints in {out} are kept")
        optimizer.zero_grad(set_to_none=True)
        (loss * ctx.world_size).backward()
        if tc.clip_grad > 0:
            torch.nn.utils.clip_grad_norm_(training.trainable, tc.clip_grad)
        optimizer.step()
        if not finite(training.trainable):  # e.g. an inf gradient: Adam's step is then NaN
            raise TrainingError(
                f"epoch {epoch + 1}: the weights became NaN or inf in the step on frames {', '.join(batch.source)} (loss "
                f"{loss.item():.4g}); training stopped, the last good checkpoints in {out} are kept")
        if training.ema is not None:
            training.ema.update_parameters(model)
        sums += step
        n_batches += 1
    means = (sums / max(n_batches, 1)).tolist()
    return {"loss": means[0], "energy": means[1], "force": means[2]}


def validate(model: torch.nn.Module, loader, device: torch.device, energy_weight: float,
             force_weight: float) -> dict[str, float]:
    """Validation errors (:func:`pbcgnn.evaluation.metrics.error_metrics`) and ``loss``, the training
    loss (with these weights) over all validation frames (frame weights included), which picks
    ``best.pt``, stops early and drives the plateau schedule."""
    loss = ValidationLoss(energy_weight, force_weight)
    metrics = error_metrics(predict(model, loader, device=device, on_batch=loss.add))
    metrics["loss"] = loss.value()
    return metrics
