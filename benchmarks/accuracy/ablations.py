"""Ablations: one set, one fixed split, one budget; each variant changes a few options of the
defaults and is scored by ``pbcgnn eval`` on the test part.

Usage (from the repository root; variants run one after another, so two invocations with
different ``--variants`` can share a 2-core machine at one thread each):

    OMP_NUM_THREADS=1 python benchmarks/accuracy/ablations.py --set deepmd --minutes 10 \
        --variants default cosine cosine_ew1000 --out runs/ablations

Writes ``OUT/ablations.json`` and ``OUT/ablations.md`` (merged with earlier runs in ``OUT``, so
results of parallel invocations collect in one table).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import platform
from dataclasses import asdict, replace
from pathlib import Path

import torch

_spec = importlib.util.spec_from_file_location("accuracy_run", Path(__file__).with_name("run.py"))
run = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(run)
ModelConfig, TrainConfig = run.ModelConfig, run.TrainConfig

#: name -> (ModelConfig overrides, TrainConfig overrides), relative to the package defaults.
VARIANTS: dict[str, tuple[dict, dict]] = {
    "default": ({}, {}),
    "ew100+cosine": ({}, {"energy_weight": 100.0, "lr_schedule": "cosine"}),
    "ew1000+cosine": ({}, {"energy_weight": 1000.0, "lr_schedule": "cosine"}),
    "plateau": ({}, {"lr_schedule": "plateau"}),
    "cosine": ({}, {"lr_schedule": "cosine"}),
    "anneal0": ({}, {"anneal": 0.0}),
    "anneal0.4": ({}, {"anneal": 0.4}),
    "ew1": ({}, {"energy_weight": 1.0}),
    "ew3": ({}, {"energy_weight": 3.0}),
    "ew10": ({}, {"energy_weight": 10.0}),
    "ew100": ({}, {"energy_weight": 100.0}),
    "ew1000": ({}, {"energy_weight": 1000.0}),
    "final-ew100": ({}, {"final_energy_weight": 100.0}),
    "final-ew1000": ({}, {"final_energy_weight": 1000.0}),
    "huber0.01": ({}, {"huber_delta": 0.01}),
    "huber0.1": ({}, {"huber_delta": 0.1}),
    "lr3e-4": ({}, {"lr": 3e-4}),
    "lr3e-3": ({}, {"lr": 3e-3}),
    "batch2": ({}, {"batch_size": 2}),
    "batch8": ({}, {"batch_size": 8}),
    "wd0.01": ({}, {"weight_decay": 0.01}),
    "ema0": ({}, {"ema_decay": 0.0}),
    "ema999": ({}, {"ema_decay": 0.999}),
    "cutoff5": ({"cutoff": 5.0}, {}),
    "rbf16": ({"num_rbf": 16}, {}),
    "rbf64": ({"num_rbf": 64}, {}),
    "width128": ({"hidden_channels": 128, "num_filters": 128}, {}),
    "interactions6": ({"num_interactions": 6}, {}),
    "128x4": ({"hidden_channels": 128, "num_filters": 128, "num_interactions": 4}, {}),
    "128x4+lr1e-3": ({"hidden_channels": 128, "num_filters": 128, "num_interactions": 4}, {"lr": 1e-3}),
    "float64": ({"dtype": "float64"}, {}),
    # PaiNN (20 sine functions as in its paper), lr 1e-3: SchNet 128x4 diverged at 3e-3
    "painn64x3": ({"architecture": "painn", "hidden_channels": 64, "num_rbf": 20, "cutoff": 5.0}, {"lr": 1e-3}),
    "painn128x3": ({"architecture": "painn", "hidden_channels": 128, "num_rbf": 20, "cutoff": 5.0}, {"lr": 1e-3}),
    "painn64x3c6": ({"architecture": "painn", "hidden_channels": 64, "num_rbf": 20, "cutoff": 6.0}, {"lr": 1e-3}),
    "painn128x3c6": ({"architecture": "painn", "hidden_channels": 128, "num_rbf": 20, "cutoff": 6.0}, {"lr": 1e-3}),
}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--set", default="deepmd", choices=sorted(run.SETS))
    p.add_argument("--variants", nargs="+", default=["default"], choices=sorted(VARIANTS))
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--seed", type=int, default=0, help="split seed")
    p.add_argument("--max-frames", type=int, default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--model", type=json.loads, default={}, help="ModelConfig overrides applied to every variant")
    p.add_argument("--train", type=json.loads, default={}, help="TrainConfig overrides applied to every variant")
    p.add_argument("--out", type=Path, default=Path("runs/ablations"))
    args = p.parse_args(argv)
    out = args.out / args.set
    out.mkdir(parents=True, exist_ok=True)
    # Written once and reused, so parallel invocations never rewrite files another one reads.
    files = {k: out / f"seed{args.seed}" / "splits" / args.set / f"{k}.xyz" for k in ("train", "val", "test")}
    if not files["test"].is_file():
        files = run.write_splits(args.set, run.SETS[args.set], out / f"seed{args.seed}", args.seed, args.max_frames)
    results_path = out / "ablations.json"
    for name in args.variants:
        model, train = VARIANTS[name]
        variant = argparse.Namespace(minutes=args.minutes, device=args.device,
                                     model={**args.model, **model}, train={**args.train, **train})
        row = run.run_pbcgnn(files["train"], files["val"], files["test"], out / name, variant)
        effective = {"model": asdict(replace(ModelConfig(), **variant.model)),
                     "train": asdict(replace(TrainConfig(), **variant.train))}
        row.update(variant=name, config=effective, model=variant.model, train=variant.train, minutes=args.minutes,
                   threads=torch.get_num_threads(), machine=platform.processor() or platform.machine())
        results = json.loads(results_path.read_text()) if results_path.is_file() else {}
        results[name] = row  # re-read first: another invocation may have added rows meanwhile
        results_path.write_text(json.dumps(results, indent=2))
        (out / "ablations.md").write_text(table(results))
        logging.getLogger("ablations").info("%s: %s", name, json.dumps(row))
    results = json.loads(results_path.read_text())
    print(table(results))
    return results


def changes(row: dict) -> str:
    """What differs from the current package defaults (the budget and device aside)."""
    defaults = {"model": asdict(ModelConfig()), "train": asdict(TrainConfig())}
    diff = [f"{k}={v}" for part in ("model", "train") for k, v in row["config"][part].items()
            if k not in ("device", "max_minutes") and v != defaults[part][k]]
    return ", ".join(diff) or "(defaults)"


def table(results: dict) -> str:
    lines = ["| variant | differs from the defaults | epochs | E RMSE (meV/atom) | F RMSE (meV/Å) | F MAE (meV/Å) | train (s) |",
             "|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        lines.append(f"| {name} | {changes(r)} | {r['epochs']} | {r['energy_rmse_mev_per_atom']:.2f} | "
                     f"{r['force_rmse_mev_per_A']:.1f} | {r['force_mae_mev_per_A']:.1f} | {r['train_s']:.0f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    main()
