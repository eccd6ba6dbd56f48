"""fit(): AdamW, ReduceLROnPlateau, EMA, validation, TensorBoard, checkpoints, early stop, resume.

Fine-tuning (``config.transfer``: start from a checkpoint, refit E0, freeze groups) and
bootstrap resampling (``config.committee.bootstrap``) happen here; committees of several
models are trained member by member by :func:`pbcgnn.train.committee.fit_committee`.
"""
from __future__ import annotations

import functools
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch_geometric.loader import DataLoader

from ..committee import bootstrap_indices
from ..dataset import FrameDataset
from ..errors import InputError, TrainingError
from ..evaluate import error_metrics, predict
from ..model import compute_properties
from ..model.reference import estimate_scale, fit_reference_energies
from ..transfer import freeze_parameters, load_init_weights, refit_reference, resolve_config
from .checkpoint import build_model, read_checkpoint, save_checkpoint
from .config import Config
from . import distributed
from .distributed import make_sampler
from .loss import energy_force_loss, loss_denominators
from .schedule import annealed_lr, budget_progress, cosine_lr

__all__ = ["fit", "FitResult", "resolve_device", "load_datasets"]

log = logging.getLogger(__name__)


@dataclass
class FitResult:
    """What a run produced: checkpoint paths, best validation metrics, per-epoch history."""

    best: Path
    last: Path
    metrics: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    stopped: str = "epochs"


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without CUDA is an input error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"device {name!r} requested but CUDA is not available")
    return torch.device(name)


def load_datasets(config: Config) -> tuple[FrameDataset, FrameDataset]:
    """Training and validation graphs: separate files, or a seeded random split."""
    d = config.data
    opts = dict(root=d.cache_dir, format=d.format, length_unit=d.length_unit, energy_unit=d.energy_unit)
    full = FrameDataset(list(d.paths), config.model.cutoff, **opts)
    if d.val_paths:
        return full, FrameDataset(list(d.val_paths), config.model.cutoff, **opts)
    train, val = full.split((1.0 - d.val_fraction, d.val_fraction), seed=d.split_seed)
    return train, val


def _fit_reference(model: torch.nn.Module, train: FrameDataset) -> dict[str, Any]:
    """Per-element E0 (float64 least squares) and the energy scale, from the training set only."""
    numbers = [g.z.numpy() for g in train]
    energies = np.array([float(g.energy) for g in train])
    e0, info = fit_reference_energies(numbers, energies)
    residual = np.array([(e - sum(e0[int(z)] for z in zs)) / len(zs) for zs, e in zip(numbers, energies)])
    forces = [g.forces.numpy() for g in train if bool(g.has_forces)]
    scale = estimate_scale(forces, residual)
    with torch.no_grad():
        for z, value in e0.items():
            model.reference.e0[z] = value
        model.reference.scale.fill_(scale)
    base_e = float(np.sqrt(np.mean((residual - residual.mean()) ** 2)) * 1000)
    base_f = float(np.sqrt(np.mean(np.concatenate([f.ravel() for f in forces]) ** 2)) * 1000) if forces else math.nan
    log.info("E0 per element (eV): %s; scale %.4f eV; rank %s", {int(k): round(v, 6) for k, v in e0.items()},
             scale, info.get("rank"))
    log.info("baseline on the training set: energy RMSE %.3f meV/atom (E0 only), force RMSE %.1f meV/A (zero)",
             base_e, base_f)
    return {"e0": {int(k): float(v) for k, v in e0.items()}, "scale": scale, **info}


def _validate(model, loader, device, tc, force_weight: float) -> dict[str, float]:
    """Validation metrics and ``loss``, the number that picks ``best.pt``, stops early and drives
    the plateau schedule: ``energy_weight * MSE(E/N) + force_weight * MSE(F)``."""
    pred = predict(model, loader, device=device)
    m = error_metrics(pred)
    e = (m["energy_rmse_mev_per_atom"] / 1000) ** 2
    f = (m["force_rmse_mev_per_A"] / 1000) ** 2 if not math.isnan(m["force_rmse_mev_per_A"]) else 0.0
    m["loss"] = tc.energy_weight * e + force_weight * f
    return m


def fit(
    config: Config,
    out_dir: str | os.PathLike,
    *,
    resume: bool = False,
    progress: bool = True,
    datasets: tuple[FrameDataset, FrameDataset] | None = None,
) -> FitResult:
    """Train a SchNet potential (or a committee); write ``best.pt``, ``last.pt`` and TensorBoard
    logs to ``out_dir``.

    With ``config.transfer.init_from`` the run fine-tunes that checkpoint: architecture and
    cutoff from it (:func:`pbcgnn.transfer.resolve_config`), its weights as the start, E0 refitted
    (and the scale re-estimated unless ``keep_scale``) on the training frames, ``freeze`` groups
    fixed. With ``config.committee.size`` N > 1, N members are trained into ``out_dir/member_K``
    and combined (:func:`pbcgnn.train.committee.fit_committee`).

    Args:
        config: options (validated here); when resuming, the options stored in ``last.pt`` are
            used and only ``train.epochs`` and ``train.max_minutes`` may differ.
        out_dir: output folder (created).
        resume: continue from ``out_dir/last.pt``; reaches the same weights as an
            uninterrupted run with the same seed (on the same device).
        progress: show a progress bar.
        datasets: ``(train, val)`` to use instead of reading ``config.data``; graphs built with
            a cutoff of at least the model's.

    Raises:
        TrainingError: the loss became NaN or inf; names the frames of the batch.
        InputError: bad options, data or checkpoints.
    """
    from torch.utils.tensorboard import SummaryWriter
    from tqdm.auto import tqdm

    out = Path(out_dir)
    state = None
    if resume:
        ckpt = read_checkpoint(out / "last.pt")
        if "train_state" not in ckpt:
            raise InputError("checkpoint has no training state to resume from", path=out / "last.pt")
        stored = Config.from_dict(ckpt["config"])
        config = stored.replace(train={"epochs": config.train.epochs, "max_minutes": config.train.max_minutes})
        state = ckpt["train_state"]
    elif config.transfer.init_from is not None:
        config = resolve_config(config)
    config.validate()
    if config.committee.size > 1:
        from .committee import fit_committee

        return fit_committee(config, out, resume=resume, progress=progress, datasets=datasets)
    tc = config.train
    ctx = distributed.setup(resolve_device(tc.device))
    device = distributed.device_for(ctx, resolve_device(tc.device))
    torch.manual_seed(tc.seed)
    train_set, val_set = datasets if datasets is not None else load_datasets(config)
    if config.committee.bootstrap:
        train_set = train_set[bootstrap_indices(len(train_set), tc.seed)]
        log.info("bootstrap resample (seed %d): %d frames, %d distinct", tc.seed, len(train_set),
                 len(set(train_set.indices())))
    model = build_model(config).to(device)
    if state is not None:
        reference_info = state["reference"]
    elif config.transfer.init_from is not None:
        load_init_weights(model, config.transfer.init_from, config.transfer.init_member)
        reference_info = refit_reference(model, train_set, config.transfer.keep_scale, device)
    else:
        reference_info = _fit_reference(model, train_set)
    freeze_parameters(model, config.transfer.freeze)
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise InputError(f"every parameter is frozen ({', '.join(config.transfer.freeze)}): nothing to train")
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(tc.ema_decay), use_buffers=True) \
        if tc.ema_decay > 0 else None
    optimizer = torch.optim.AdamW(trainable, lr=tc.lr, weight_decay=tc.weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, factor=tc.lr_factor, patience=tc.lr_patience, min_lr=tc.min_lr)
    loop = {"epoch": 0, "best_loss": math.inf, "bad_epochs": 0, "history": [], "best_metrics": {}}
    if state is not None:
        model.load_state_dict(state["model"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        loop = state["loop"]
    # One sampler for one process or many: the shuffle depends only on seed and epoch, so W
    # processes see the same global batches as one, and a resumed run the same as an unbroken one.
    sampler, per_rank = make_sampler(train_set, ctx, tc.batch_size, tc.seed)
    train_loader = DataLoader(train_set, batch_size=per_rank, sampler=sampler)
    val_loader = DataLoader(val_set, batch_size=max(tc.batch_size, 8), shuffle=False)
    net = DistributedDataParallel(model) if ctx.distributed else model
    eval_model = ema.module if ema is not None else model
    writer = SummaryWriter(log_dir=os.fspath(out)) if ctx.is_main else None
    # Select on what is trained: with energies only (e.g. CCSD(T) fine-tuning), validation forces
    # would pick the epoch that moved least from the start, not the one with the best energies.
    val_force_weight = tc.force_weight if any(bool(g.has_forces) for g in train_set) else 0.0
    if val_force_weight == 0.0 and tc.force_weight > 0:
        log.info("no training frame has forces: the validation loss (best.pt, early stopping, plateau) "
                 "counts energies only; validation force errors are still reported")
    log.info("training on %d frames, validating on %d, device %s, %d process(es), %d parameters (%d trainable)",
             len(train_set), len(val_set), device, ctx.world_size, sum(p.numel() for p in model.parameters()),
             sum(p.numel() for p in trainable))

    elapsed_before = loop.get("elapsed_s", 0.0)  # wall time of the resumed parts
    t_start, stopped = time.monotonic(), "epochs"
    out_of_time = tc.max_minutes is not None and elapsed_before > 60 * tc.max_minutes
    if out_of_time:  # a resumed run that had already used its minutes: nothing to add
        stopped = "time limit"
    bar = tqdm(range(loop["epoch"], loop["epoch"] if out_of_time else tc.epochs), initial=loop["epoch"],
               total=tc.epochs,
               disable=not (progress and ctx.is_main), desc="epochs", unit="epoch")
    for epoch in bar:
        t0 = time.monotonic()
        sampler.set_epoch(epoch)
        # Wall times that drive the schedule are the largest over processes, so every rank
        # sets the same learning rate.
        elapsed = elapsed_before + _elapsed(t_start, ctx)
        lr_at = functools.partial(_scheduled_lr, tc, loop, optimizer, epoch, elapsed, loop.get("epoch_s", 0.0))
        train_terms = _train_epoch(net, model, ema, optimizer, trainable, train_loader, tc, ctx, device, epoch, out,
                                   lr_at)
        val = _validate(eval_model, val_loader, device, tc, val_force_weight)  # every rank: same decisions
        if tc.lr_schedule == "plateau" and "anneal_from" not in loop:
            scheduler.step(val["loss"])
        epoch_time = time.monotonic() - t0
        record = {"epoch": epoch + 1, **{f"train_{k}": v for k, v in train_terms.items()},
                  **{f"val_{k}": v for k, v in val.items()}, "lr": optimizer.param_groups[0]["lr"],
                  "epoch_time_s": epoch_time}
        loop["history"].append(record)
        loop["epoch"] = epoch + 1
        loop["elapsed_s"] = elapsed_before + _elapsed(t_start, ctx)
        loop["epoch_s"] = loop["elapsed_s"] - elapsed
        improved = val["loss"] < loop["best_loss"]
        if improved:
            loop["best_loss"], loop["bad_epochs"], loop["best_metrics"] = val["loss"], 0, val
        else:
            loop["bad_epochs"] += 1
        bar.set_postfix(E=f"{val['energy_rmse_mev_per_atom']:.2f}meV/at", F=f"{val['force_rmse_mev_per_A']:.0f}meV/A")
        log.info("epoch %d: train loss %.4g | val E RMSE %.3f meV/atom, F RMSE %.1f meV/A | lr %.2e | %.1f s",
                 epoch + 1, record["train_loss"], val["energy_rmse_mev_per_atom"], val["force_rmse_mev_per_A"],
                 record["lr"], epoch_time)
        if ctx.is_main:  # rank 0 alone writes logs and checkpoints
            _log_epoch(writer, record)
            common = {"config": config.to_dict(), "elements": train_set.elements, "epoch": epoch + 1,
                      "units": {"energy": "eV", "length": "Angstrom"}}
            if improved:
                save_checkpoint(out / "best.pt", {**common, "model": eval_model.state_dict(), "metrics": val})
            train_state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                           "scheduler": scheduler.state_dict(), "torch_rng": torch.get_rng_state(), "loop": loop,
                           "reference": reference_info}
            if ema is not None:
                train_state["ema"] = ema.state_dict()
            save_checkpoint(out / "last.pt", {**common, "model": eval_model.state_dict(), "metrics": val,
                                              "train_state": train_state})
        if loop["bad_epochs"] >= tc.patience:
            stopped = "early stop"
            break
        if tc.max_minutes is not None and loop["elapsed_s"] > 60 * tc.max_minutes:
            stopped = "time limit"
            break
    bar.close()
    if writer is not None:
        writer.close()
    if ctx.distributed:
        torch.distributed.barrier()  # the others wait until rank 0 has written its checkpoints
    log.info("stopped (%s) after %d epochs; best val: %s", stopped, loop["epoch"], loop["best_metrics"])
    return FitResult(out / "best.pt", out / "last.pt", loop["best_metrics"], loop["history"], stopped)


def _train_epoch(net, model, ema, optimizer, trainable, loader, tc, ctx, device, epoch: int, out: Path,
                 lr_at: Callable[[int, int], float] | None = None) -> dict:
    """One pass over this process's share of the training frames; returns mean loss terms.

    ``lr_at(step, steps)``, when given, sets the learning rate before every optimiser step
    (unless it returns ``None``).

    ``net`` is ``model`` or its DistributedDataParallel wrapper. With W processes each loss is
    normalised by the global batch and multiplied by W, because DDP averages the gradients.
    """
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
        loss, terms = energy_force_loss(pred, batch, tc.energy_weight, tc.force_weight, denominators)
        step = distributed.global_sum(torch.stack([loss.detach(), terms["energy"], terms["force"]]).double().cpu(), ctx)
        if not torch.isfinite(step).all():  # the same verdict on every rank: none is left waiting
            raise TrainingError(
                f"epoch {epoch + 1}: loss is {loss.item()} on frames {', '.join(batch.source)}; "
                f"training stopped, the last good checkpoints in {out} are kept")
        optimizer.zero_grad(set_to_none=True)
        (loss * ctx.world_size).backward()
        if tc.clip_grad > 0:
            torch.nn.utils.clip_grad_norm_(trainable, tc.clip_grad)
        optimizer.step()
        if ema is not None:
            ema.update_parameters(model)
        sums += step
        n_batches += 1
    means = (sums / max(n_batches, 1)).tolist()
    return {"loss": means[0], "energy": means[1], "force": means[2]}


def _scheduled_lr(tc, loop: dict, optimizer, epoch: int, elapsed_s: float, epoch_s: float, step: int,
                  steps: int) -> float | None:
    """The learning rate for this step by the budget's progress, or ``None`` to leave it to
    ReduceLROnPlateau. The rate an anneal starts from is kept in ``loop`` (and so in ``last.pt``)."""
    progress = budget_progress(tc, epoch, step, steps, elapsed_s, epoch_s)
    if tc.lr_schedule == "cosine":
        return cosine_lr(tc.lr, tc.min_lr, progress)
    lr_from = loop.get("anneal_from", optimizer.param_groups[0]["lr"])
    lr = annealed_lr(lr_from, tc.min_lr, progress, tc.anneal)
    if lr is not None:
        loop["anneal_from"] = lr_from
    elif "anneal_from" in loop:  # --resume gave a finished run a larger budget: back to the plateaus
        lr = loop.pop("anneal_from")
    return lr


def _elapsed(t_start: float, ctx) -> float:
    """Wall time since ``t_start``, the largest over processes so all stop at the same epoch."""
    elapsed = torch.tensor([time.monotonic() - t_start], dtype=torch.float64)
    if ctx.distributed:
        torch.distributed.all_reduce(elapsed, op=torch.distributed.ReduceOp.MAX)
    return float(elapsed)


def _log_epoch(writer, record: dict[str, float]) -> None:
    step = record["epoch"]
    for key, value in record.items():
        if key == "epoch" or (isinstance(value, float) and math.isnan(value)):
            continue
        tag = key.replace("train_", "train/", 1).replace("val_", "val/", 1)
        writer.add_scalar(tag, value, step)
    writer.flush()
