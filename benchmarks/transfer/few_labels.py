"""Fine-tuning a shipped model against training from scratch, on few frames of another DFT level.

As a user would: ``pbcgnn train K_FRAMES --val VAL [--init-from MODEL] OPTIONS``, then
``pbcgnn eval best.pt TEST``, for every method and every k. The data is ``deepmd_water`` of
``../shared/data`` (an undocumented DFT level, 64 H2O): its last ``--test-frames`` frames (one
trajectory block) are the test part, ``--val-frames`` random others pick each run's best
checkpoint, and the k training frames are nested prefixes of a seeded permutation of the rest.

Every run gets the same budget: ``--steps`` optimizer steps of ``--batch-size`` frames (240 steps
of 4 frames: 60 epochs of 16 frames). A method is a name and its extra ``pbcgnn train`` options,
e.g. ``finetune=--init-from data/pretrained/X.pt`` or ``scratch=--model painn --features 64``.

    OMP_NUM_THREADS=1 python benchmarks/transfer/few_labels.py --k 16 --out runs/few_labels \\
        --method "scratch=--model schnet --features 128 --filters 128 --interactions 4 --cutoff 6" \\
        --method "finetune=--init-from data/pretrained/cheng2019_revpbe0_d3_schnet.pt"
"""
from __future__ import annotations

import argparse
import json
import math
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from pbcgnn.io import read_frames, write_frames

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


def prepare(data_dir: Path, out: Path, ks: list[int], test_frames: int, val_frames: int, seed: int) -> dict:
    """The test, validation and nested k-frame training files (extended XYZ) under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    frames = read_frames(data_dir / "deepmd_water" / "deepmd_water.xyz")
    test, rest = frames[-test_frames:], frames[:-test_frames]
    order = np.random.default_rng(seed).permutation(len(rest))
    pool = [rest[i] for i in order[val_frames:]]
    if max(ks) > len(pool):
        sys.exit(f"k = {max(ks)} needs more than the {len(pool)} frames left for training")
    paths = {"test": out / "test.xyz", "val": out / "val.xyz"}
    write_frames(paths["test"], test)
    write_frames(paths["val"], [rest[i] for i in order[:val_frames]])
    for k in ks:
        paths[k] = out / f"train_k{k}.xyz"
        write_frames(paths[k], pool[:k])
    return paths


def cli(*args, log: Path) -> None:
    with open(log, "a") as f:
        run = subprocess.run([sys.executable, "-m", "pbcgnn.cli", *map(str, args)], stdout=f, stderr=subprocess.STDOUT)
    if run.returncode != 0:
        sys.exit(f"pbcgnn {args[0]} failed; see {log}")


def one_run(paths: dict, k: int, options: list[str], args, out: Path) -> dict:
    epochs = max(1, math.ceil(args.steps * args.batch_size / k))
    t0 = time.monotonic()
    cli("train", paths[k], "--val", paths["val"], "--epochs", epochs, "--batch-size", min(args.batch_size, k),
        "--seed", args.seed, "--device", "cpu", "--no-progress", "--out", out, *options, log=out.with_suffix(".log"))
    wall = time.monotonic() - t0
    cli("eval", out / "best.pt", paths["test"], "--out", out / "test", "--device", "cpu", log=out.with_suffix(".log"))
    metrics = json.loads((out / "test" / "metrics.json").read_text())["total"]
    return {"energy_rmse_mev_atom": metrics["energy_rmse_mev_per_atom"],
            "forces_rmse_mev_a": metrics["force_rmse_mev_per_A"], "epochs": epochs, "train_wall_s": round(wall, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("runs/few_labels"))
    p.add_argument("--data-dir", type=Path, default=DATA)
    p.add_argument("--k", type=int, nargs="+", default=[4, 16, 64, 240])
    p.add_argument("--method", action="append", required=True, help="NAME=OPTIONS for pbcgnn train (repeatable)")
    p.add_argument("--steps", type=int, default=240)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--test-frames", type=int, default=64)
    p.add_argument("--val-frames", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--results", type=Path, help="JSON to write (default OUT/results.json); existing runs are kept")
    args = p.parse_args()
    methods = dict(m.split("=", 1) for m in args.method)
    paths = prepare(args.data_dir, args.out / "data", args.k, args.test_frames, args.val_frames, args.seed)
    results_path = args.results or args.out / "results.json"
    table = json.loads(results_path.read_text()) if results_path.exists() else {}
    for k in args.k:
        for name, options in methods.items():
            key = f"{name} k={k} seed={args.seed}"
            if key in table:
                continue
            row = one_run(paths, k, shlex.split(options), args, args.out / f"{name}_k{k}_s{args.seed}")
            table[key] = {"method": name, "options": options, "k": k, "seed": args.seed, "steps": args.steps, **row}
            print(key, json.dumps(row), flush=True)
            results_path.parent.mkdir(parents=True, exist_ok=True)
            results_path.write_text(json.dumps(table, indent=1) + "\n")


if __name__ == "__main__":
    main()
