"""The epoch loop of one model: train, validate, log to TensorBoard, checkpoint, stop."""
from __future__ import annotations

import logging
import filecmp
import math
import os
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.tensorboard import SummaryWriter
from tqdm.auto import tqdm

from ..checkpoint import read_checkpoint, save_checkpoint
from ..config import Config, TrainConfig
from ..dataset import FrameDataset, FrameLoader, bootstrap_indices, file_sha256, load_datasets
from ..device import resolve_device
from ..errors import InputError
from . import distributed
from .epoch import check_finite, train_epoch, validate
from .schedule import budget_progress, energy_weight, in_final_phase, scheduled_lr, validation_energy_weight
from .setup import Training, set_up
from .state import FitResult, TrainState

__all__ = ["fit_model", "resumed_config"]

log = logging.getLogger(__name__)


#: Options a resumed run takes from the resuming call: its budget and this invocation's pause.
BUDGET = ("train.epochs", "train.max_minutes", "train.stop_after")
#: Options it takes from the call only when given there: where it runs, not what it trains.
WHERE = ("train.device", "train.workers", "data.cache_dir", "data.storage")
#: Options it may take up before they act: the final phase's energy weight, until that phase began.
LATER = ("train.final_energy_weight",)
#: Every option a resumed run may take from its call.
RESUMABLE = BUDGET + WHERE + LATER
#: Options that name files: a resumed run compares the files' content, not their names, so that
#: it continues in another folder or on another machine.
PATHS = ("data.paths", "data.val_paths", "transfer.init_from")


def _option(config: Config, name: str) -> Any:
    section, field = name.split(".")
    value = getattr(getattr(config, section), field)
    if name not in PATHS or value is None:
        return value
    return tuple(map(os.path.realpath, value)) if isinstance(value, tuple) else os.path.realpath(value)


def _files(value: Any) -> tuple[str, ...]:
    return () if value is None else value if isinstance(value, tuple) else (value,)


def input_digests(config: Config) -> dict[str, list[str]]:
    """The sha256 of every file the run reads, by option (stored in ``last.pt`` for a resume)."""
    return {name: [file_sha256(p) for p in _files(_option(config, name))] for name in PATHS}


def _same_files(wanted: Any, kept: Any, digests: list[str] | None) -> bool:
    """The files given now hold what the run was started with: by the digests stored at its
    start, or (a checkpoint from before they were stored) by the started-with files' bytes."""
    wanted, kept = _files(wanted), _files(kept)
    if len(wanted) != len(kept) or not all(map(os.path.isfile, wanted)):
        return False
    if digests is not None:
        return [file_sha256(p) for p in wanted] == digests
    return all(os.path.isfile(k) and filecmp.cmp(w, k, shallow=False) for w, k in zip(wanted, kept))


def resumed_config(config: Config, out: Path, given: Collection[str] | None = None) -> tuple[Config, dict[str, Any]]:
    """The config stored in ``out/last.pt`` with the budget of this call, and its ``train_state``.

    Args:
        config: this call's config.
        out: the run's folder.
        given: the ``"section.field"`` options the caller set explicitly (the CLI's command line).
            None: ``epochs``, ``max_minutes`` and ``stop_after`` come from ``config``. Else
            ``stop_after`` (per invocation) and, when given, ``epochs``, ``max_minutes`` (a bare
            ``--resume`` keeps the run's budget), ``device``, ``workers``, ``cache_dir``, ``storage``
            and, before the run's final phase began, ``final_energy_weight``; any other given option must equal the
            stored one: a resumed run keeps its options, and ignoring one would be silent.
    """
    path = out / "last.pt"
    ckpt = read_checkpoint(path)
    if "train_state" not in ckpt:
        raise InputError("checkpoint has no training state to resume from", path=path)
    stored = Config.from_dict(ckpt["config"])
    loop = ckpt["train_state"].get("loop")  # a committee marker has none: its members decide
    began = loop is not None and _final_phase_began(stored, config, given, loop)
    free = BUDGET + WHERE + (() if began else LATER)
    take = list(BUDGET) if given is None else [n for n in free if n == "train.stop_after" or n in given]
    digests = ckpt["train_state"].get("inputs", {})
    for name in sorted(set(given or ()) - set(free)):
        wanted, kept = _option(config, name), _option(stored, name)
        if name in PATHS and wanted != kept and _same_files(wanted, kept, digests.get(name)):
            take.append(name)  # the same bytes elsewhere: read them where they are now
        elif wanted != kept:
            raise InputError(f"{name} = {wanted!r} given, but this run was started with {kept!r}; a resumed run "
                             "keeps its options (start a new run, or fine-tune from it with --init-from)", path=path)
    changes: dict[str, dict[str, Any]] = {}
    for name in take:
        section, field = name.split(".")
        changes.setdefault(section, {})[field] = _option(config, name)
    return stored.replace(**changes), ckpt["train_state"]


def _final_phase_began(stored: Config, config: Config, given: Collection[str] | None, loop: dict[str, Any]) -> bool:
    """Whether the epochs done lie in the final phase (the last ``anneal`` of the budget this call
    gives the run), or the stored run was already in it. Whether a final energy weight was set
    does not matter: switched on now, it would apply to a phase whose epochs ran without it."""
    budget = {n.split(".")[1]: _option(config, n) for n in ("train.epochs", "train.max_minutes")
              if given is None or n in given}
    tc = stored.replace(train=budget).train
    progress = budget_progress(tc, int(loop.get("epoch", 0)), 0, 1, float(loop.get("elapsed_s", 0.0)), 0.0)
    return bool(loop.get("final_phase", False)) or in_final_phase(tc, progress)


def _training_frames(config: Config, datasets, ctx: distributed.Context) -> tuple[FrameDataset, FrameDataset]:
    """``(train, val)``: given, or read; the training part bootstrap-resampled when asked.

    Under ``torchrun`` rank 0 reads first and the others then find its frame store (or graph
    cache) complete, instead of every rank converting the same files."""
    if datasets is None and ctx.distributed and not ctx.is_main:
        torch.distributed.barrier()
    train_set, val_set = datasets if datasets is not None else load_datasets(config)
    if datasets is None and ctx.distributed and ctx.is_main:
        torch.distributed.barrier()
    if config.committee.bootstrap:
        train_set = train_set[bootstrap_indices(len(train_set), config.train.seed)]
        log.info("bootstrap resample (seed %d): %d frames, %d distinct", config.train.seed, len(train_set),
                 len(set(train_set.indices())))
    return train_set, val_set


def _validation_force_weight(tc: TrainConfig, train_set: FrameDataset) -> float:
    """Select on what is trained: with energies only (e.g. CCSD(T) fine-tuning), validation forces
    would pick the epoch that moved least from the start, not the one with the best energies."""
    if any(bool(g.has_forces) for g in train_set.labels_only()):
        return tc.force_weight
    if tc.force_weight > 0:
        log.info("no training frame has forces: the validation loss (best.pt, early stopping, plateau) "
                 "counts energies only; validation force errors are still reported")
    return 0.0


def _out_of_budget(tc: TrainConfig, state: TrainState) -> bool:
    return tc.max_minutes is not None and state.elapsed_s > 60 * tc.max_minutes


def _stop_reason(tc: TrainConfig, state: TrainState, invocation_s: float) -> str | None:
    """Why the run stops after this epoch, if it does; ``paused`` after ``stop_after`` minutes of
    this invocation (``invocation_s``), the schedule untouched."""
    if state.bad_epochs >= tc.patience:
        return "early stop"
    if _out_of_budget(tc, state):
        return "time limit"
    if tc.stop_after is not None and invocation_s > 60 * tc.stop_after and state.epoch < tc.epochs:
        return "paused"
    return None


def _schedule(tc: TrainConfig, state: TrainState, training: Training, epoch: int, elapsed: float):
    """``(progress, lr_at, energy_weight_at)`` of ``epoch``, each a function of ``(step, steps)``:
    the fraction of the budget used, and the learning rate and energy weight there."""
    epoch_s = state.epoch_s

    def progress(step: int, steps: int) -> float:
        return budget_progress(tc, epoch, step, steps, elapsed, epoch_s)

    def lr_at(step: int, steps: int) -> float | None:
        return scheduled_lr(tc, state, training.optimizer.param_groups[0]["lr"], progress(step, steps))

    def energy_weight_at(step: int, steps: int) -> float:
        return energy_weight(tc, progress(step, steps))

    return progress, lr_at, energy_weight_at


def fit_model(config: Config, out: Path, *, saved: dict[str, Any] | None = None, progress: bool = True,
              datasets: tuple[FrameDataset, FrameDataset] | None = None) -> FitResult:
    """Train one model (a validated config of committee size 1); see :func:`pbcgnn.train.run.fit`.

    Args:
        saved: ``last.pt``'s ``train_state`` to resume from (with :func:`resumed_config`'s config).
    """
    tc = config.train
    ctx = distributed.setup(resolve_device(tc.device))
    device = distributed.device_for(ctx, resolve_device(tc.device))
    torch.manual_seed(tc.seed)
    train_set, val_set = _training_frames(config, datasets, ctx)
    training, state = set_up(config, train_set, device, saved)
    # One sampler for one process or many: the shuffle depends only on seed and epoch, so W
    # processes see the same global batches as one, and a resumed run the same as an unbroken one.
    sampler, per_rank = distributed.make_sampler(train_set, ctx, tc.batch_size, tc.seed)
    workers = {"num_workers": tc.workers, "persistent_workers": tc.workers > 0}  # graphs built beside the model
    train_loader = FrameLoader(train_set, batch_size=per_rank, sampler=sampler, **workers)
    val_loader = FrameLoader(val_set, batch_size=max(tc.batch_size, 8), shuffle=False, **workers)
    net = DistributedDataParallel(training.model) if ctx.distributed else training.model
    val_force_weight = _validation_force_weight(tc, train_set)
    writer = SummaryWriter(log_dir=os.fspath(out)) if ctx.is_main else None
    inputs = (saved or {}).get("inputs") or (input_digests(config) if ctx.is_main else {})
    log.info("training on %d frames, validating on %d, device %s, %d process(es), %d parameters (%d trainable)",
             len(train_set), len(val_set), device, ctx.world_size,
             sum(p.numel() for p in training.model.parameters()), sum(p.numel() for p in training.trainable))

    epoch_before = state.epoch
    elapsed_before, t_start = state.elapsed_s, time.monotonic()  # wall time of the resumed parts
    out_of_time = _out_of_budget(tc, state)  # a resumed run that had already used its minutes
    stopped = "time limit" if out_of_time else "epochs"
    bar = tqdm(range(state.epoch, state.epoch if out_of_time else tc.epochs), initial=state.epoch, total=tc.epochs,
               disable=not (progress and ctx.is_main), desc="epochs", unit="epoch")
    for epoch in bar:
        t0 = time.monotonic()
        sampler.set_epoch(epoch)
        elapsed = elapsed_before + distributed.elapsed_since(t_start, ctx)
        progress, lr_at, energy_weight_at = _schedule(tc, state, training, epoch, elapsed)
        terms = train_epoch(net, training, train_loader, tc, ctx, device, epoch=epoch, out=out, lr_at=lr_at,
                            energy_weight_at=energy_weight_at)
        val_energy_weight = validation_energy_weight(tc, progress(1, 1))  # as at the end of the epoch
        if tc.final_energy_weight is not None and in_final_phase(tc, progress(1, 1)) and not state.final_phase:
            state.enter_final_phase()
        # every rank: same decisions
        val = validate(training.eval_model, val_loader, device, val_energy_weight, val_force_weight)
        check_finite(training, val, epoch, out)  # before anything compares or saves them
        if tc.lr_schedule == "plateau" and state.anneal_from is None:
            training.scheduler.step(val["loss"])
        record = {"epoch": epoch + 1, **{f"train_{k}": v for k, v in terms.items()},
                  **{f"val_{k}": v for k, v in val.items()}, "lr": training.optimizer.param_groups[0]["lr"],
                  "energy_weight": val_energy_weight, "epoch_time_s": time.monotonic() - t0}
        state.history.append(record)
        state.epoch = epoch + 1
        state.elapsed_s = elapsed_before + distributed.elapsed_since(t_start, ctx)
        state.epoch_s = state.elapsed_s - elapsed
        improved = state.record(val)
        _report(bar, record)
        if ctx.is_main:  # rank 0 alone writes logs and checkpoints
            _log_epoch(writer, record)
            _save(out, config, train_set.elements, training, state, inputs, val, improved)
        reason = _stop_reason(tc, state, state.elapsed_s - elapsed_before)
        if reason is not None:
            stopped = reason
            break
    bar.close()
    if writer is not None:
        writer.close()
    if ctx.distributed:
        torch.distributed.barrier()  # the others wait until rank 0 has written its checkpoints
    log.info("stopped (%s) after %d epochs; best val: %s", stopped, state.epoch, state.best_metrics)
    return FitResult(out / "best.pt", out / "last.pt", state.best_metrics, state.history, stopped,
                     state.epoch - epoch_before)


def _save(out: Path, config: Config, elements: list[int], training: Training, state: TrainState,
          inputs: dict[str, list[str]], val: dict[str, float], improved: bool) -> None:
    """``best.pt`` when the epoch improved, and ``last.pt`` with the training state and the
    digests of its input files (:func:`input_digests`), always."""
    common = {"config": config.to_dict(), "elements": elements, "epoch": state.epoch,
              "model": training.eval_model.state_dict(), "metrics": val}
    if improved:
        save_checkpoint(out / "best.pt", common)
    save_checkpoint(out / "last.pt", {**common, "train_state": {**training.train_state(state), "inputs": inputs}})


def _report(bar, record: dict[str, float]) -> None:
    """The epoch on the progress bar and in the log."""
    e, f = record["val_energy_rmse_mev_per_atom"], record["val_force_rmse_mev_per_A"]
    bar.set_postfix(E=f"{e:.2f}meV/at", F=f"{f:.0f}meV/A")
    log.info("epoch %d: train loss %.4g | val E RMSE %.3f meV/atom, F RMSE %.1f meV/A | lr %.2e | %.1f s",
             record["epoch"], record["train_loss"], e, f, record["lr"], record["epoch_time_s"])


def _log_epoch(writer: SummaryWriter, record: dict[str, float]) -> None:
    """Every number of the epoch's record as a TensorBoard scalar (``train/...``, ``val/...``)."""
    step = record["epoch"]
    for key, value in record.items():
        if key == "epoch" or (isinstance(value, float) and math.isnan(value)):
            continue
        tag = key.replace("train_", "train/", 1).replace("val_", "val/", 1)
        writer.add_scalar(tag, value, step)
    writer.flush()
