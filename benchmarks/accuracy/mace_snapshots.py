"""MACE side of ``time_to_accuracy.py``: one training run, a model at each budget mark, test predictions.

Runs in MACE's own venv; never imported by pbcgnn. Called as

    ~/mace-venv/bin/python mace_snapshots.py --train train.xyz --val val.xyz --test test.xyz --out DIR \
        --minutes 5 15 45 135 -- [mace_run_train options]

``mace_run_train`` runs in-process with every improved checkpoint kept (``--keep_checkpoints``);
it stops at the first epoch that would start after the largest budget. Minutes count from the
start of MACE's training loop (data preprocessing excluded, as for the other packages). At each
mark M the checkpoint saved last before M minutes (the best on validation so far) is saved as
``DIR/mace_{M}min.model`` and ``mace_eval_configs`` predicts the test frames into
``DIR/pred_{M}min.xyz`` (``MACE_energy``, ``MACE_forces``). ``DIR/snapshots.json`` lists them.
MACE's own final scoring of the training and validation sets is skipped (it costs minutes).
"""
from __future__ import annotations

import argparse
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


def timed_train(seconds: float, record: dict):
    """``mace.tools.train`` stopped at the first epoch starting after ``seconds`` of training;
    fills ``record`` with the start time, the model and each epoch's end time."""
    train, one_epoch = mace.tools.train, TRAIN_MODULE.train_one_epoch

    def epoch(*args, **kwargs):
        if time.monotonic() - record["t0"] >= seconds:
            raise _OutOfTime
        one_epoch(*args, **kwargs)
        record["epoch_ends"].append(time.time() - record["wall0"])

    def wrapper(**kwargs):
        record.update(t0=time.monotonic(), wall0=time.time(), model=kwargs["model"], epoch_ends=[])
        TRAIN_MODULE.train_one_epoch = epoch
        try:
            train(**kwargs)
        except _OutOfTime:
            pass
        finally:
            TRAIN_MODULE.train_one_epoch = one_epoch
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
    """The best checkpoint saved within ``minutes``, saved as a model and run on ``test``."""
    saved = [c for c in checkpoints(out / "checkpoints", record["wall0"]) if c[0] <= 60 * minutes]
    row = {"minutes": minutes, "epochs": sum(t <= 60 * minutes for t in record["epoch_ends"])}
    if not saved:
        return {**row, "snapshot": None}
    train_s, best_epoch, path = saved[-1]
    model = copy.deepcopy(record["model"]).cpu()
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=False)["model"])
    model_path, pred = out / f"mace_{minutes:g}min.model", out / f"pred_{minutes:g}min.xyz"
    torch.save(model, model_path)
    subprocess.run([str(Path(sys.executable).with_name("mace_eval_configs")), "--configs", str(test),
                    "--model", str(model_path), "--output", str(pred), "--device", "cpu",
                    "--default_dtype", dtype, "--batch_size", "8"], check=True)
    return {**row, "best_epoch": best_epoch, "snapshot_train_s": round(train_s, 1), "snapshot": str(model_path),
            "predictions": str(pred)}


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
    mace.tools.train = timed_train(60 * max(args.minutes), record)
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
