"""Time to accuracy: test errors against minutes of training, for pbcgnn,
SchNetPack and MACE side by side, on the same Cheng split, one CPU thread each.

Usage (from the repository root; see README.md for the venvs and the full run):

    OMP_NUM_THREADS=1 python benchmarks/accuracy/time_to_accuracy.py --minutes 5 15 45 135 \
        --packages pbcgnn schnetpack mace --out runs/tta --results benchmarks/accuracy/results

* The Cheng frames are split 80/10/10 as ``run.py`` does (seed 0); the split files are written
  once under ``OUT/splits`` and shared by every package (and by parallel invocations).
* Each package trains once, one thread, and leaves a model at each budget mark M (minutes of
  training, wall clock, data preparation excluded):

  - pbcgnn: one ``pbcgnn train --max-minutes M`` per mark, as a user with M minutes runs it (its
    schedule and final anneal fit the budget); its ``best.pt`` is the point. Extending an
    annealed run with ``--resume`` restarts it at the plateau rate (tens of minutes to regain
    its accuracy on Cheng), so resumed stages would understate the larger budgets.
  - SchNetPack: ``schnetpack_snapshots.py`` (``schnetpack_train.py``, SchNet of the same size),
    one run of the largest budget; the point is the best model on validation within M.
  - MACE: ``mace_snapshots.py`` (``mace_run_train``), likewise.

* Every model is scored on the same test frames with pbcgnn's metric definitions (energy per
  atom, force components): pbcgnn by ``pbcgnn eval``; the peers' own predictions (made in their
  own venvs) by ``pbcgnn.evaluation.metrics.error_metrics``.

Writes ``RESULTS/time_to_accuracy.json`` (merged with earlier invocations, point by point, so
packages and marks run in separate invocations collect in one file) and ``RESULTS/time_to_accuracy.png``.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import math
import os
import platform
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import ase.io
import numpy as np
import torch
from pbcgnn.cli import train as train_command

from pbcgnn.evaluation.metrics import error_metrics
from pbcgnn.evaluation.predict import Predictions

_spec = importlib.util.spec_from_file_location("accuracy_run", Path(__file__).with_name("run.py"))
run = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(run)

HERE = Path(__file__).resolve().parent
PACKAGES = ("pbcgnn", "schnetpack", "mace")
#: The figure's legend: package, version and model (with --pbcgnn-args, the SchNet size may differ).
LABELS = {"pbcgnn": "pbcgnn (SchNet)", "schnetpack": "SchNetPack 2.1.1 (SchNet)",
          "mace": "MACE 0.3.16 (32x0e+32x1o, L=1)", "pbcgnn_painn": "pbcgnn (PaiNN)",
          "mace_docs": "MACE 0.3.16 (64x0e, L=0, its water recipe)"}
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
#: MACE's model and recipe: a small standard water model (the one specified), batch size and cutoff pbcgnn's.
MACE_ARGS = ["--name=mace", "--model=MACE", "--num_interactions=2", "--hidden_irreps=32x0e + 32x1o", "--max_L=1",
             "--correlation=3", "--E0s=average", "--valid_batch_size=8", "--lr=0.01", "--ema", "--ema_decay=0.99",
             "--amsgrad", "--default_dtype=float32", "--seed=0", "--device=cpu"]
log = logging.getLogger("time_to_accuracy")


def shared_splits(out: Path, seed: int, max_frames: int | None) -> dict[str, Path]:
    """run.py's Cheng split, written once (into a private folder, then renamed into place); the
    folder is named by the seed and frame limit, so a changed split is never mistaken for it."""
    folder = out / "splits" / (f"cheng_seed{seed}" + (f"_{max_frames}frames" if max_frames else ""))
    if not (folder / "test.xyz").is_file():
        tmp = out / f"splits.tmp{os.getpid()}"
        run.write_splits("cheng", run.SETS["cheng"], tmp, seed, max_frames)
        folder.parent.mkdir(parents=True, exist_ok=True)
        try:
            (tmp / "splits" / "cheng").rename(folder)
        except OSError:  # another invocation was first: use its files
            pass
        shutil.rmtree(tmp, ignore_errors=True)
    return {part: folder / f"{part}.xyz" for part in ("train", "val", "test")}


def sizes(pbcgnn_args: list[str]) -> dict:
    """Width, depth, Gaussians, cutoff and batch size that ``pbcgnn train`` takes from ``pbcgnn_args``."""
    params = train_command.make_context("train", list(pbcgnn_args)).params
    return {k: params[k] for k in ("features", "interactions", "rbf", "cutoff", "batch_size")}


def call(cmd: list[str], commands: list[str], **kwargs) -> None:
    """Run ``cmd`` on one thread and record it."""
    commands.append(shlex.join(cmd))
    log.info("%s", commands[-1])
    subprocess.run(cmd, check=True, env=ONE_THREAD, **kwargs)


def score(predictions: Path, test: Path, prefix: str) -> dict:
    """pbcgnn's metrics of a peer's test predictions (``{prefix}energy`` / ``{prefix}forces``)."""
    ref, pred = ase.io.read(test, index=":"), ase.io.read(predictions, index=":")
    assert [len(a) for a in ref] == [len(a) for a in pred], f"{predictions} does not match {test}"
    natoms = np.array([len(a) for a in ref])
    return error_metrics(Predictions(
        energy=np.array([a.info[f"{prefix}energy"] for a in pred]), energy_ref=np.array([a.get_potential_energy() for a in ref]),
        natoms=natoms, forces=np.concatenate([a.arrays[f"{prefix}forces"] for a in pred]),
        forces_ref=np.concatenate([a.get_forces() for a in ref]), has_forces=np.ones(len(ref), bool),
        sources=[], structures=[]))


def finished(last: Path) -> bool:
    """Whether the run whose ``last.pt`` this is has ended (budget spent, early stop or all
    epochs: ``pbcgnn train``'s own rules), not merely paused by ``--stop-after``."""
    ckpt = torch.load(last, weights_only=True, map_location="cpu")
    loop, tc = ckpt["train_state"]["loop"], ckpt["config"]["train"]
    return (loop["elapsed_s"] > 60 * (tc["max_minutes"] or math.inf) or loop["bad_epochs"] >= tc["patience"]
            or loop["epoch"] >= tc["epochs"])


def train_mark(files: dict, model: Path, minutes: float, args, commands: list[str]) -> bool:
    """One mark's ``pbcgnn train --max-minutes M``, resumed when a paused run is there; returns
    whether it has ended (False: paused by ``--stop-after``, to be resumed by the next invocation)."""
    pause = ["--stop-after", f"{args.stop_after:g}"] if args.stop_after else []
    if (model / "last.pt").is_file():
        if finished(model / "last.pt"):
            return True
        cmd = ["train", "--resume", "--out", str(model), *pause]
    else:
        cmd = ["train", str(files["train"]), "--val", str(files["val"]), "--out", str(model), "--max-minutes",
               f"{minutes:g}", "--device", "cpu", "--no-progress", *args.pbcgnn_args, *pause]
    call([sys.executable, "-m", "pbcgnn.cli", *cmd], commands)
    return finished(model / "last.pt")


def run_pbcgnn(files: dict, out: Path, args) -> dict:
    """pbcgnn as a user with M minutes runs it: one ``pbcgnn train --max-minutes M`` per mark, its
    schedule (final anneal included) fitted to M; each run's best.pt scored. A mark already trained
    and scored is reused; one paused (``--stop-after``) is resumed and scored once it ends."""
    commands, points = [], []
    for minutes in sorted(args.minutes):
        model, folder = out / f"model_{minutes:g}min", out / f"eval_{minutes:g}min"
        if not train_mark(files, model, minutes, args, commands):
            log.info("%g-minute mark paused; run again to resume it", minutes)
            continue
        loop = torch.load(model / "last.pt", weights_only=True, map_location="cpu")["train_state"]["loop"]
        val = [h["val_loss"] for h in loop["history"]]
        point = {"minutes": minutes, "epochs": len(val), "best_epoch": int(np.argmin(val)) + 1,
                 "train_s": round(loop["elapsed_s"], 1), "snapshot": str(model / "best.pt")}
        if not (folder / "metrics.json").is_file():
            call([sys.executable, "-m", "pbcgnn.cli", "-q", "eval", point["snapshot"], str(files["test"]), "--out",
                  str(folder), "--device", "cpu"], commands, stdout=subprocess.DEVNULL)
        points.append({**point, **json.loads((folder / "metrics.json").read_text())["total"]})
    return {"commands": commands, "points": points}


def merged(old: dict, new: dict) -> dict:
    """A package's row after another invocation: its points by mark (the new one wins at a mark
    measured twice), commands and invocations appended; a skip never replaces measured points."""
    if "points" not in new:
        return old if "points" in old else new
    marks = {p["minutes"] for p in new["points"]}
    points = sorted([p for p in old.get("points", []) if p["minutes"] not in marks] + new["points"],
                    key=lambda p: p["minutes"])
    return {**new, "points": points, "commands": old.get("commands", []) + new["commands"],
            "invocations": old.get("invocations", []) + new["invocations"]}


def peer_rows(out: Path, files: dict, prefix: str, name: str = "snapshots.json") -> list[dict]:
    """A peer's ``snapshots.json`` (or a paused run's ``taken.json``), each point scored on the test frames."""
    points = json.loads((out / name).read_text())
    return [{**p, **(score(Path(p["predictions"]), files["test"], prefix) if p["snapshot"] else {})} for p in points]


def run_schnetpack(files: dict, out: Path, args) -> dict:
    """SchNetPack's SchNet of pbcgnn's size, one run in its own venv."""
    s, commands = sizes(args.pbcgnn_args), []
    out.mkdir(parents=True, exist_ok=True)
    call([args.schnetpack_python, str(HERE / "schnetpack_snapshots.py"), "--marks", *map(str, args.minutes),
          "--out", str(out.resolve()), "--test", str(files["test"].resolve()), "--cutoff", str(s["cutoff"]),
          "--train", str(files["train"].resolve()), "--val", str(files["val"].resolve()),
          "--features", str(s["features"]), "--interactions", str(s["interactions"]), "--rbf", str(s["rbf"]),
          "--batch-size", str(s["batch_size"]), "--device", "cpu"], commands, cwd=out)  # splitting.lock goes to CWD
    return {"commands": commands, "points": peer_rows(out, files, "SPK_")}


def run_mace(files: dict, out: Path, args) -> dict:
    """MACE (``MACE_ARGS``, ``--mace-args`` last), one run in its own venv; paused and resumed
    with ``--stop-after`` (a paused run's points: the marks it has passed); a finished run of the
    same marks is reused."""
    s, commands = sizes(args.pbcgnn_args), []
    done = out / "snapshots.json"
    if not (done.is_file() and sorted(p["minutes"] for p in json.loads(done.read_text())) == sorted(args.minutes)):
        done.unlink(missing_ok=True)
        options = [*(["--stop-after", f"{args.stop_after:g}"] if args.stop_after else []),
                   *(["--swa-at", f"{args.swa_at:g}"] if args.swa_at else [])]
        call([args.mace_python, str(HERE / "mace_snapshots.py"), "--train", str(files["train"]), "--val",
              str(files["val"]), "--test", str(files["test"]), "--out", str(out), "--minutes",
              *map(str, args.minutes), *options, "--", *MACE_ARGS, f"--r_max={s['cutoff']}",
              f"--batch_size={s['batch_size']}", *args.mace_args], commands)
    name = "snapshots.json" if done.is_file() else "taken.json"
    return {"commands": commands, "points": peer_rows(out, files, "MACE_", name) if (out / name).is_file() else []}


RUNNERS = {"pbcgnn": run_pbcgnn, "schnetpack": run_schnetpack, "mace": run_mace}


def missing_python(package: str, args) -> str | None:
    """Why ``package`` cannot run here (its venv's python not given or not found), or None."""
    python = {"schnetpack": args.schnetpack_python, "mace": args.mace_python}.get(package, sys.executable)
    if not python:
        return f"no --{package}-python given"
    return None if Path(python).expanduser().is_file() else f"{python} not found"


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, nargs="+", default=[5, 15, 45, 135], help="budget marks")
    p.add_argument("--packages", nargs="+", default=list(PACKAGES), choices=PACKAGES)
    p.add_argument("--schnetpack-python", default=str(Path("~/spk-venv/bin/python").expanduser()))
    p.add_argument("--mace-python", default=str(Path("~/mace-venv/bin/python").expanduser()))
    p.add_argument("--pbcgnn-args", type=shlex.split, default=[],
                   help="extra `pbcgnn train` options, one string; sizes SchNetPack and MACE too")
    p.add_argument("--mace-args", type=shlex.split, default=[], help="extra mace_run_train options, one string")
    p.add_argument("--stop-after", type=float, default=None,
                   help="pause each run after MINUTES of this invocation (pbcgnn, mace); run the same "
                        "command again to resume it; a paused MACE run reports the marks it has passed")
    p.add_argument("--swa-at", type=float, default=None,
                   help="with --mace-args --swa: start MACE's second stage at this fraction of the largest mark")
    p.add_argument("--seed", type=int, default=0, help="split seed (run.py's)")
    p.add_argument("--max-frames", type=int, default=None, help="use only N frames (smoke runs)")
    p.add_argument("--out", type=Path, default=Path("runs/time_to_accuracy"), help="splits, models, logs")
    p.add_argument("--results", type=Path, default=None, help="folder for the JSON and PNG [default: OUT]")
    p.add_argument("--label", default=None,
                   help="the row's name in the JSON and its run folder [default: the package], so one package "
                        "can have several recipes, e.g. pbcgnn_painn or mace_docs (one package per invocation)")
    args = p.parse_args(argv)
    if args.label and len(args.packages) != 1:
        p.error("--label names one package's row: give one --packages")
    args.results = args.results or args.out
    args.results.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    files = shared_splits(args.out, args.seed, args.max_frames)
    path = args.results / "time_to_accuracy.json"
    for package in args.packages:
        reason = missing_python(package, args)
        key = args.label or package
        row = {"skipped": reason} if reason else RUNNERS[package](files, args.out / key, args)
        if reason:
            log.warning("skipping %s: %s", package, reason)
        results = json.loads(path.read_text()) if path.is_file() else {"packages": {}}  # re-read: parallel runs
        row["invocations"] = [sys.argv[1:] if argv is None else list(argv)]
        results["packages"][key] = merged(results["packages"].get(key, {}), {**row, "package": package})
        results.update(split={part: len(ase.io.read(f, index=":")) for part, f in files.items()},
                       data=str(run.SETS["cheng"]), split_seed=args.seed, threads=1,
                       machine=platform.processor() or platform.machine(), torch=torch.__version__)
        path.write_text(json.dumps(results, indent=2))
    results = json.loads(path.read_text())
    plot(results, args.results / "time_to_accuracy.png")
    return results


def plot(results: dict, path: Path) -> None:
    """Test force and energy RMSE against minutes of training, log x, one line per package."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = {package: [p for p in row.get("points", []) if "force_rmse_mev_per_A" in p]
            for package, row in results["packages"].items()}
    if not any(rows.values()):  # every run paused or skipped so far: nothing to draw
        return
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6), layout="constrained")
    for (package, points), style in zip(rows.items(), ("o-", "s--", "^-.", "D-", "v:", "x--")):
        if not points:  # a run paused before its first mark was scored: no legend entry
            continue
        for ax, key in zip(axes, ("force_rmse_mev_per_A", "energy_rmse_mev_per_atom")):
            ax.plot([p["minutes"] for p in points], [p[key] for p in points], style,
                    label=LABELS.get(package, package))
    marks = sorted({p["minutes"] for row in results["packages"].values() for p in row.get("points", [])})
    for ax, label in zip(axes, ("test force RMSE (meV/Å)", "test energy RMSE (meV/atom)")):
        ax.set(xscale="log", yscale="log", xlabel="training minutes (1 CPU thread)", ylabel=label)
        ax.set_xticks(marks, [f"{m:g}" for m in marks])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    # below both panels: inside either one it hides the curves
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=3)
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    main()
