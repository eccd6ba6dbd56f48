"""MACE side of ``time_to_accuracy.py``: one training run, a model at each budget mark, test predictions.

Runs in MACE's own venv; never imported by pbcgnn. Called as

    ~/mace-venv/bin/python mace_snapshots.py --train train.xyz --val val.xyz --test test.xyz --out DIR \
        --minutes 5 15 45 135 [--stop-after MIN] [--swa-at 0.8] -- [mace_run_train options]

``mace_run_train`` runs in-process with every improved checkpoint kept (``--keep_checkpoints``);
it stops at the first optimiser step that would start after the largest budget. Minutes count
from the start of MACE's training loop (data preprocessing excluded, as for the other packages).

On one CPU thread a MACE epoch of 1016 192-atom frames takes about 54 minutes, so MACE validates (and
checkpoints) too rarely for "the best model on validation within M" to exist at most marks. The
point at mark M is therefore the model as it stands at M: the weights after the last optimiser
step begun before M, with MACE's EMA applied (MACE validates and saves with the EMA weights too).
The last validated checkpoint saved within M is recorded beside it (``validated_epoch``).

Runs longer than one invocation: ``--stop-after MIN`` pauses before the first optimiser step after MIN
minutes of this invocation and writes ``DIR/paused.pt`` (raw weights, EMA, optimiser, both
schedulers, the SWA average, the epoch and step, the clock, the states already taken at marks);
the same command again resumes from it, skipping the batches that epoch had already trained on,
with the clock going on from the paused run's (the resumed run's initial validation, which MACE
repeats, is not counted). The resumed run differs from an uninterrupted one only in its data
order (MACE's loader restarts its shuffling).

``--swa-at F`` places MACE's second stage (``--swa``: higher energy weight, SWA learning rate) at
the first epoch beginning after a fraction F of the largest budget, from the mean epoch time so
far, as MACE's examples start it at about 80 % of their epochs.

Each point's model is saved as ``DIR/mace_{M}min.model`` and ``mace_eval_configs`` predicts the
test frames into ``DIR/pred_{M}min.xyz`` (``MACE_energy``, ``MACE_forces``).
``DIR/snapshots.json`` lists them. A paused run snapshots the marks it has passed
(``DIR/taken.json``, each mark once): a mark's state is final once taken, so its point is already
the run's. MACE's own final scoring of the training and validation sets
is skipped (it costs minutes).
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import itertools
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import ase.io
import mace.tools
import torch
from mace.cli import run_train

TRAIN_MODULE = sys.modules["mace.tools.train"]  # `mace.tools.train` itself is the function


class _OutOfTime(Exception):
    """Raised at the first optimiser step past the budget, to leave MACE's training loop."""


class _Paused(Exception):
    """Raised at the first optimiser step after ``--stop-after`` minutes of this invocation."""


class _Trained(Exception):
    """Raised when training ends, to skip run_train's own scoring of the train and val sets."""


def relabel(src: Path, dst: Path) -> Path:
    """Copy frames with their labels as ``REF_energy`` / ``REF_forces`` (MACE's default keys)."""
    frames = ase.io.read(src, index=":")
    for atoms in frames:
        atoms.info["REF_energy"] = atoms.get_potential_energy()
        atoms.arrays["REF_forces"] = atoms.get_forces()
        atoms.calc = None
    ase.io.write(dst, frames, format="extxyz")
    return dst


def current_state(model: torch.nn.Module, ema) -> dict:
    """A copy of the model's weights as MACE would validate them now (EMA applied, if any)."""
    with ema.average_parameters() if ema is not None else contextlib.nullcontext():
        return copy.deepcopy(model.state_dict())


def save_atomic(obj, path: Path) -> None:
    """``torch.save`` to a private file renamed into place: a kill never leaves half a file."""
    tmp = path.with_name(f".{path.name}.partial")
    torch.save(obj, tmp)
    tmp.replace(path)


def pause_state(kw: dict, record: dict) -> dict:
    """What carries MACE's run over to the next invocation, ``record["step"]`` optimiser steps into
    epoch ``record["epoch"]``: raw weights, EMA, optimiser, both schedulers, the SWA average, and
    the clock's record."""
    swa = kw["swa"]
    return {"epoch": record["epoch"], "step": record["step"], "elapsed_s": time.monotonic() - record["t0"], "mace_args": record["mace_args"],
            "model": kw["model"].state_dict(), "optimizer": kw["optimizer"].state_dict(),
            "lr_scheduler": kw["lr_scheduler"].state_dict(), "ema": kw["ema"].state_dict() if kw["ema"] else None,
            "swa_model": swa.model.state_dict() if swa else None, "swa_start": swa.start if swa else None,
            "swa_scheduler": swa.scheduler.state_dict() if swa else None,
            **{k: record[k] for k in ("epoch_ends", "saves", "states")}}


def restore(kw: dict, state: dict, record: dict) -> None:
    """Load a paused run's state into run_train's objects; MACE's loop restarts at its epoch.

    MACE's loop updates the SWA average at the start of each SWA epoch, which the paused run
    already did for this one: that single repeat is skipped."""
    kw["model"].load_state_dict(state["model"])
    kw["optimizer"].load_state_dict(state["optimizer"])
    kw["lr_scheduler"].load_state_dict(state["lr_scheduler"])
    if kw["ema"] is not None:
        kw["ema"].load_state_dict(state["ema"])
    swa = kw["swa"]
    if swa is not None:
        swa.model.load_state_dict(state["swa_model"])
        swa.scheduler.load_state_dict(state["swa_scheduler"])
        swa.start = state["swa_start"]
        if state["epoch"] >= swa.start:
            update = swa.model.update_parameters
            swa.model.update_parameters = lambda model: setattr(swa.model, "update_parameters", update)
    kw["start_epoch"] = state["epoch"]
    record.update({k: state[k] for k in ("epoch_ends", "saves", "states")}, elapsed0=state["elapsed_s"],
                  skip=state["step"])


def place_swa(kw: dict, record: dict, budget_s: float, fraction: float | None, epoch: int) -> None:
    """Start MACE's second (SWA) stage at the first epoch that begins after ``fraction`` of the
    budget, estimated from the mean epoch time so far (re-estimated until the stage begins)."""
    swa = kw["swa"]
    if swa is None or fraction is None or epoch >= swa.start or not record["epoch_ends"]:
        return
    epoch_s = record["epoch_ends"][-1] / len(record["epoch_ends"])
    swa.start = max(epoch + 1, math.ceil(fraction * budget_s / epoch_s))
    kw["checkpoint_handler"].io.swa_start = swa.start  # names its checkpoints "_swa" from there


def timed_train(marks: list[float], record: dict, out: Path, stop_after: float | None, swa_at: float | None):
    """``mace.tools.train`` stopped at the first optimiser step starting after the last mark
    (seconds of training), or paused at the first one after ``stop_after`` minutes of this
    invocation (state to ``out/paused.pt``, which the next invocation resumes). Fills ``record``:
    the model, epoch ends and checkpoint saves (seconds of training, epochs), and the model's
    state at each mark (``states``: seconds -> state_dict)."""
    train, one_epoch, step = mace.tools.train, TRAIN_MODULE.train_one_epoch, TRAIN_MODULE.take_step
    kw: dict = {}

    def epoch(*args, **kwargs):
        if record["t0"] is None:  # resumed: the clock goes on from the paused run's
            record["t0"] = time.monotonic() - record["elapsed0"]
        place_swa(kw, record, max(marks), swa_at, kwargs["epoch"])
        record.update(epoch=kwargs["epoch"], step=record.pop("skip", 0))
        if record["step"]:  # resumed inside this epoch: the batches it had trained on are skipped
            kwargs["data_loader"] = itertools.islice(kwargs["data_loader"], record["step"], None)
        one_epoch(*args, **kwargs)
        record["epoch_ends"].append(time.monotonic() - record["t0"])

    def timed_step(**kwargs):
        elapsed = time.monotonic() - record["t0"]
        for mark in (m for m in marks if m <= elapsed and m not in record["states"]):
            record["states"][mark] = current_state(kwargs["model"], kwargs["ema"])
        if elapsed >= max(marks):
            raise _OutOfTime
        if stop_after is not None and record["trained"] and time.monotonic() - record["started"] > 60 * stop_after:
            save_atomic(pause_state(kw, record), out / "paused.pt")
            raise _Paused
        record["step"] += 1
        record["trained"] += 1
        return step(**kwargs)

    def save(state, epochs, **options):  # MACE validated and improved: remember when
        record["saves"].append((time.monotonic() - record["t0"], epochs + 1))
        return save_checkpoint(state, epochs, **options)

    def wrapper(**kwargs):
        nonlocal save_checkpoint
        kw.update(kwargs)
        now = time.monotonic()
        record.update(t0=now, started=now, model=kw["model"], epoch_ends=[], saves=[], states={}, trained=0)
        if (out / "paused.pt").is_file():
            state = torch.load(out / "paused.pt", weights_only=False, map_location="cpu")
            if state["mace_args"] != record["mace_args"]:
                sys.exit(f"{out / 'paused.pt'}: paused with other mace_run_train options; resume with the same")
            restore(kw, state, record)
            record["t0"] = None
        save_checkpoint, kw["checkpoint_handler"].save = kw["checkpoint_handler"].save, save
        TRAIN_MODULE.train_one_epoch, TRAIN_MODULE.take_step = epoch, timed_step
        try:
            train(**kw)
        except _OutOfTime:
            pass
        finally:
            TRAIN_MODULE.train_one_epoch, TRAIN_MODULE.take_step = one_epoch, step
        for mark in (m for m in marks if m not in record["states"]):  # training ended early
            record["states"][mark] = current_state(kw["model"], kw["ema"])
        raise _Trained

    save_checkpoint = None
    return wrapper


def snapshot(minutes: float, record: dict, out: Path, test: Path, dtype: str) -> dict:
    """The model as it stood at ``minutes``, saved as a model and run on ``test``."""
    saved = [epochs for t, epochs in record["saves"] if t <= 60 * minutes]
    row = {"minutes": minutes, "epochs": sum(t <= 60 * minutes for t in record["epoch_ends"]),
           "validated_epoch": saved[-1] if saved else None}
    model = copy.deepcopy(record["model"]).cpu()
    model.load_state_dict(record["states"][60 * minutes])
    model_path, pred = out / f"mace_{minutes:g}min.model", out / f"pred_{minutes:g}min.xyz"
    torch.save(model, model_path)
    subprocess.run([str(Path(sys.executable).with_name("mace_eval_configs")), "--configs", str(test),
                    "--model", str(model_path), "--output", str(pred), "--device", "cpu",
                    "--default_dtype", dtype, "--batch_size", "8"], check=True)
    return {**row, "snapshot": str(model_path), "predictions": str(pred)}


def snapshot_taken(minutes: list[float], record: dict, out: Path, test: Path, dtype: str) -> None:
    """Snapshot the marks a paused run has passed into ``out/taken.json``; those already there are kept."""
    path = out / "taken.json"
    rows = {r["minutes"]: r for r in (json.loads(path.read_text()) if path.is_file() else [])}
    for m in sorted(m for m in minutes if 60 * m in record["states"] and m not in rows):
        rows[m] = snapshot(m, record, out, test, dtype)
        save_text(json.dumps(sorted(rows.values(), key=lambda r: r["minutes"]), indent=2), path)


def save_text(text: str, path: Path) -> None:
    """Write ``text`` to a private file renamed into place, as :func:`save_atomic` does."""
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(text)
    tmp.replace(path)


def main(argv: list[str] | None = None) -> list[dict] | None:
    """Train (or resume), then snapshot every mark; None when paused (no snapshots.json yet)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("train", "val", "test", "out"):
        p.add_argument(f"--{name}", type=Path, required=True)
    p.add_argument("--minutes", type=float, nargs="+", required=True)
    p.add_argument("--stop-after", type=float, default=None, help="pause after MIN minutes of this invocation")
    p.add_argument("--swa-at", type=float, default=None, help="start MACE's --swa stage at this budget fraction")
    p.add_argument("mace_args", nargs="*", help="mace_run_train options (after --)")
    args = p.parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    files = {k: relabel(getattr(args, k), out / f"{k}.xyz") for k in ("train", "val", "test")}
    dtype = next((a.split("=", 1)[1] for a in args.mace_args if a.startswith("--default_dtype=")), "float64")
    record: dict = {"mace_args": [*args.mace_args, f"--minutes={args.minutes}", f"--swa-at={args.swa_at}"]}
    mace.tools.train = timed_train([60 * m for m in args.minutes], record, out, args.stop_after, args.swa_at)
    sys.argv = ["mace_run_train", f"--train_file={files['train']}", f"--valid_file={files['val']}",
                f"--work_dir={out}", "--keep_checkpoints", "--max_num_epochs=1000000", *args.mace_args]
    try:
        run_train.main()
    except _Paused:
        print(f"paused; {out / 'paused.pt'} holds the run: the same command resumes it")
        snapshot_taken(args.minutes, record, out, files["test"], dtype)
        return None
    except _Trained:
        pass
    rows = [snapshot(m, record, out, files["test"], dtype) for m in sorted(args.minutes)]
    (out / "snapshots.json").write_text(json.dumps(rows, indent=2))
    (out / "paused.pt").unlink(missing_ok=True)
    (out / "taken.json").unlink(missing_ok=True)
    return rows


if __name__ == "__main__":
    main()
