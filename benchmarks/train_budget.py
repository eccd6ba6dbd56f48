"""Train the default pbcgnn model on a data set for a fixed wall-clock budget; report validation errors.

Usage (from the repository root):

    python benchmarks/train_budget.py --minutes 20 --out runs/bench_deepmd
    python benchmarks/train_budget.py --data ../shared/data/cheng2019_h2o_revpbe0_d3/cheng2019_h2o_revpbe0_d3.xyz

Writes ``OUT/result.json``: validation energy (meV/atom) and force (meV/A) RMSE/MAE of the best
checkpoint, epochs completed, wall time, device, the predict-the-mean baselines and the full
configuration. Timings live here, never in tests.
"""
from __future__ import annotations

import argparse
import json
import logging
import platform
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from pbcgnn.checkpoint import load_checkpoint
from pbcgnn.config import Config, DataConfig, ModelConfig, TrainConfig
from pbcgnn.dataset import load_datasets
from pbcgnn.device import resolve_device
from pbcgnn.evaluation import error_metrics, predict
from pbcgnn.train.run import fit

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared/data/deepmd_water/deepmd_water.xyz"


def baselines(train, val) -> dict[str, float]:
    """Predict-the-mean: mean training energy per atom, zero force."""
    e_train = np.array([float(g.energy) / int(g.natoms) for g in train])
    e_val = np.array([float(g.energy) / int(g.natoms) for g in val])
    f_val = np.concatenate([g.forces.numpy().ravel() for g in val])
    return {"energy_rmse_mev_per_atom": float(1000 * np.sqrt(np.mean((e_val - e_train.mean()) ** 2))),
            "force_rmse_mev_per_A": float(1000 * np.sqrt(np.mean(f_val**2)))}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--minutes", type=float, default=20.0, help="wall-clock training budget")
    p.add_argument("--epochs", type=int, default=10_000, help="upper bound; the budget usually ends first")
    p.add_argument("--out", type=Path, default=Path("runs/bench_train_budget"))
    p.add_argument("--device", default="auto")
    p.add_argument("--max-frames", type=int, default=None, help="use only the first N frames (smoke runs)")
    p.add_argument("--model", type=json.loads, default={}, help='ModelConfig overrides as JSON, e.g. {"num_interactions": 2}')
    p.add_argument("--train", type=json.loads, default={}, help="TrainConfig overrides as JSON")
    args = p.parse_args(argv)

    data_path = args.data
    if args.max_frames:
        import ase.io

        frames = ase.io.read(args.data, index=f":{args.max_frames}")
        args.out.mkdir(parents=True, exist_ok=True)
        data_path = args.out / f"first{args.max_frames}.xyz"
        ase.io.write(data_path, frames, format="extxyz")
    config = Config(
        data=DataConfig(paths=(str(data_path),), val_fraction=0.1, split_seed=0),
        model=replace(ModelConfig(), **args.model),
        train=replace(TrainConfig(), epochs=args.epochs, max_minutes=args.minutes, device=args.device,
                      patience=10_000, **args.train),
    ).validate()
    device = resolve_device(config.train.device)
    train, val = load_datasets(config)
    t0 = time.monotonic()
    result = fit(config, args.out, progress=False, datasets=(train, val))
    wall = time.monotonic() - t0
    model, _ = load_checkpoint(result.best, device=device)
    metrics = error_metrics(predict(model, val, device=device))
    report = {
        "data": str(args.data), "n_train": len(train), "n_val": len(val),
        "validation": metrics, "predict_the_mean": baselines(train, val),
        "epochs": len(result.history), "stopped": result.stopped, "wall_s": round(wall, 1),
        "device": str(device), "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(), "config": config.to_dict(),
    }
    (args.out / "result.json").write_text(json.dumps(report, indent=2))
    print(json.dumps({k: report[k] for k in ("validation", "predict_the_mean", "epochs", "wall_s", "device")}, indent=2))
    return report


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    main()
