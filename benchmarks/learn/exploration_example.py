"""Exploration end to end: ``pbcgnn learn`` from 8 frames, MD at two temperatures and densities, to the stop rule.

The reference is NOT DFT: every label (training, validation, held-out and the loop's own) comes
from the shipped Cheng model ``data/pretrained/cheng2019_revpbe0_d3_schnet.pt`` (a SchNet trained
on revPBE0-D3 water), standing in for DFT through ``stand_in_dft.py`` (``--calculator
stand_in_dft:make_calc``). A stand-in makes the loop cheap and lets the committee's error be
measured on any frame; with a real method only ``--calculator`` changes.

Reproduce (from the repository root; one CPU thread; rerunning the command continues a killed run):

    OMP_NUM_THREADS=1 python benchmarks/learn/exploration_example.py --out runs/exploration_example --device cpu
    python benchmarks/learn/exploration_example.py --quick --out /tmp/exploration_smoke --device cpu   # smoke

Steps, each written to ``--out`` once and skipped when there:

1. ``frames/``: ``--train`` (8), ``--val`` and ``--heldout`` Cheng et al. frames drawn (seeded) and
   re-labelled by the stand-in, and two start frames: those of the remaining frames nearest the
   ``--densities`` (g/cm3), unlabelled.
2. ``committee0/``: ``pbcgnn train --committee 4`` (a small SchNet) on the 8 frames.
3. ``probe/``: ``pbcgnn learn`` without a calculator and a vanishing threshold, one round: the
   starting committee's exploration (MD from both starts at both ``--temperature``) and its
   ``scores.csv``. The threshold is the ``--quantile`` of those frames' calibrated ``max_force``
   spread (0.8: 20 % of them lie above it), so it is stated relative to the starting committee.
4. ``learn/``: ``pbcgnn learn --calculator stand_in_dft:make_calc`` with that threshold (its
   round 0 reuses the probe's trajectories, the same seeded MD of the same committee), run until
   a stop rule fires: the stop rule (``--stop-fraction`` of the explored frames above the
   threshold) or a budget (``--max-rounds``, ``--max-labels``).
5. ``summary.json``: per round the frames explored, the fraction above the threshold, labels
   added, failures, the members' retraining minutes, and the force and energy RMSE against the
   stand-in on the held-out frames of the committee before and after the round; why it stopped.
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import ase.io
import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator
from ase.calculators.singlepoint import SinglePointCalculator

from pbcgnn.checkpoint import load_checkpoint, read_checkpoint
from pbcgnn.dataset import FrameDataset
from pbcgnn.evaluation import predict, prediction_metrics
from pbcgnn.evaluation.metrics import frame_spread, spearman
from pbcgnn.io import read_frames, write_frames

log = logging.getLogger("benchmarks.learn.exploration")
HERE = Path(__file__).resolve().parent
CHENG = HERE.parents[1].parent / "shared" / "data" / "cheng2019_h2o_revpbe0_d3" / "cheng2019_h2o_revpbe0_d3.xyz"
WATER_G_PER_MOL = 18.01528
AVOGADRO_PER_A3_CM3 = 0.602214076  # N_A x 1e-24: (g/mol) / (A^3) -> g/cm^3 after division
QUICK = dict(train=4, val=3, heldout=2, members=2, epochs=2, retrain_epochs=1, steps=20, sample_every=5, error_every=2,
             max_per_round=2, max_rounds=3, max_labels=6,
             model=["--features", "8", "--filters", "8", "--interactions", "1", "--rbf", "8", "--cutoff", "4.0"])


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("runs/exploration_example"))
    p.add_argument("--data", type=Path, default=CHENG, help="the Cheng et al. extended XYZ file (structures only used)")
    p.add_argument("--seed", type=int, default=0, help="frame draw, members, MD")
    p.add_argument("--train", type=int, default=8, help="starting labels")
    p.add_argument("--val", type=int, default=8, help="validation frames (checkpoints, spread calibration)")
    p.add_argument("--heldout", type=int, default=16, help="frames the committee's error is measured on")
    p.add_argument("--densities", type=float, nargs=2, default=[0.92, 1.08], help="start frames' densities, g/cm3")
    p.add_argument("--temperature", type=float, nargs="+", default=[300.0, 400.0], help="MD temperatures, K")
    p.add_argument("--members", type=int, default=4)
    p.add_argument("--epochs", type=int, default=1000, help="epochs of the starting committee")
    p.add_argument("--retrain-epochs", type=int, default=100, help="epochs of each retraining (pbcgnn learn --epochs)")
    p.add_argument("--steps", type=int, default=1000, help="MD steps per trajectory (0.5 fs)")
    p.add_argument("--sample-every", type=int, default=20)
    p.add_argument("--quantile", type=float, default=0.8, help="threshold: this quantile of the probe's spreads")
    p.add_argument("--stop-fraction", type=float, default=0.05)
    p.add_argument("--max-per-round", type=int, default=8)
    p.add_argument("--max-rounds", type=int, default=10)
    p.add_argument("--max-labels", type=int, default=100)
    p.add_argument("--error-every", type=int, default=2,
                   help="check the committee against the stand-in on every Nth explored frame of each round")
    p.add_argument("--device", default="cpu")
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    args = p.parse_args(argv)
    args.model = ["--features", "32", "--filters", "32", "--interactions", "2", "--rbf", "20", "--cutoff", "5.0"]
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    if not 0 < args.quantile < 1:
        p.error(f"expected 0 < --quantile < 1, found {args.quantile}")
    return args


def density(atoms: Atoms) -> float:
    """Density of a water frame, g/cm3."""
    return len(atoms) / 3 * WATER_G_PER_MOL / AVOGADRO_PER_A3_CM3 / atoms.get_volume()


def structure(atoms: Atoms) -> Atoms:
    """Numbers, positions and cell of ``atoms``: none of the file's own labels."""
    return Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)


def relabel(frames: list[Atoms], calc: Calculator) -> list[Atoms]:
    """The structures of ``frames`` with the stand-in's energy (eV) and forces (eV/A)."""
    out = []
    for atoms in frames:
        work = structure(atoms)
        work.calc = calc
        energy, forces = float(work.get_potential_energy()), np.array(work.get_forces())
        work.calc = SinglePointCalculator(work, energy=energy, forces=forces)
        out.append(work)
    return out


def prepare(args: argparse.Namespace) -> dict[str, Path]:
    """The frames of step 1 (written once): train/val/heldout labelled by the stand-in, two start frames."""
    folder = args.out / "frames"
    paths = {name: folder / f"{name}.xyz" for name in ("train", "val", "heldout", "start_0", "start_1")}
    if (folder / "frames.json").is_file():
        return paths
    import stand_in_dft

    frames = read_frames(args.data, require_energy=False)
    order = np.random.default_rng(args.seed).permutation(len(frames)).tolist()
    sizes = {"train": args.train, "val": args.val, "heldout": args.heldout}
    drawn, k = {}, 0
    for name, n in sizes.items():
        drawn[name], k = order[k:k + n], k + n
    rest = order[k:]
    rho = {i: density(frames[i]) for i in rest}
    drawn["start_0"], drawn["start_1"] = ([min(rest, key=lambda i: abs(rho[i] - target))] for target in args.densities)
    folder.mkdir(parents=True, exist_ok=True)
    calc = stand_in_dft.make_calc()
    for name, indices in drawn.items():
        chosen = [structure(frames[i]) for i in indices]
        write_frames(paths[name], relabel(chosen, calc) if name in sizes else chosen, format="extxyz")
    record = {"source": str(args.data), "indices": drawn, "reference": str(stand_in_dft.CHECKPOINT),
              "start_densities_g_cm3": [density(frames[drawn[s][0]]) for s in ("start_0", "start_1")]}
    (folder / "frames.json").write_text(json.dumps(record, indent=1))
    return paths


def run_cli(args: argparse.Namespace, cli: list[str], logfile: Path) -> float:
    """Run ``pbcgnn CLI...`` (this Python), output to ``logfile``, the stand-in importable; wall seconds.

    Raises:
        SystemExit: the command failed, with the end of its output.
    """
    path = os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path, "PBCGNN_STAND_IN_DEVICE": "cpu" if args.device == "auto" else args.device}
    t0 = time.monotonic()
    with open(logfile, "a") as log_out:
        rc = subprocess.run([sys.executable, "-m", "pbcgnn.cli", *cli, "--no-progress"], stdout=log_out,
                            stderr=subprocess.STDOUT, env=env).returncode
    if rc != 0:
        tail = "\n".join(logfile.read_text().splitlines()[-5:])
        raise SystemExit(f"pbcgnn {cli[0]} failed (exit {rc}); end of {logfile}:\n{tail}")
    return time.monotonic() - t0


def train_committee(args: argparse.Namespace, paths: dict[str, Path]) -> Path:
    """Step 2: the starting committee ``committee0/best.pt`` (kept when there)."""
    out = args.out / "committee0"
    if not (out / "best.pt").is_file():
        resume = ["--resume"] if (out / "last.pt").is_file() else []
        run_cli(args, ["train", str(paths["train"]), "--val", str(paths["val"]), "--out", str(out),
                      "--committee", str(args.members), *args.model, "--epochs", str(args.epochs),
                      "--seed", str(args.seed), "--device", args.device, *resume], args.out / "train.log")
    return out / "best.pt"


def explore_options(args: argparse.Namespace, paths: dict[str, Path]) -> list[str]:
    """The exploration options shared by the probe and the run."""
    temperatures = [x for t in args.temperature for x in ("--temperature", str(t))]
    return ["--structure", str(paths["start_0"]), "--structure", str(paths["start_1"]), *temperatures,
            "--steps", str(args.steps), "--sample-every", str(args.sample_every), "--seed", str(args.seed),
            "--device", args.device]


def probe(args: argparse.Namespace, committee: Path, paths: dict[str, Path]) -> dict:
    """Step 3: the starting committee's exploration, and the threshold from its spreads."""
    out = args.out / "probe"
    scores = out / "round_000" / "scores.csv"
    if not scores.is_file():
        shutil.rmtree(out, ignore_errors=True)  # a probe killed midway starts again
        run_cli(args, ["learn", str(committee), "--out", str(out), *explore_options(args, paths),
                      "--threshold", "1e-9", "--max-rounds", "1", "--max-per-round", "1"], args.out / "probe.log")
    with open(scores) as f:
        spreads = np.array([float(row["max_force"]) for row in csv.DictReader(f)])
    threshold = float(np.quantile(spreads, args.quantile))
    return {"frames": int(spreads.size), "quantile": args.quantile, "threshold_eV_per_A": threshold,
            "max_force_eV_per_A": {f"q{round(100 * q)}": float(np.quantile(spreads, q)) for q in (0.1, 0.5, 0.9)}}


def run_learn(args: argparse.Namespace, committee: Path, paths: dict[str, Path], threshold: float) -> float:
    """Step 4: ``pbcgnn learn`` until it stops (a killed run is resumed); wall seconds of this call."""
    out = args.out / "learn"
    budgets = ["--calculator", "stand_in_dft:make_calc", "--stop-fraction", str(args.stop_fraction),
               "--max-rounds", str(args.max_rounds), "--max-labels", str(args.max_labels),
               "--epochs", str(args.retrain_epochs), "--device", args.device]
    if (out / "state.json").is_file():
        return run_cli(args, ["learn", "--out", str(out), "--resume", *budgets], args.out / "learn.log")
    # round 0 explores with the probe's committee, options and seeds: its trajectories are the probe's
    # (pbcgnn learn runs only those without run.json or failed.json)
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(args.out / "probe" / "round_000" / "explore", out / "round_000" / "explore")
    return run_cli(args, ["learn", str(committee), "--out", str(out), *explore_options(args, paths),
                         "--threshold", repr(threshold), "--max-per-round", str(args.max_per_round), *budgets],
                  args.out / "learn.log")


def heldout_errors(committee: str | Path, data: FrameDataset, device: str) -> dict[str, float]:
    """Force (meV/A) and energy (meV/atom) RMSE of the committee mean against the stand-in's labels."""
    model, _ = load_checkpoint(committee, device=device)
    metrics = prediction_metrics(predict(model, data, device=device), model.calibration)
    return {k: float(metrics[k]) for k in ("force_rmse_mev_per_A", "energy_rmse_mev_per_atom")}


def explored_errors(args: argparse.Namespace, folder: Path) -> dict | None:
    """The exploring committee's own error where its dynamics went: on every ``--error-every``th
    explored frame of the round, its mean forces (stored in the trajectory) against the stand-in's.
    Per trajectory and over all: force RMSE (meV/A) and the median calibrated ``max_force``
    spread (eV/A); over all, the Spearman of per-frame force RMSE against the per-frame RMS
    calibrated force spread. Cached in ``OUT/explored/round_NNN.json``; None without MD."""
    cache = args.out / "explored" / f"{folder.name}.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    paths = sorted((folder / "explore").glob("md*/trajectory.xyz"))
    if not paths:
        return None
    import stand_in_dft  # benchmarks/learn is on sys.path (main)

    calc, result, errors, spreads, all_diffs = stand_in_dft.make_calc(), {"trajectories": {}}, [], [], []
    for path in paths:
        frames = [a for a in ase.io.read(path, index=":") if int(a.info["step"]) > 0][::args.error_every]
        if not frames:
            continue
        diffs = [a.get_forces() - relabel([a], calc)[0].get_forces() for a in frames]  # [N, 3] eV/A each
        spread = frame_spread(np.array([a.info["energy_std"] for a in frames]),
                              np.concatenate([a.arrays["forces_std"] for a in frames]),
                              np.array([len(a) for a in frames]))
        errors += [float(np.sqrt(np.mean(d ** 2))) for d in diffs]
        spreads += spread["forces"].tolist()
        all_diffs += diffs
        result["trajectories"][path.parent.name] = {
            "frames": len(frames), "force_rmse_mev_per_A": 1000 * float(np.sqrt(np.mean(np.square(diffs)))),
            "median_max_force_spread_eV_per_A": float(np.median(spread["max_force"]))}
    result.update(frames=len(errors), force_rmse_mev_per_A=1000 * float(np.sqrt(np.mean(np.concatenate(
        [d.ravel() for d in all_diffs]) ** 2))), spearman_forces=spearman(np.array(errors), np.array(spreads)))
    cache.parent.mkdir(exist_ok=True)
    cache.write_text(json.dumps(result, indent=1))
    return result


def retrain_minutes(folder: Path) -> float | None:
    """The members' training minutes of the round's retraining (from their ``last.pt``), None if not retrained."""
    members = sorted(folder.glob("member_*/last.pt"))
    if not members:
        return None
    return sum(read_checkpoint(p)["train_state"]["loop"]["elapsed_s"] for p in members) / 60


def summarise(args: argparse.Namespace, first: Path, paths: dict[str, Path]) -> dict:
    """Step 5: one row per round, and why the run stopped."""
    out = args.out / "learn"
    state = json.loads((out / "state.json").read_text())
    device = "cpu" if args.device == "auto" else args.device
    data = FrameDataset(paths["heldout"], float(args.model[args.model.index("--cutoff") + 1]))
    errors: dict[str, dict] = {}

    def scored(committee: str | Path) -> dict[str, float]:
        key = str(Path(committee).resolve())
        if key not in errors:
            errors[key] = heldout_errors(key, data, device)
        return errors[key]

    rows = []
    for folder in sorted(out.glob("round_*")):
        rec = json.loads((folder / "round.json").read_text()) if (folder / "round.json").is_file() else {}
        if not rec:
            continue
        row = {k: rec.get(k) for k in ("round", "explored", "above_threshold", "fraction", "picked", "labelled",
                                        "failed", "md_failures", "stopped")}
        row["retrain_minutes"] = retrain_minutes(folder / "committee") if rec.get("trained") else None
        row["heldout_before"] = scored(rec["committee"])
        row["heldout_after"] = scored(rec["trained"]) if rec.get("trained") else None
        row["explored_error"] = explored_errors(args, folder)
        rows.append(row)
    reason = state["stopped"] or "not stopped"
    by = "stop rule" if reason.startswith("converged") else "budget" if "budget" in reason else "other"
    return {"rounds": rows, "stopped": reason, "stopped_by": by, "labels": sum(r["labelled"] or 0 for r in rows),
            "heldout_start": scored(first), "heldout_final": scored(state["committee"])}


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    if str(HERE) not in sys.path:  # stand_in_dft, for step 1 in this process
        sys.path.insert(0, str(HERE))
    t0 = time.monotonic()
    paths = prepare(args)
    committee = train_committee(args, paths)
    threshold = probe(args, committee, paths)
    learn_s = run_learn(args, committee, paths, threshold["threshold_eV_per_A"])
    summary = summarise(args, committee, paths)
    report = {"argv": sys.argv[1:] if argv is None else list(argv),
              "reference": "stand-in for DFT: data/pretrained/cheng2019_revpbe0_d3_schnet.pt (not DFT)",
              "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "frames": json.loads((args.out / "frames" / "frames.json").read_text()),
              "threshold": threshold, "stop_fraction": args.stop_fraction, **summary,
              "wall_minutes": {"learn_this_call": learn_s / 60, "total_this_call": (time.monotonic() - t0) / 60},
              "machine": platform.processor() or platform.machine(), "torch_threads": torch.get_num_threads()}
    (args.out / "summary.json").write_text(json.dumps(report, indent=1))
    print(f"stopped ({summary['stopped_by']}): {summary['stopped']}")
    print(f"held-out force RMSE against the stand-in: {summary['heldout_start']['force_rmse_mev_per_A']:.1f} -> "
          f"{summary['heldout_final']['force_rmse_mev_per_A']:.1f} meV/A with {summary['labels']} labels")
    return report


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    main()
