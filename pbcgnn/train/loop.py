"""fit(): AdamW, ReduceLROnPlateau, EMA, validation, TensorBoard, checkpoints, early stop, resume."""
from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch_geometric.loader import DataLoader

from ..dataset import FrameDataset
from ..errors import InputError, TrainingError
from ..evaluate import error_metrics, predict
from ..model import compute_properties
from ..model.reference import estimate_scale, fit_reference_energies
from .checkpoint import build_model, read_checkpoint, save_checkpoint
from .config import Config
from .loss import energy_force_loss

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


def _validate(model, loader, device, tc) -> dict[str, float]:
    pred = predict(model, loader, device=device)
    m = error_metrics(pred)
    e = (m["energy_rmse_mev_per_atom"] / 1000) ** 2
    f = (m["force_rmse_mev_per_A"] / 1000) ** 2 if not math.isnan(m["force_rmse_mev_per_A"]) else 0.0
    m["loss"] = tc.energy_weight * e + tc.force_weight * f
    return m


def fit(
    config: Config,
    out_dir: str | os.PathLike,
    *,
    resume: bool = False,
    progress: bool = True,
    datasets: tuple[FrameDataset, FrameDataset] | None = None,
) -> FitResult:
    """Train a SchNet potential; write ``best.pt``, ``last.pt`` and TensorBoard logs to ``out_dir``.

    Args:
        config: validated options; when resuming, the options stored in ``last.pt`` are
            used and only ``train.epochs`` and ``train.max_minutes`` may differ.
        out_dir: output folder (created).
        resume: continue from ``out_dir/last.pt``; reaches the same weights as an
            uninterrupted run with the same seed (on the same device).
        progress: show a progress bar.
        datasets: ``(train, val)`` to use instead of reading ``config.data``.

    Raises:
        TrainingError: the loss became NaN or inf; names the frames of the batch.
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
    config.validate()
    tc = config.train
    device = resolve_device(tc.device)
    torch.manual_seed(tc.seed)
    train_set, val_set = datasets if datasets is not None else load_datasets(config)
    model = build_model(config).to(device)
    reference_info = _fit_reference(model, train_set) if state is None else state["reference"]
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(tc.ema_decay), use_buffers=True) \
        if tc.ema_decay > 0 else None
    optimizer = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, factor=tc.lr_factor, patience=tc.lr_patience, min_lr=tc.min_lr)
    shuffle = torch.Generator().manual_seed(tc.seed)
    loop = {"epoch": 0, "best_loss": math.inf, "bad_epochs": 0, "history": [], "best_metrics": {}}
    if state is not None:
        model.load_state_dict(state["model"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        shuffle.set_state(state["shuffle_rng"])
        torch.set_rng_state(state["torch_rng"])
        loop = state["loop"]
    train_loader = DataLoader(train_set, batch_size=tc.batch_size, shuffle=True, generator=shuffle)
    val_loader = DataLoader(val_set, batch_size=max(tc.batch_size, 8), shuffle=False)
    eval_model = ema.module if ema is not None else model
    writer = SummaryWriter(log_dir=os.fspath(out))
    log.info("training on %d frames, validating on %d, device %s, %d parameters", len(train_set), len(val_set),
             device, sum(p.numel() for p in model.parameters()))

    t_start, stopped = time.monotonic(), "epochs"
    bar = tqdm(range(loop["epoch"], tc.epochs), initial=loop["epoch"], total=tc.epochs, disable=not progress,
               desc="epochs", unit="epoch")
    for epoch in bar:
        t0 = time.monotonic()
        model.train()
        sums = {"loss": 0.0, "energy": 0.0, "force": 0.0}
        n_batches = 0
        for batch in train_loader:
            batch = batch.to(device)
            pred = compute_properties(model, batch, forces=True, training=True)
            loss, terms = energy_force_loss(pred, batch, tc.energy_weight, tc.force_weight)
            if not torch.isfinite(loss):
                raise TrainingError(
                    f"epoch {epoch + 1}: loss is {loss.item()} on frames {', '.join(batch.source)}; "
                    f"training stopped, the last good checkpoints in {out} are kept")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if tc.clip_grad > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), tc.clip_grad)
            optimizer.step()
            if ema is not None:
                ema.update_parameters(model)
            sums["loss"] += loss.item()
            sums["energy"] += terms["energy"].item()
            sums["force"] += terms["force"].item()
            n_batches += 1
        val = _validate(eval_model, val_loader, device, tc)
        scheduler.step(val["loss"])
        epoch_time = time.monotonic() - t0
        record = {"epoch": epoch + 1, **{f"train_{k}": v / n_batches for k, v in sums.items()},
                  **{f"val_{k}": v for k, v in val.items()}, "lr": optimizer.param_groups[0]["lr"],
                  "epoch_time_s": epoch_time}
        _log_epoch(writer, record)
        loop["history"].append(record)
        loop["epoch"] = epoch + 1
        improved = val["loss"] < loop["best_loss"]
        if improved:
            loop["best_loss"], loop["bad_epochs"], loop["best_metrics"] = val["loss"], 0, val
        else:
            loop["bad_epochs"] += 1
        bar.set_postfix(E=f"{val['energy_rmse_mev_per_atom']:.2f}meV/at", F=f"{val['force_rmse_mev_per_A']:.0f}meV/A")
        log.info("epoch %d: train loss %.4g | val E RMSE %.3f meV/atom, F RMSE %.1f meV/A | lr %.2e | %.1f s",
                 epoch + 1, record["train_loss"], val["energy_rmse_mev_per_atom"], val["force_rmse_mev_per_A"],
                 record["lr"], epoch_time)
        common = {"config": config.to_dict(), "elements": train_set.elements, "epoch": epoch + 1,
                  "units": {"energy": "eV", "length": "Angstrom"}}
        if improved:
            save_checkpoint(out / "best.pt", {**common, "model": eval_model.state_dict(), "metrics": val})
        train_state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                       "scheduler": scheduler.state_dict(), "shuffle_rng": shuffle.get_state(),
                       "torch_rng": torch.get_rng_state(), "loop": loop, "reference": reference_info}
        if ema is not None:
            train_state["ema"] = ema.state_dict()
        save_checkpoint(out / "last.pt", {**common, "model": eval_model.state_dict(), "metrics": val,
                                          "train_state": train_state})
        if loop["bad_epochs"] >= tc.patience:
            stopped = "early stop"
            break
        if tc.max_minutes is not None and time.monotonic() - t_start > 60 * tc.max_minutes:
            stopped = "time limit"
            break
    bar.close()
    writer.close()
    log.info("stopped (%s) after %d epochs; best val: %s", stopped, loop["epoch"], loop["best_metrics"])
    return FitResult(out / "best.pt", out / "last.pt", loop["best_metrics"], loop["history"], stopped)


def _log_epoch(writer, record: dict[str, float]) -> None:
    step = record["epoch"]
    for key, value in record.items():
        if key == "epoch" or (isinstance(value, float) and math.isnan(value)):
            continue
        tag = key.replace("train_", "train/", 1).replace("val_", "val/", 1)
        writer.add_scalar(tag, value, step)
    writer.flush()
