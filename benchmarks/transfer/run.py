"""Transfer learning benchmark: pretrain on revPBE0-D3 water, fine-tune on a few frames of another DFT level.

Usage (from the repository root; ``--help`` lists every budget option):

    python benchmarks/transfer/run.py --out runs/bench_transfer                 # defaults: a GPU-sized budget
    python benchmarks/transfer/run.py --quick --out /tmp/bench_transfer_smoke   # seconds, for the smoke test

Steps, each writing into ``OUT``:

1. Pretrain SchNet on ``cheng2019_h2o_revpbe0_d3`` (a random ``--pretrain-frames`` subset; a
   disjoint validation subset picks the best checkpoint).
2. Split ``deepmd_water`` (a different, undocumented DFT level): the last ``--test-frames``
   frames (one trajectory block) are the fixed test part, ``--val-frames`` random others pick
   each run's best checkpoint, and the training sets are nested prefixes of a seeded
   permutation of the rest. For every k in ``--k``, on the same k frames and the same step and
   time budget: fine-tune (energies and forces), fine-tune on energies only, train from scratch,
   and, as a baseline, the pretrained model with only E0 refitted.
3. A committee of ``--committee`` members fine-tuned on ``--committee-k`` frames (bootstrap
   resamples, own seeds): its test errors and per-frame spread vs error (Spearman).
4. Ice E-V scan (``n2p2_h2o_rpbe_d3_4g_ice``, RPBE-D3): fine-tune on ``--ice-k`` volumes spread
   over the scan, predict the others and compare the energy ranking (Spearman, minimum).

Writes ``OUT/results.json`` (every number, the options and the wall times),
``OUT/learning_curve.png`` and the committee's ``OUT/committee_k*/test_calibration.png``.
Timings live here, never in tests.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import platform
import time
from pathlib import Path

import numpy as np
import torch

from pbcgnn.checkpoint import load_checkpoint
from pbcgnn.config import CommitteeConfig, Config, DataConfig, ModelConfig, TrainConfig, TransferConfig
from pbcgnn.dataset import FrameDataset
from pbcgnn.device import resolve_device
from pbcgnn.evaluation import predict, prediction_metrics
from pbcgnn.evaluation.metrics import spearman
from pbcgnn.io import read_frames, write_frames
from pbcgnn.train.reference import fit_reference
from pbcgnn.train.run import fit

log = logging.getLogger("benchmarks.transfer")
DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
SETS = {"pretrain": "cheng2019_h2o_revpbe0_d3", "target": "deepmd_water", "ice": "n2p2_h2o_rpbe_d3_4g_ice"}
QUICK = dict(pretrain_frames=6, pretrain_val=2, pretrain_minutes=0.2, pretrain_epochs=1, k=[2, 4], test_frames=3,
             val_frames=2, steps=2, minutes=0.1, committee=2, committee_k=4, ice_k=2,
             model={"hidden_channels": 8, "num_filters": 8, "num_interactions": 1, "num_rbf": 8, "cutoff": 4.0})


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("runs/bench_transfer"))
    p.add_argument("--data-dir", type=Path, default=DATA, help="folder holding the shared data sets")
    p.add_argument("--device", default="auto")
    p.add_argument("--model", type=json.loads, default={"hidden_channels": 64, "num_filters": 64,
                                                          "num_interactions": 3, "num_rbf": 32, "cutoff": 5.0},
                   help="ModelConfig options as JSON")
    p.add_argument("--pretrain-frames", type=int, default=1000, help="cheng frames to pretrain on")
    p.add_argument("--pretrain-val", type=int, default=100, help="cheng frames to validate the pretraining on")
    p.add_argument("--pretrain-minutes", type=float, default=20.0)
    p.add_argument("--pretrain-epochs", type=int, default=10_000)
    p.add_argument("--k", type=int, nargs="+", default=[4, 8, 16, 32, 64], help="target training set sizes")
    p.add_argument("--test-frames", type=int, default=64, help="fixed test part: the last frames of deepmd_water")
    p.add_argument("--val-frames", type=int, default=16, help="deepmd frames that pick each run's best checkpoint")
    p.add_argument("--steps", type=int, default=2000, help="optimizer steps per target run (upper bound)")
    p.add_argument("--minutes", type=float, default=3.0, help="wall-clock budget per target run")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr-finetune", type=float, default=5e-4)
    p.add_argument("--lr-scratch", type=float, default=1e-3)
    p.add_argument("--committee", type=int, default=4, help="committee members (0: skip)")
    p.add_argument("--committee-k", type=int, default=16)
    p.add_argument("--ice-k", type=int, default=4, help="ice frames to fine-tune on (0: skip the ice question)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="tiny sizes and budgets: a smoke run in seconds")
    args = p.parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    return args


def _xyz(data_dir: Path, name: str) -> Path:
    return data_dir / name / f"{name}.xyz"


def prepare(args: argparse.Namespace) -> dict[str, Path]:
    """Write the subsets as extended XYZ into ``OUT/data``; return their paths."""
    folder = args.out / "data"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    paths: dict[str, Path] = {}

    def write(name, frames):
        paths[name] = folder / f"{name}.xyz"
        write_frames(paths[name], frames)

    cheng = read_frames(_xyz(args.data_dir, SETS["pretrain"]))
    order = rng.permutation(len(cheng))
    write("pretrain_train", [cheng[i] for i in order[: args.pretrain_frames]])
    write("pretrain_val", [cheng[i] for i in order[args.pretrain_frames: args.pretrain_frames + args.pretrain_val]])
    target = read_frames(_xyz(args.data_dir, SETS["target"]))
    test, rest = target[-args.test_frames:], target[: -args.test_frames]
    order = rng.permutation(len(rest))
    write("target_test", test)
    write("target_val", [rest[i] for i in order[: args.val_frames]])
    pool = [rest[i] for i in order[args.val_frames:]]
    for k in sorted(set(args.k) | {args.committee_k}):
        write(f"target_k{k}", pool[:k])
        write(f"target_k{k}_energy", [_energy_only(a) for a in pool[:k]])
    if args.ice_k:
        ice = sorted(read_frames(_xyz(args.data_dir, SETS["ice"])), key=lambda a: a.get_volume())
        chosen = set(np.linspace(0, len(ice) - 1, args.ice_k).round().astype(int).tolist())
        write("ice_train", [a for i, a in enumerate(ice) if i in chosen])
        write("ice_test", [a for i, a in enumerate(ice) if i not in chosen])
    return paths


def _energy_only(atoms):
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator

    new = Atoms(atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    new.calc = SinglePointCalculator(new, energy=atoms.get_potential_energy())
    return new


def run_config(args, train: Path, val: Path, n_train: int, lr: float, **sections) -> Config:
    """The same budget for every target run: ``--steps`` optimizer steps or ``--minutes``."""
    epochs = max(1, math.ceil(args.steps * args.batch_size / n_train))
    return Config(
        data=DataConfig(paths=(str(train),), val_paths=(str(val),)),
        model=ModelConfig(**args.model),
        train=TrainConfig(epochs=epochs, max_minutes=args.minutes, batch_size=min(args.batch_size, n_train), lr=lr,
                          patience=10**6, lr_patience=25, seed=args.seed, device=args.device),
        **sections,
    )


def train_and_test(config: Config, out: Path, test: FrameDataset, device) -> dict:
    t0 = time.monotonic()
    result = fit(config, out, progress=False)
    wall = time.monotonic() - t0
    model, _ = load_checkpoint(result.best, device=device)
    pred = predict(model, test, device=device)
    if pred.energy_std is not None:  # a committee: per-frame spread vs error on the test part
        from pbcgnn.evaluation.plots import calibration_plot

        calibration_plot(pred, out / "test_calibration.png")
    metrics = prediction_metrics(pred)
    return {**metrics, "epochs": len({(r.get("member", 0), r["epoch"]) for r in result.history}),
            "wall_s": round(wall, 1), "stopped": result.stopped}


def refit_only(pretrained: Path, train: Path, test: FrameDataset, device) -> dict:
    """The pretrained model with E0 (and the scale, function-preserving) refitted on ``train``."""
    model, _ = load_checkpoint(pretrained, device=device)
    fit_reference(model, FrameDataset(train, model.cutoff), device=device)
    return prediction_metrics(predict(model, test, device=device))


def ice_question(args, paths, pretrained: Path, device) -> dict:
    """Does the liquid model rank the ice volumes after fine-tuning on a few of them?"""
    cutoff = args.model["cutoff"]
    test = FrameDataset(paths["ice_test"], cutoff)
    ref = np.array([float(g.energy) / int(g.natoms) for g in test])
    volumes = [float(torch.det(g.cell[0])) / (int(g.natoms) / 3) for g in test]

    def ranking(model) -> dict:
        pred = predict(model, test, device=device)
        e = pred.energy / pred.natoms
        return {"spearman": spearman(e, ref),
                "energy_rmse_mev_per_atom": float(1000 * np.sqrt(np.mean((e - ref) ** 2))),
                "min_volume_pred": volumes[int(np.argmin(e))], "min_volume_ref": volumes[int(np.argmin(ref))],
                "energy_per_atom_pred": e.tolist()}

    model, _ = load_checkpoint(pretrained, device=device)
    fit_reference(model, FrameDataset(paths["ice_train"], cutoff), device=device)
    out = {"volumes_per_h2o": volumes, "energy_per_atom_ref": ref.tolist(), "pretrained_e0_refit": ranking(model)}
    n = args.ice_k
    runs = {"finetune": run_config(args, paths["ice_train"], paths["ice_train"], n, args.lr_finetune,
                                   transfer=TransferConfig(init_from=str(pretrained), keep_scale=True)),
            "scratch": run_config(args, paths["ice_train"], paths["ice_train"], n, args.lr_scratch)}
    for name, config in runs.items():
        fit(config, args.out / "ice" / name, progress=False)
        model, _ = load_checkpoint(args.out / "ice" / name / "best.pt", device=device)
        out[name] = ranking(model)
    return out


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    t_start = time.monotonic()
    device = resolve_device(args.device)
    paths = prepare(args)
    report: dict = {"options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                    "sets": SETS, "device": str(device), "torch_threads": torch.get_num_threads(),
                    "device_name": torch.cuda.get_device_name(device) if device.type == "cuda"
                    else platform.processor() or platform.machine()}

    pre = Config(data=DataConfig(paths=(str(paths["pretrain_train"]),), val_paths=(str(paths["pretrain_val"]),)),
                 model=ModelConfig(**args.model),
                 train=TrainConfig(epochs=args.pretrain_epochs, max_minutes=args.pretrain_minutes,
                                   batch_size=args.batch_size, patience=10**6, seed=args.seed, device=args.device))
    t0 = time.monotonic()
    result = fit(pre, args.out / "pretrain", progress=False)
    pretrained = result.best
    report["pretrain"] = {"validation": result.metrics, "epochs": len(result.history),
                          "wall_s": round(time.monotonic() - t0, 1)}

    test = FrameDataset(paths["target_test"], args.model["cutoff"])
    table: dict[str, dict[str, dict]] = {"finetune": {}, "finetune_energy_only": {}, "scratch": {},
                                         "pretrained_e0_refit": {}}
    for k in args.k:
        train, val = paths[f"target_k{k}"], paths["target_val"]
        ft = TransferConfig(init_from=str(pretrained))
        table["pretrained_e0_refit"][k] = refit_only(pretrained, train, test, device)
        table["finetune"][k] = train_and_test(run_config(args, train, val, k, args.lr_finetune, transfer=ft),
                                              args.out / f"k{k}" / "finetune", test, device)
        table["finetune_energy_only"][k] = train_and_test(
            run_config(args, paths[f"target_k{k}_energy"], val, k, args.lr_finetune, transfer=ft),
            args.out / f"k{k}" / "finetune_energy_only", test, device)
        table["scratch"][k] = train_and_test(run_config(args, train, val, k, args.lr_scratch),
                                             args.out / f"k{k}" / "scratch", test, device)
        log.info("k=%d force RMSE (meV/A): %s", k, {m: round(table[m][k]["force_rmse_mev_per_A"], 1) for m in table})
    report["target"] = table

    if args.committee > 1:
        k = args.committee_k
        config = run_config(args, paths[f"target_k{k}"], paths["target_val"], k, args.lr_finetune,
                            transfer=TransferConfig(init_from=str(pretrained)),
                            committee=CommitteeConfig(size=args.committee, bootstrap=True))
        report["committee"] = {"k": k, "size": args.committee,
                               "test": train_and_test(config, args.out / f"committee_k{k}", test, device)}
    if args.ice_k:
        report["ice"] = ice_question(args, paths, pretrained, device)

    k16 = 16 if 16 in args.k else args.k[len(args.k) // 2]
    report["headline"] = {
        "k": k16,
        "force_rmse_finetune": table["finetune"][k16]["force_rmse_mev_per_A"],
        "force_rmse_scratch": table["scratch"][k16]["force_rmse_mev_per_A"],
        "scratch_over_finetune": table["scratch"][k16]["force_rmse_mev_per_A"]
        / table["finetune"][k16]["force_rmse_mev_per_A"],
        "committee_spearman_forces": report.get("committee", {}).get("test", {}).get("spearman_forces"),
        "committee_spearman_energy": report.get("committee", {}).get("test", {}).get("spearman_energy"),
    }
    report["wall_s"] = round(time.monotonic() - t_start, 1)
    (args.out / "results.json").write_text(json.dumps(report, indent=2, default=float))
    _plot(table, args.out / "learning_curve.png")
    print(json.dumps(report["headline"], indent=2))
    return report


def _plot(table: dict, path: Path) -> None:
    from pbcgnn.evaluation.plots import learning_curve_plot

    names = {"finetune": "fine-tuned", "finetune_energy_only": "fine-tuned, energies only",
             "scratch": "from scratch", "pretrained_e0_refit": "pretrained, E0 refit only"}
    panels = {ylabel: {names[m]: {k: v[key] for k, v in runs.items()} for m, runs in table.items()}
              for ylabel, key in (("test force RMSE (meV/A)", "force_rmse_mev_per_A"),
                                  ("test energy RMSE (meV/atom)", "energy_rmse_mev_per_atom"))}
    learning_curve_plot(panels, path, title="revPBE0-D3 (Cheng 2019) -> deepmd_water")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    main()
