"""Train, score and ship the pretrained Cheng revPBE0-D3 water model (``data/pretrained``).

Usage (from the repository root):

    python benchmarks/accuracy/pretrained.py --minutes 100 --out runs/pretrained -- --energy-weight 1000

Everything after ``--`` is passed to ``pbcgnn train``. The script

1. splits the shared Cheng frames 80/10/10 exactly as ``run.py`` does (seed 0),
2. runs ``pbcgnn train`` on the training part with the validation part for early stopping
   (the exact command is recorded),
3. scores the best checkpoint with ``pbcgnn eval`` on the test part, and on its first
   ``--regression-frames`` frames (which the regression test re-evaluates), and
4. with ``--ship``, copies the checkpoint to ``data/pretrained/`` with ``metrics.json``.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import ase.io
import torch

ROOT = Path(__file__).resolve().parents[2]
SHIP = ROOT / "data" / "pretrained"
NAME = "cheng2019_revpbe0_d3_schnet.pt"
SOURCE = "../shared/data/cheng2019_h2o_revpbe0_d3/cheng2019_h2o_revpbe0_d3.xyz"

_spec = importlib.util.spec_from_file_location("accuracy_run", Path(__file__).with_name("run.py"))
run = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(run)


def pbcgnn(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pbcgnn.cli", *args], check=True)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=100.0, help="wall-clock training budget")
    p.add_argument("--seed", type=int, default=0, help="split seed (run.py's)")
    p.add_argument("--regression-frames", type=int, default=8)
    p.add_argument("--max-frames", type=int, default=None, help="use only N frames (smoke runs)")
    p.add_argument("--out", type=Path, default=Path("runs/pretrained"))
    p.add_argument("--ship", action="store_true", help="copy the model and metrics to data/pretrained/")
    p.add_argument("train_args", nargs="*", help="extra pbcgnn train options (after --)")
    args = p.parse_args(argv)

    source = run.SETS["cheng"]
    files = run.write_splits("cheng", source, args.out, args.seed, args.max_frames)
    parts = run.split_parts(len(ase.io.read(source, index=":")), args.seed, args.max_frames)
    regression = [int(i) for i in parts["test"][: args.regression_frames]]
    reg_file = args.out / "regression.xyz"
    ase.io.write(reg_file, ase.io.read(files["test"], index=f":{args.regression_frames}"), format="extxyz")

    model_dir = args.out / "model"
    command = ["pbcgnn", "train", str(files["train"]), "--val", str(files["val"]), "--out", str(model_dir),
               "--max-minutes", f"{args.minutes:g}", "--no-progress", *args.train_args]
    t0 = time.monotonic()
    pbcgnn(*command[1:])
    train_s = time.monotonic() - t0
    best = model_dir / "best.pt"
    pbcgnn("-q", "eval", str(best), str(files["test"]), "--out", str(args.out / "test"), "--device", "cpu")
    pbcgnn("-q", "eval", str(best), str(reg_file), "--out", str(args.out / "regression"), "--device", "cpu")
    test = json.loads((args.out / "test" / "metrics.json").read_text())["total"]
    reg = json.loads((args.out / "regression" / "metrics.json").read_text())["total"]
    history = torch.load(model_dir / "last.pt", weights_only=True)["train_state"]["loop"]["history"]
    record = {
        "model": NAME,
        "data": {"source": SOURCE, "split_seed": args.seed, "split": "80/10/10 as benchmarks/accuracy/run.py",
                 "n_train": len(parts["train"]), "n_val": len(parts["val"]), "n_test": len(parts["test"])},
        "command": " ".join(command),
        "script": f"python benchmarks/accuracy/pretrained.py --minutes {args.minutes:g} --ship -- "
                  + " ".join(args.train_args),
        "training": {"wall_s": round(train_s), "epochs": len(history), "device": "cpu",
                     "threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine(),
                     "torch": torch.__version__},
        "test": test,
        "regression": {"frames": regression, "metrics": reg},
    }
    (args.out / "metrics.json").write_text(json.dumps(record, indent=2))
    if args.ship:
        SHIP.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(best, SHIP / NAME)
        record["sha256"] = hashlib.sha256((SHIP / NAME).read_bytes()).hexdigest()
        (SHIP / "metrics.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))
    return record


if __name__ == "__main__":
    main()
