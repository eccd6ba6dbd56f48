"""MACE side of ``time_to_accuracy.py``: one training run, a model at each budget mark, test predictions.

Runs in MACE's own venv; never imported by pbcgnn. Called as

    ~/mace-venv/bin/python mace_snapshots.py --train train.xyz --val val.xyz --test test.xyz --out DIR \
        --minutes 5 15 45 135 -- [mace_run_train options]

``mace_run_train`` runs in-process with every improved checkpoint kept (``--keep_checkpoints``);
it stops at the first optimiser step that would start after the largest budget. Minutes count
from the start of MACE's training loop (data preprocessing excluded, as for the other packages).

On one CPU thread a MACE epoch of 1016 192-atom frames takes about 54 minutes, so MACE validates (and
checkpoints) too rarely for "the best model on validation within M" to exist at most marks. The
point at mark M is therefore the model as it stands at M: the weights after the last optimiser
step begun before M, with MACE's EMA applied (MACE validates and saves with the EMA weights too).
The last validated checkpoint saved within M is recorded beside it (``validated_epoch``).

Each point's model is saved as ``DIR/mace_{M}min.model`` and ``mace_eval_configs`` predicts the
test frames into ``DIR/pred_{M}min.xyz`` (``MACE_energy``, ``MACE_forces``).
``DIR/snapshots.json`` lists them. MACE's own final scoring of the training and validation sets
is skipped (it costs minutes).
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import re
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
    """Raised at the start of an epoch past the budget, to leave MACE's training loop."""


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


def timed_train(marks: list[float], record: dict):
    """``mace.tools.train`` stopped at the first optimiser step starting after the last mark
    (seconds of training); fills ``record`` with the start time, the model, each epoch's end time,
    and the model's state at each mark (``states``: seconds -> state_dict)."""
    train, one_epoch, step = mace.tools.train, TRAIN_MODULE.train_one_epoch, TRAIN_MODULE.take_step

    def epoch(*args, **kwargs):
        one_epoch(*args, **kwargs)
        record["epoch_ends"].append(time.time() - record["wall0"])

    def timed_step(**kwargs):
        elapsed = time.monotonic() - record["t0"]
        for mark in (m for m in marks if m <= elapsed and m not in record["states"]):
            record["states"][mark] = current_state(kwargs["model"], kwargs["ema"])
        if elapsed >= max(marks):
            raise _OutOfTime
        return step(**kwargs)

    def wrapper(**kwargs):
        record.update(t0=time.monotonic(), wall0=time.time(), model=kwargs["model"], epoch_ends=[], states={})
        TRAIN_MODULE.train_one_epoch, TRAIN_MODULE.take_step = epoch, timed_step
        try:
            train(**kwargs)
        except _OutOfTime:
            pass
        finally:
            TRAIN_MODULE.train_one_epoch, TRAIN_MODULE.take_step = one_epoch, step
        for mark in (m for m in marks if m not in record["states"]):  # training ended early
            record["states"][mark] = current_state(kwargs["model"], kwargs["ema"])
        raise _Trained

    return wrapper


def checkpoints(folder: Path, wall0: float) -> list[tuple[float, int, Path]]:
    """(seconds of training when saved, epochs trained, path) of every kept checkpoint, in order."""
    found = []
    for path in folder.glob("*_epoch-*.pt"):
        epoch = int(re.search(r"_epoch-(\d+)\.pt$", path.name).group(1))
        found.append((path.stat().st_mtime - wall0, epoch + 1, path))
    return sorted(found)


def snapshot(minutes: float, record: dict, out: Path, test: Path, dtype: str) -> dict:
    """The model as it stood at ``minutes``, saved as a model and run on ``test``."""
    saved = [c for c in checkpoints(out / "checkpoints", record["wall0"]) if c[0] <= 60 * minutes]
    row = {"minutes": minutes, "epochs": sum(t <= 60 * minutes for t in record["epoch_ends"]),
           "validated_epoch": saved[-1][1] if saved else None}
    model = copy.deepcopy(record["model"]).cpu()
    model.load_state_dict(record["states"][60 * minutes])
    model_path, pred = out / f"mace_{minutes:g}min.model", out / f"pred_{minutes:g}min.xyz"
    torch.save(model, model_path)
    subprocess.run([str(Path(sys.executable).with_name("mace_eval_configs")), "--configs", str(test),
                    "--model", str(model_path), "--output", str(pred), "--device", "cpu",
                    "--default_dtype", dtype, "--batch_size", "8"], check=True)
    return {**row, "snapshot": str(model_path), "predictions": str(pred)}


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("train", "val", "test", "out"):
        p.add_argument(f"--{name}", type=Path, required=True)
    p.add_argument("--minutes", type=float, nargs="+", required=True)
    p.add_argument("mace_args", nargs="*", help="mace_run_train options (after --)")
    args = p.parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    files = {k: relabel(getattr(args, k), out / f"{k}.xyz") for k in ("train", "val", "test")}
    dtype = next((a.split("=", 1)[1] for a in args.mace_args if a.startswith("--default_dtype=")), "float64")
    record: dict = {}
    mace.tools.train = timed_train([60 * m for m in args.minutes], record)
    sys.argv = ["mace_run_train", f"--train_file={files['train']}", f"--valid_file={files['val']}",
                f"--work_dir={out}", "--keep_checkpoints", "--max_num_epochs=1000000", *args.mace_args]
    try:
        run_train.main()
    except _Trained:
        pass
    rows = [snapshot(m, record, out, files["test"], dtype) for m in sorted(args.minutes)]
    (out / "snapshots.json").write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
