"""Labels to accuracy: pool-based active learning on the Cheng revPBE0-D3 split, committee against random picks.

Usage (from the repository root; ``--help`` lists every option):

    python benchmarks/learn/labels_to_accuracy.py --out runs/labels_to_accuracy            # the full run
    python benchmarks/learn/labels_to_accuracy.py --quick --out /tmp/labels_smoke          # seconds to minutes

The split is ``benchmarks/accuracy/run.py``'s (seed ``--split-seed``: test, validation and training
parts, 10/10/80). Per seed, ``--start`` training frames are drawn as the first labels; the other
training frames form the pool, written without their labels (a label is read only for a frame once
it is picked). Each round trains a committee of ``--members`` on every label so far (``--retrain
continue``: :func:`pbcgnn.learn.retrain.retrain`, the retraining of ``pbcgnn learn``; ``scratch``:
a new committee), scores it on the test part and picks ``--step`` frames from the pool:

* ``committee``: the largest calibrated spread (``--by``) by :func:`pbcgnn.select.select_frames`;
* ``random``: a seeded uniform draw.

Round 0 is the same for both strategies and trained once. Every (strategy, seed, round) writes
``OUT/results/STRATEGY_seedS_roundRR.json``; an existing one is skipped, and an interrupted
committee is resumed, so the run spans invocations. ``OUT/summary.json`` and
``OUT/labels_to_accuracy.png`` gather them. Timings live here, never in tests.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from ase import Atoms

from pbcgnn.checkpoint import load_checkpoint, read_checkpoint
from pbcgnn.config import CommitteeConfig, Config, DataConfig, ModelConfig, TrainConfig
from pbcgnn.dataset import FrameDataset
from pbcgnn.device import resolve_device
from pbcgnn.evaluation import predict, prediction_metrics
from pbcgnn.io import read_frames, write_frames
from pbcgnn.learn.config import LearnConfig
from pbcgnn.learn.retrain import retrain
from pbcgnn.select import select_frames
from pbcgnn.train.run import fit

log = logging.getLogger("benchmarks.learn.labels")
HERE = Path(__file__).resolve().parent
CHENG = HERE.parents[1].parent / "shared" / "data" / "cheng2019_h2o_revpbe0_d3" / "cheng2019_h2o_revpbe0_d3.xyz"
STRATEGIES = ("committee", "random")
GOAL_FRACTION = 0.6  # committee picks reach random's error at the largest label count with <= 60 % of the labels
QUICK = dict(max_frames=40, start=4, step=4, max_labels=12, members=2, epochs=1, first_epochs=2, minutes=None,
             seeds=[0], val_frames=3,
             model={"hidden_channels": 8, "num_filters": 8, "num_interactions": 1, "num_rbf": 8, "cutoff": 4.0})

_spec = importlib.util.spec_from_file_location("accuracy_run", HERE.parent / "accuracy" / "run.py")
accuracy = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(accuracy)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("runs/labels_to_accuracy"))
    p.add_argument("--data", type=Path, default=CHENG, help="the Cheng et al. extended XYZ file")
    p.add_argument("--split-seed", type=int, default=0, help="seed of benchmarks/accuracy's split")
    p.add_argument("--max-frames", type=int, default=None, help="split only N frames (smoke runs)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="first labels, random picks, members")
    p.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    p.add_argument("--start", type=int, default=32, help="labelled training frames at round 0")
    p.add_argument("--step", type=int, default=32, help="frames picked per round")
    p.add_argument("--max-labels", type=int, default=256, help="the last round's labels")
    p.add_argument("--val-frames", type=int, default=None,
                   help="validate on the first N validation frames only (the split is shuffled; default: all)")
    p.add_argument("--members", type=int, default=4, help="committee size")
    p.add_argument("--epochs", type=int, default=30, help="epochs per member per round (an upper bound)")
    p.add_argument("--first-epochs", type=int, default=None,
                   help="epochs of round 0's committee, trained from scratch (default: --epochs)")
    p.add_argument("--minutes", type=float, default=None, help="wall-clock minutes per member per round")
    p.add_argument("--retrain", choices=("continue", "scratch"), default="continue",
                   help="continue from the previous round's members (as pbcgnn learn) or start each round anew")
    p.add_argument("--by", choices=("max_force", "forces"), default="max_force",
                   help="the calibrated spread the committee strategy ranks by (pbcgnn learn's default)")
    p.add_argument("--model", type=json.loads, default={}, help="ModelConfig overrides as JSON")
    p.add_argument("--train", type=json.loads, default={}, help="TrainConfig overrides as JSON")
    p.add_argument("--save-state", type=Path, default=None, metavar="DIR",
                   help="copy what resumes this --out elsewhere into DIR (results, picks, the committee each "
                        "chain goes on from) and exit; stop the run first")
    p.add_argument("--device", default="auto")
    p.add_argument("--quick", action="store_true", help="tiny model, few frames and rounds: a smoke run")
    args = p.parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    return args


def rounds(args: argparse.Namespace) -> list[int]:
    """Label counts of the rounds: ``start``, ``start + step``, ..., at most ``max_labels``."""
    return list(range(args.start, args.max_labels + 1, args.step))


def split(args: argparse.Namespace) -> dict[str, Path]:
    """The Cheng split's parts as extended XYZ (written once; a resumed run reuses them)."""
    folder = args.out / "splits" / "cheng"
    parts = {name: folder / f"{name}.xyz" for name in ("train", "val", "test")}
    if not (folder / "indices.json").is_file():
        accuracy.write_splits("cheng", args.data, args.out, args.split_seed, args.max_frames)
    if args.val_frames is not None:  # validation runs every epoch of every member: the subset sets its cost
        subset = folder / f"val_first{args.val_frames}.xyz"
        if not subset.is_file():  # written aside and renamed: processes sharing --out never read half of it
            tmp = subset.with_name(f".{subset.stem}.{os.getpid()}.xyz")
            write_frames(tmp, read_frames(parts["val"])[:args.val_frames], format="extxyz")
            tmp.replace(subset)
        parts["val"] = subset
    return parts


def structure(atoms: Atoms) -> Atoms:
    """The frame without its labels: what the pool shows before a frame is picked."""
    return Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)


def first_labels(n_train: int, start: int, seed: int) -> list[int]:
    """The seeded round-0 labels (indices into the training part), the same for every strategy."""
    return sorted(np.random.default_rng(seed).choice(n_train, start, replace=False).tolist())


def round_dir(args: argparse.Namespace, strategy: str, seed: int, r: int) -> Path:
    """Round 0 is shared by the strategies; later rounds are each strategy's own."""
    return args.out / f"seed{seed}" / ("round_00" if r == 0 else f"{strategy}/round_{r:02d}")


def result_path(args: argparse.Namespace, strategy: str, seed: int, r: int) -> Path:
    return args.out / "results" / f"{strategy}_seed{seed}_round{r:02d}.json"


def train_committee(args, labels: list[Path], val: Path, previous: Path | None, out: Path, seed: int) -> Path:
    """The round's committee ``out/best.pt``: kept when finished, resumed when interrupted."""
    if (out / "best.pt").is_file():
        return out / "best.pt"
    if previous is not None and args.retrain == "continue":  # pbcgnn learn's retraining, budget per member
        base = DataConfig(paths=(str(labels[0].resolve()),), val_paths=(str(val.resolve()),))
        budget = LearnConfig(epochs=args.epochs, max_minutes=args.minutes)
        return Path(retrain(previous, base, [p.resolve() for p in labels[1:]], budget, out, device=args.device).best)
    # from scratch: round 0 for --first-epochs (default --epochs), later rounds of --retrain scratch for --epochs
    epochs = args.first_epochs if previous is None and args.first_epochs else args.epochs
    config = Config(data=DataConfig(paths=tuple(str(p.resolve()) for p in labels), val_paths=(str(val.resolve()),)),
                    model=ModelConfig(**args.model),
                    # members train with seeds 1000 s + k: no two seeds of the benchmark share a member seed
                    train=TrainConfig(**{**args.train, "epochs": epochs, "max_minutes": args.minutes,
                                         "seed": 1000 * seed, "device": args.device}),
                    committee=CommitteeConfig(size=args.members))
    return Path(fit(config, out, resume=(out / "last.pt").is_file(), progress=False).best)


def training_cost(committee: Path, members: int) -> dict[str, float]:
    """CPU cost of a committee from its members' ``last.pt`` (resumed parts included)."""
    loops = [read_checkpoint(committee / f"member_{k}" / "last.pt")["train_state"]["loop"] for k in range(members)]
    epochs = sum(loop["epoch"] for loop in loops)
    seconds = sum(loop["elapsed_s"] for loop in loops)
    return {"train_minutes": seconds / 60, "member_epochs": epochs, "seconds_per_epoch": seconds / max(epochs, 1)}


def score(best: Path, test: FrameDataset, device: torch.device) -> dict[str, float]:
    """Errors of the committee mean (meV/atom, meV/A) and its calibrated spread's scores on the test part."""
    model, _ = load_checkpoint(best, device=device)
    return prediction_metrics(predict(model, test, device=device), model.calibration)


def pick(args, strategy: str, seed: int, r: int, best: Path, train: list[Atoms], labelled: list[int],
         folder: Path) -> list[int]:
    """The next ``--step`` training indices from the pool (written to ``folder/picks.json`` once)."""
    path = folder / f"picks_{strategy}.json"
    if path.is_file():
        return json.loads(path.read_text())["picks"]
    taken = set(labelled)
    pool = [k for k in range(len(train)) if k not in taken]
    n = min(args.step, len(pool))
    record: dict = {"strategy": strategy, "pool": len(pool)}
    if strategy == "random":
        chosen = np.random.default_rng([seed, r]).choice(len(pool), n, replace=False).tolist()
    else:
        pool_file = folder / "pool.xyz"
        write_frames(pool_file, [structure(train[k]) for k in pool], format="extxyz")
        rows = select_frames(best, pool_file, n, folder / "selected.xyz", by=args.by,
                             device=str(resolve_device(args.device)))
        pool_file.unlink()  # large, and rewritten from the labels each round
        chosen = [row["pool_index"] for row in rows]
        record["spread_eV_per_A"] = [row[args.by] for row in rows]
    record["picks"] = [pool[k] for k in chosen]
    path.write_text(json.dumps(record))
    return record["picks"]


def run_chain(args, strategy: str, seed: int, parts: dict[str, Path], train: list[Atoms], test: FrameDataset,
              device: torch.device) -> list[dict]:
    """Every round of one (strategy, seed); finished rounds are read back, not rerun."""
    new = first_labels(len(train), args.start, seed)
    labelled, files, previous, results = [], [], None, []
    for r in range(len(rounds(args))):
        labelled = labelled + new
        folder = round_dir(args, strategy, seed, r)
        folder.mkdir(parents=True, exist_ok=True)
        files.append(folder / "labelled.xyz")
        if not files[-1].is_file():  # the labels revealed this round
            write_frames(files[-1], [train[k] for k in new], format="extxyz")
        best = folder / "committee" / "best.pt"
        out = result_path(args, strategy, seed, r)
        if out.is_file():
            result = json.loads(out.read_text())
            if result["labels"] != sorted(labelled):  # e.g. another --start or --step in the same --out
                raise SystemExit(f"{out}: its labels differ from this invocation's; use another --out")
        else:
            t0 = time.monotonic()
            best = train_committee(args, files, parts["val"], previous, folder / "committee", seed)
            result = {"strategy": strategy, "seed": seed, "round": r, "n_labels": len(labelled),
                      "labels": sorted(labelled), "retrain": args.retrain, "by": args.by,
                      **training_cost(folder / "committee", args.members),
                      "test": score(best, test, device), "wall_minutes": (time.monotonic() - t0) / 60}
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(result, indent=1))
            log.info("%s seed %d: %d labels, test force RMSE %.1f meV/A", strategy, seed, len(labelled),
                     result["test"]["force_rmse_mev_per_A"])
        results.append(result)
        previous = best
        if r + 1 < len(rounds(args)):
            new = pick(args, strategy, seed, r, best, train, labelled, folder)
    return results


def summarise(results: list[dict], max_labels: int) -> dict:
    """Per strategy and label count, the mean and std over seeds of the test errors; and the goal:
    the fewest labels at which committee picks reach random's force error at ``max_labels``."""
    table: dict[str, dict[int, dict]] = {}
    for s in STRATEGIES:
        rows = [r for r in results if r["strategy"] == s]
        for n in sorted({r["n_labels"] for r in rows}):
            f = [r["test"]["force_rmse_mev_per_A"] for r in rows if r["n_labels"] == n]
            e = [r["test"]["energy_rmse_mev_per_atom"] for r in rows if r["n_labels"] == n]
            table.setdefault(s, {})[n] = {"seeds": len(f), "force_rmse_mean": float(np.mean(f)),
                                          "force_rmse_std": float(np.std(f)), "energy_rmse_mean": float(np.mean(e)),
                                          "energy_rmse_std": float(np.std(e))}
    goal: dict = {"fraction_target": GOAL_FRACTION, "max_labels": max_labels}
    if max_labels in table.get("random", {}) and "committee" in table:
        target = table["random"][max_labels]["force_rmse_mean"]
        reached = [n for n, row in sorted(table["committee"].items()) if row["force_rmse_mean"] <= target]
        goal.update(random_force_rmse=target, committee_labels=reached[0] if reached else None)
        goal["fraction"] = reached[0] / max_labels if reached else None
        goal["met"] = bool(reached) and reached[0] / max_labels <= GOAL_FRACTION
    return {"table": table, "goal": goal}


def plot(summary: dict, path: Path) -> None:
    """Test force and energy RMSE against labels: mean over seeds, shaded +- one std."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10.4, 4.2), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, key, unit in zip(axes, ("force", "energy"), ("meV/A", "meV/atom")):
        for strategy, rows in summary["table"].items():
            n = np.array(sorted(rows))
            mean = np.array([rows[k][f"{key}_rmse_mean"] for k in n])
            std = np.array([rows[k][f"{key}_rmse_std"] for k in n])
            line, = ax.plot(n, mean, marker="o", label=f"{strategy} picks")
            ax.fill_between(n, mean - std, mean + std, color=line.get_color(), alpha=0.2)
        ax.set_xlabel("labelled training frames")
        ax.set_ylabel(f"test {key} RMSE ({unit})")
        ax.legend()
    goal = summary["goal"]
    if goal.get("random_force_rmse") is not None:
        axes[0].axhline(goal["random_force_rmse"], color="0.5", ls="--", lw=1)
        axes[0].axvline(GOAL_FRACTION * goal["max_labels"], color="0.5", ls=":", lw=1)
    fig.suptitle("Cheng revPBE0-D3 water: committee against random picks (mean +- std over seeds)")
    fig.savefig(path, dpi=120)


def save_state(out: Path, dest: Path) -> list[Path]:
    """Copy into ``dest`` what resumes the run in ``out`` on another machine: every result and pick
    (JSON) and, per chain, the committee it goes on from: the last round's ``committee/best.pt`` if
    that round is scored, else the round's checkpoints (members resume from their ``last.pt``) and
    the previous round's ``committee/best.pt``. Splits and labels are written again from the data."""
    keep = [p for p in out.rglob("*.json") if p.parts[len(out.parts)] != "splits" and p.name != "summary.json"]
    for seed in out.glob("seed*"):
        for strategy in STRATEGIES:
            chain = [r for r in [seed / "round_00", *sorted((seed / strategy).glob("round_*"))] if r.is_dir()]
            if not chain:
                continue
            scored = out / "results" / f"{strategy}_{seed.name}_round{int(chain[-1].name[6:]):02d}.json"
            if scored.is_file():  # trained and scored: the next round continues from its best.pt
                keep.append(chain[-1] / "committee" / "best.pt")
            else:  # in training, or trained and not scored yet (the score reads the members' last.pt)
                keep += sorted((chain[-1] / "committee").rglob("*.pt"))
                keep += [r / "committee" / "best.pt" for r in chain[-2:-1]]
    for path in dict.fromkeys(keep):
        target = dest / path.relative_to(out)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    return list(dict.fromkeys(keep))


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    if args.save_state is not None:
        saved = save_state(args.out, args.save_state)
        print(f"{len(saved)} files of {args.out} copied into {args.save_state}")
        return {"saved": [str(p) for p in saved]}
    args.out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(args.device)
    parts = split(args)
    train = read_frames(parts["train"])
    if args.max_labels > len(train) or args.start < 1 or args.step < 1:
        raise SystemExit(f"expected 1 <= --start <= --max-labels <= {len(train)} training frames and --step >= 1")
    test = FrameDataset(parts["test"], (ModelConfig(**args.model)).cutoff)
    results = [row for seed in args.seeds for strategy in args.strategies
               for row in run_chain(args, strategy, seed, parts, train, test, device)]
    # every result on disk, not only this invocation's: processes of other seeds may share --out
    summary = summarise([json.loads(p.read_text()) for p in sorted((args.out / "results").glob("*.json"))],
                        rounds(args)[-1])
    report = {"argv": sys.argv[1:] if argv is None else list(argv), "options": {
        k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "device": str(device), "machine": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(), "rounds": rounds(args), **summary}
    (args.out / "summary.json").write_text(json.dumps(report, indent=1))
    plot(summary, args.out / "labels_to_accuracy.png")
    print(json.dumps(summary["goal"]))
    return {**report, "results": results}


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    main()
