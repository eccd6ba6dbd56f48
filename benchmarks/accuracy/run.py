"""Accuracy on real water: fixed splits, `pbcgnn eval` on held-out frames, learning curves,
and SchNetPack's SchNet side by side on the same splits and budget.

Usage (from the repository root):

    python benchmarks/accuracy/run.py --sets deepmd cheng --minutes 20 --out runs/accuracy
    python benchmarks/accuracy/run.py --sets cheng --curve 25 50 100 200 400 1000 --curve-minutes 10
    python benchmarks/accuracy/run.py --sets deepmd --schnetpack-python ~/spk-venv/bin/python

Every set is shuffled with ``--seed`` and split into train / validation / test (80/10/10); the
three parts are written once as extended XYZ (eV, Angstrom) under ``OUT/splits`` so every model
sees exactly the same frames. pbcgnn trains with ``fit`` (early stopping on the validation part,
``--minutes`` of wall time) and is scored by ``pbcgnn eval`` on the test part. Results go to
``OUT/results.json``, ``OUT/results.md`` and ``OUT/learning_curve.{json,png}``.
"""
from __future__ import annotations

import argparse
import json
import logging
import platform
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import ase.io
import numpy as np
import torch

from pbcgnn.config import Config, DataConfig, ModelConfig, TrainConfig
from pbcgnn.device import resolve_device
from pbcgnn.io import read_frames
from pbcgnn.train.run import fit

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
SETS = {
    "cheng": SHARED / "cheng2019_h2o_revpbe0_d3" / "cheng2019_h2o_revpbe0_d3.xyz",
    "deepmd": SHARED / "deepmd_water" / "deepmd_water.xyz",
    "n2p2": SHARED / "n2p2_h2o_rpbe_d3" / "input.data",
}
SPK_SCRIPT = Path(__file__).resolve().parent / "schnetpack_train.py"
log = logging.getLogger("accuracy")


def split_parts(n_frames: int, seed: int, max_frames: int | None = None) -> dict[str, np.ndarray]:
    """Indices of the test, val and train parts (10/10/80, at least one val and test frame)."""
    order = np.random.default_rng(seed).permutation(n_frames)
    if max_frames:
        order = order[:max_frames]
    n = len(order)
    n_test = n_val = max(1, round(0.1 * n))
    return {"test": order[:n_test], "val": order[n_test : n_test + n_val], "train": order[n_test + n_val :]}


def write_splits(name: str, path: Path, out: Path, seed: int, max_frames: int | None) -> dict[str, Path]:
    """Shuffle, split 80/10/10 (at least one val and test frame) and write extxyz parts, with
    ``indices.json``: each part's frame indices in the source file."""
    frames = read_frames(path)
    parts = split_parts(len(frames), seed, max_frames)
    folder = out / "splits" / name
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for part, idx in parts.items():
        files[part] = folder / f"{part}.xyz"
        ase.io.write(files[part], [frames[i] for i in idx], format="extxyz")
    (folder / "indices.json").write_text(json.dumps({part: idx.tolist() for part, idx in parts.items()}))
    return files


def subset(train: Path, n: int, out: Path) -> Path:
    """The first ``n`` frames of an (already shuffled) training file."""
    path = out / f"train_{n}.xyz"
    ase.io.write(path, ase.io.read(train, index=f":{n}"), format="extxyz")
    return path


def run_pbcgnn(train: Path, val: Path, test: Path, out: Path, args) -> dict:
    config = Config(
        data=DataConfig(paths=(str(train),), val_paths=(str(val),)),
        model=replace(ModelConfig(), **args.model),
        train=replace(TrainConfig(), device=args.device, max_minutes=args.minutes, **args.train),
    ).validate()
    t0 = time.monotonic()
    result = fit(config, out, progress=False)
    wall = time.monotonic() - t0
    subprocess.run([sys.executable, "-m", "pbcgnn.cli", "-q", "eval", str(result.best), str(test), "--out",
                    str(out / "test"), "--device", str(resolve_device(args.device))], check=True,
                   stdout=subprocess.DEVNULL)
    metrics = json.loads((out / "test" / "metrics.json").read_text())["total"]
    return {**metrics, "train_s": round(wall, 1), "epochs": len(result.history), "stopped": result.stopped}


def run_schnetpack(train: Path, val: Path, test: Path, out: Path, args) -> dict | None:
    """SchNetPack's SchNet of the same size and budget, in its own interpreter (never our dependency)."""
    if not args.schnetpack_python:
        return None
    m = replace(ModelConfig(), **args.model)
    cmd = [args.schnetpack_python, str(SPK_SCRIPT), "--train", str(train.resolve()), "--val", str(val.resolve()),
           "--test", str(test.resolve()), "--out", str(out.resolve()), "--minutes", str(args.minutes), "--features", str(m.hidden_channels),
           "--interactions", str(m.num_interactions), "--rbf", str(m.num_rbf), "--cutoff", str(m.cutoff),
           "--batch-size", str(replace(TrainConfig(), **args.train).batch_size), "--device", args.device]
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run(cmd, check=True, cwd=out)  # SchNetPack writes splitting.lock into the CWD
    return json.loads((out / "metrics.json").read_text())


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sets", nargs="+", default=["deepmd"], choices=sorted(SETS))
    p.add_argument("--minutes", type=float, default=20.0, help="wall-clock training budget per model")
    p.add_argument("--curve", nargs="*", type=int, default=[], help="training-set sizes for learning curves")
    p.add_argument("--curve-minutes", type=float, default=None, help="budget per learning-curve point")
    p.add_argument("--curve-only", action="store_true", help="skip the full-set models, train only the curve")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-frames", type=int, default=None, help="use only N frames per set (smoke runs)")
    p.add_argument("--device", default="auto")
    p.add_argument("--model", type=json.loads, default={}, help="ModelConfig overrides as JSON")
    p.add_argument("--train", type=json.loads, default={}, help="TrainConfig overrides as JSON")
    p.add_argument("--schnetpack-python", default=None, help="python of a venv with schnetpack 2.x")
    p.add_argument("--out", type=Path, default=Path("runs/accuracy"))
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    results: dict = {"device": str(resolve_device(args.device)), "machine": platform.processor() or platform.machine(),
                     "torch_threads": torch.get_num_threads(), "minutes": args.minutes,
                     "curve_minutes": args.curve_minutes or args.minutes if args.curve else None,
                     "argv": sys.argv[1:] if argv is None else list(argv), "sets": {}, "curves": {}}
    for name in args.sets:
        files = write_splits(name, SETS[name], args.out, args.seed, args.max_frames)
        row = {"n_train": len(ase.io.read(files["train"], index=":"))}
        if not args.curve_only:
            row["pbcgnn"] = run_pbcgnn(files["train"], files["val"], files["test"], args.out / name / "pbcgnn", args)
            spk = run_schnetpack(files["train"], files["val"], files["test"], args.out / name / "schnetpack", args)
            if spk is not None:
                row["schnetpack"] = spk
                row["force_rmse_ratio"] = row["pbcgnn"]["force_rmse_mev_per_A"] / spk["force_rmse_mev_per_A"]
            results["sets"][name] = row
            log.info("%s: %s", name, json.dumps(row))
        if args.curve:
            curve_args = argparse.Namespace(**{**vars(args), "minutes": args.curve_minutes or args.minutes})
            points = []
            for n in [n for n in args.curve if n <= row["n_train"]]:
                out = args.out / name / f"curve_{n}"
                out.mkdir(parents=True, exist_ok=True)
                train_n = subset(files["train"], n, out)
                point = {"n_train": n, "pbcgnn": run_pbcgnn(train_n, files["val"], files["test"], out, curve_args)}
                spk = run_schnetpack(train_n, files["val"], files["test"], out / "schnetpack", curve_args)
                if spk is not None:
                    point["schnetpack"] = spk
                points.append(point)
            results["curves"][name] = points
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    (args.out / "results.md").write_text(table(results))
    if results["curves"]:
        plot_curves(results["curves"], args.out / "learning_curve.png")
        (args.out / "learning_curve.json").write_text(json.dumps(results["curves"], indent=2))
    print(table(results))
    return results


def table(results: dict) -> str:
    lines = ["| set | model | train frames | E RMSE (meV/atom) | E MAE | F RMSE (meV/Å) | F MAE | train time (s) | device |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, row in results["sets"].items():
        for model in ("pbcgnn", "schnetpack"):
            if model in row:
                m = row[model]
                lines.append(f"| {name} | {model} | {row['n_train']} | {m['energy_rmse_mev_per_atom']:.2f} | "
                             f"{m['energy_mae_mev_per_atom']:.2f} | {m['force_rmse_mev_per_A']:.1f} | "
                             f"{m['force_mae_mev_per_A']:.1f} | {m.get('train_s', float('nan')):.0f} | {results['device']} |")
    return "\n".join(lines) + "\n"


def plot_curves(curves: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_e, ax_f) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for name, points in curves.items():
        for model, style in (("pbcgnn", "o-"), ("schnetpack", "s--")):
            pts = [(p["n_train"], p[model]) for p in points if model in p]
            if pts:
                n = [x for x, _ in pts]
                ax_e.loglog(n, [m["energy_rmse_mev_per_atom"] for _, m in pts], style, label=f"{name} {model}")
                ax_f.loglog(n, [m["force_rmse_mev_per_A"] for _, m in pts], style, label=f"{name} {model}")
    ax_e.set(xlabel="training frames", ylabel="test energy RMSE (meV/atom)")
    ax_f.set(xlabel="training frames", ylabel="test force RMSE (meV/Å)")
    ax_f.legend(fontsize=8)
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    main()
