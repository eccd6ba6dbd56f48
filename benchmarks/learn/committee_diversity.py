"""Committee diversity: which construction of a committee ranks its errors best, at equal CPU cost.

Usage (from the repository root; ``--help`` lists every option):

    python benchmarks/learn/committee_diversity.py --out runs/committee_diversity          # the full run
    python benchmarks/learn/committee_diversity.py --quick --out /tmp/diversity_smoke      # seconds to minutes

Constructions of ``--members`` members, each member with the same budget (``--minutes``, with
``--epochs`` as an upper bound), on the Cheng split of ``benchmarks/accuracy/run.py``:

* ``init``: independent initialisations (member seeds), all training frames;
* ``bootstrap``: the same, each member on its own bootstrap resample;
* ``sizes``: members of different widths (``--sizes``, features = filters);
* ``cutoffs``: members of different cutoffs (``--cutoffs``).

Fine-tuned committees, in the transfer setting of ``benchmarks/transfer`` (pretrained on Cheng,
fine-tuned on 16 ``deepmd_water`` frames, bootstrap resamples, scored on its 64 test frames):

* ``finetune_shared``: every member from one pretrained model (as ``benchmarks/transfer``);
* ``finetune_readout``: the same, each member's readout re-drawn from its own seed;
* ``finetune_pretrained``: members from independently pretrained models, each pretrained for
  1/M of the shared pretraining's minutes (equal CPU cost; ``--independent-pretrain-minutes``).

``init`` and ``bootstrap`` and the fine-tuned ones are ``pbcgnn train --committee`` runs, scored
with their checkpoint's calibration. Members of different sizes or cutoffs cannot share one
checkpoint, so they are trained one by one and combined here as :class:`pbcgnn.model.Committee`
combines them (mean, sample std), with the calibration fitted on the same validation frames by
:func:`pbcgnn.evaluation.calibration.fit_calibration`. Per construction ``OUT/CONSTRUCTION/result.json``
(skipped when present: the run spans invocations), then ``OUT/results.json`` and ``OUT/committee_diversity.png``.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import logging
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from pbcgnn.checkpoint import build_model, combine_checkpoints, load_checkpoint, read_checkpoint, save_checkpoint
from pbcgnn.config import GROUPS, CommitteeConfig, Config, DataConfig, ModelConfig, TrainConfig, TransferConfig
from pbcgnn.dataset import FrameDataset
from pbcgnn.device import resolve_device
from pbcgnn.evaluation import Predictions, predict, prediction_metrics
from pbcgnn.evaluation.calibration import fit_calibration, recalibrate
from pbcgnn.model.calibration import Calibration
from pbcgnn.train.run import fit

log = logging.getLogger("benchmarks.learn.diversity")
HERE = Path(__file__).resolve().parent
DATA = HERE.parents[1].parent / "shared" / "data"
CHENG = ("init", "bootstrap", "sizes", "cutoffs")
FINETUNED = ("finetune_shared", "finetune_readout", "finetune_pretrained")
TARGETS = {"spearman_forces": 0.6, "coverage_1sigma_forces": (0.60, 0.76)}  # on the Cheng test split
QUICK = dict(max_frames=30, members=2, epochs=1, minutes=None, sizes=[8, 12], cutoffs=[3.5, 4.0],
             model={"hidden_channels": 8, "num_filters": 8, "num_interactions": 1, "num_rbf": 8, "cutoff": 4.0})


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


accuracy = _load("accuracy_run", HERE.parent / "accuracy" / "run.py")
transfer = _load("transfer_run", HERE.parent / "transfer" / "run.py")


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("runs/committee_diversity"))
    p.add_argument("--data-dir", type=Path, default=DATA, help="folder holding the shared data sets")
    p.add_argument("--constructions", nargs="+", default=list(CHENG + FINETUNED), choices=CHENG + FINETUNED)
    p.add_argument("--members", type=int, default=4)
    p.add_argument("--minutes", type=float, default=20.0, help="wall-clock minutes per member (the equal cost)")
    p.add_argument("--epochs", type=int, default=10_000, help="epochs per member, an upper bound")
    p.add_argument("--model", type=json.loads, default={}, help="ModelConfig overrides as JSON (Cheng members)")
    p.add_argument("--sizes", type=int, nargs="+", default=[32, 48, 64, 96], help="widths of the sizes members")
    p.add_argument("--cutoffs", type=float, nargs="+", default=[4.5, 5.0, 5.5, 6.0], help="cutoffs members (A)")
    p.add_argument("--split-seed", type=int, default=0, help="seed of benchmarks/accuracy's split")
    p.add_argument("--max-frames", type=int, default=None, help="split only N Cheng frames (smoke runs)")
    p.add_argument("--independent-pretrain-minutes", type=float, default=None,
                   help="pretraining minutes of each finetune_pretrained member (default: the shared one's / M)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--quick", action="store_true", help="tiny models and few frames: a smoke run")
    args = p.parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    # the transfer setting: benchmarks/transfer's options and defaults (its --quick ones with ours)
    t = transfer.parse(["--quick"] if args.quick else [])
    args.transfer = argparse.Namespace(**{**vars(t), "out": args.out / "transfer", "data_dir": args.data_dir,
                                          "seed": args.seed, "device": args.device, "k": [16 if not args.quick else 4],
                                          "committee": args.members, "ice_k": 0})
    args.transfer.committee_k = args.transfer.k[0]
    if args.quick:  # enough validation frames to fit a calibration (pbcgnn.evaluation.calibration.MIN_FRAMES)
        args.transfer.val_frames = 4
    return args


def cheng_parts(args: argparse.Namespace) -> dict[str, Path]:
    """The Cheng split's parts as extended XYZ (written once)."""
    folder = args.out / "splits" / "cheng"
    if not (folder / "indices.json").is_file():
        accuracy.write_splits("cheng", args.data_dir / "cheng2019_h2o_revpbe0_d3" / "cheng2019_h2o_revpbe0_d3.xyz",
                              args.out, args.split_seed, args.max_frames)
    return {name: folder / f"{name}.xyz" for name in ("train", "val", "test")}


def member_models(args: argparse.Namespace, construction: str) -> list[ModelConfig]:
    """Each member's architecture: the base model, or its width or cutoff varied."""
    base = ModelConfig(**args.model)
    if construction == "sizes":
        return [dataclasses.replace(base, hidden_channels=w, num_filters=w) for w in
                (args.sizes[k % len(args.sizes)] for k in range(args.members))]
    if construction == "cutoffs":
        return [dataclasses.replace(base, cutoff=c) for c in (args.cutoffs[k % len(args.cutoffs)]
                                                              for k in range(args.members))]
    return [base] * args.members


def budget(args: argparse.Namespace, seed: int) -> TrainConfig:
    """The same budget for every member: ``--minutes``, ``--epochs`` at most."""
    return TrainConfig(epochs=args.epochs, max_minutes=args.minutes, seed=seed, device=args.device)


def cost_minutes(run: Path) -> float:
    """Training minutes of a single run or of every member of a committee in ``run`` (resumed parts included)."""
    lasts = sorted(run.glob("member_*/last.pt")) or [run / "last.pt"]
    return sum(read_checkpoint(p)["train_state"]["loop"]["elapsed_s"] for p in lasts) / 60


def combine(preds: list[Predictions]) -> Predictions:
    """Members' predictions as one committee's, as :func:`pbcgnn.model.committee_properties` combines
    them (mean; sample std over members of the total energy and of each force component), raw spreads."""
    energies = np.stack([p.energy for p in preds])  # [M, F] eV
    forces = np.stack([p.forces for p in preds])  # [M, N, 3] eV/A
    e_std, f_std = energies.std(0, ddof=1), forces.std(0, ddof=1)
    return dataclasses.replace(preds[0], energy=energies.mean(0), forces=forces.mean(0), energy_std=e_std,
                               forces_std=f_std, energy_std_raw=e_std, forces_std_raw=f_std)


def committee_scores(best: Path, test: Path, device: torch.device) -> tuple[Predictions, Calibration]:
    """A committee checkpoint's calibrated predictions on ``test``."""
    model, _ = load_checkpoint(best, device=device)
    return predict(model, FrameDataset(test, model.cutoff), device=device), model.calibration


def train_committee(config: Config, out: Path) -> Path:
    """``pbcgnn train --committee``: kept when finished, resumed when interrupted."""
    if (out / "best.pt").is_file():
        return out / "best.pt"
    return Path(fit(config, out, resume=(out / "last.pt").is_file(), progress=False).best)


def train_members(args, models: list[ModelConfig], parts: dict[str, Path], out: Path,
                  device: torch.device) -> tuple[Predictions, Calibration]:
    """Members of different architectures, one run each, combined and calibrated on the validation part."""
    val, test = [], []
    for k, model in enumerate(models):
        run = out / f"member_{k}"
        config = Config(data=DataConfig(paths=(str(parts["train"]),), val_paths=(str(parts["val"]),)),
                        model=model, train=budget(args, args.seed + k))
        if not (run / "done").is_file():  # a marker: resuming a finished run would log, not skip
            fit(config, run, resume=(run / "last.pt").is_file(), progress=False)
            (run / "done").touch()
        net, _ = load_checkpoint(run / "best.pt", device=device)
        val.append(predict(net, FrameDataset(parts["val"], model.cutoff), device=device))
        test.append(predict(net, FrameDataset(parts["test"], model.cutoff), device=device))
    calibration = fit_calibration(combine(val), fitted_on="the validation part (combined members)")
    return recalibrate(combine(test), calibration), calibration


def pretrain(args, paths: dict[str, Path], out: Path, seed: int, minutes: float) -> Path:
    """A Cheng model as ``benchmarks/transfer`` pretrains it (its frames, model and options)."""
    t = args.transfer
    if not (out / "done").is_file():
        config = Config(data=DataConfig(paths=(str(paths["pretrain_train"]),), val_paths=(str(paths["pretrain_val"]),)),
                        model=ModelConfig(**t.model),
                        train=TrainConfig(epochs=t.pretrain_epochs, max_minutes=minutes, batch_size=t.batch_size,
                                          patience=10**6, seed=seed, device=args.device))
        fit(config, out, resume=(out / "last.pt").is_file(), progress=False)
        (out / "done").touch()
    return out / "best.pt"


def readout_redrawn(pretrained: Path, seed: int) -> dict:
    """The pretrained checkpoint with its readout (:data:`pbcgnn.config.GROUPS`) re-initialised as a new
    model of the same config would be, from ``seed``."""
    ckpt = {k: v for k, v in read_checkpoint(pretrained).items() if k != "train_state"}
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        fresh = build_model(Config.from_dict(ckpt["config"])).state_dict()
    prefixes = tuple(f"{name}." for name in GROUPS["readout"])
    ckpt["model"] = {k: (fresh[k] if k.startswith(prefixes) else v) for k, v in ckpt["model"].items()}
    return ckpt


def starting_committee(args, construction: str, paths: dict[str, Path], shared: Path, out: Path) -> Path:
    """The checkpoint the fine-tuned members start from: the shared pretrained model, or a committee
    checkpoint whose member k is member k's start (fine-tuning takes member k from member k)."""
    if construction == "finetune_shared":
        return shared
    if (out / "start.pt").is_file():
        return out / "start.pt"
    n = args.members
    if construction == "finetune_readout":
        starts, dirs = [readout_redrawn(shared, args.seed + k) for k in range(n)], [shared.parent] * n
    else:
        minutes = args.independent_pretrain_minutes or args.transfer.pretrain_minutes / n
        dirs = [out / f"pretrain_{k}" for k in range(n)]
        starts = [read_checkpoint(pretrain(args, paths, d, args.seed + 1 + k, minutes)) for k, d in enumerate(dirs)]
    config = Config.from_dict(starts[0]["config"]).replace(committee={"size": n})
    save_checkpoint(out / "start.pt", combine_checkpoints(config, starts, dirs))
    return out / "start.pt"


def finetuned(args, construction: str, paths: dict[str, Path], shared: Path, out: Path,
              device: torch.device) -> tuple[Predictions, Calibration, float]:
    """A committee fine-tuned on the transfer setting's k frames (bootstrap resamples, its budget and
    learning rate); its predictions on the transfer test part and the minutes of pretraining it used."""
    t = args.transfer
    start = starting_committee(args, construction, paths, shared, out)
    config = transfer.run_config(t, paths[f"target_k{t.k[0]}"], paths["target_val"], t.k[0], t.lr_finetune,
                                 transfer=TransferConfig(init_from=str(start)),
                                 committee=CommitteeConfig(size=args.members, bootstrap=True))
    best = train_committee(config, out / "committee")
    pretrain_dirs = sorted(out.glob("pretrain_*")) if construction == "finetune_pretrained" else [shared.parent]
    pred, calibration = committee_scores(best, paths["target_test"], device)
    return pred, calibration, sum(cost_minutes(d) for d in pretrain_dirs)


def on_cheng(args, construction: str, parts: dict[str, Path], out: Path,
             device: torch.device) -> tuple[Predictions, Calibration]:
    """A committee trained on the Cheng training part, its calibrated predictions on the test part."""
    if construction in ("sizes", "cutoffs"):
        return train_members(args, member_models(args, construction), parts, out, device)
    config = Config(data=DataConfig(paths=(str(parts["train"]),), val_paths=(str(parts["val"]),)),
                    model=ModelConfig(**args.model), train=budget(args, args.seed),
                    committee=CommitteeConfig(size=args.members, bootstrap=construction == "bootstrap"))
    return committee_scores(train_committee(config, out), parts["test"], device)


def measure(args, construction: str, device: torch.device, state: dict) -> dict:
    """One construction's result (read back when it is on disk)."""
    out = args.out / construction
    path = out / "result.json"
    if path.is_file():
        return json.loads(path.read_text())
    t0, pretrain_minutes = time.monotonic(), 0.0
    if construction in CHENG:
        pred, calibration = on_cheng(args, construction, state.setdefault("cheng", cheng_parts(args)), out, device)
        test_set = "cheng test part"
    else:
        if "transfer" not in state:
            state["transfer"] = transfer.prepare(args.transfer)
            state["pretrained"] = pretrain(args, state["transfer"], args.out / "transfer" / "pretrain", args.seed,
                                           args.transfer.pretrain_minutes)
        pred, calibration, pretrain_minutes = finetuned(args, construction, state["transfer"], state["pretrained"],
                                                        out, device)
        test_set = "deepmd_water test part (benchmarks/transfer)"
    from pbcgnn.evaluation.plots import calibration_plot

    calibration_plot(pred, out / "test_calibration.png")
    train_minutes = cost_minutes(out if construction in CHENG else out / "committee")
    result = {"construction": construction, "members": args.members, "test_set": test_set,
              "train_minutes": train_minutes, "pretrain_minutes": pretrain_minutes,
              "cpu_minutes": train_minutes + pretrain_minutes, "wall_minutes": (time.monotonic() - t0) / 60,
              "calibration": calibration.to_dict(), "test": prediction_metrics(pred, calibration)}
    path.write_text(json.dumps(result, indent=1))
    return result


HEADLINE = ("spearman_forces", "coverage_1sigma_forces", "coverage_2sigma_forces", "nll_forces",
            "miscalibration_area_forces", "force_rmse_mev_per_A", "spearman_energy", "coverage_1sigma_energy",
            "energy_rmse_mev_per_atom")


def plot(results: dict[str, dict], path: Path) -> None:
    """Force Spearman and 1-sigma coverage per construction, with the targets."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    names = list(results)
    fig = Figure(figsize=(max(6.0, 1.4 * len(names)), 6.4), layout="constrained")
    ax_s, ax_c = fig.subplots(2, 1, sharex=True)
    x = np.arange(len(names))
    # the two test sets are not comparable: colour by which one a construction is scored on
    colors = ["C0" if n in CHENG else "C1" for n in names]
    spearman = ax_s.bar(x, [results[n]["test"]["spearman_forces"] for n in names], color=colors)
    ax_s.bar_label(spearman, fmt="%.2f", fontsize=8)
    ax_s.axhline(TARGETS["spearman_forces"], color="0.4", ls="--", lw=1)
    ax_s.set_ylabel("force Spearman\n(frame error vs spread)")
    ax_s.legend(handles=[Patch(color="C0", label="Cheng test part"), Patch(color="C1", label="deepmd_water test part")],
                loc="upper right", fontsize=8)
    coverage = ax_c.bar(x, [100 * results[n]["test"]["coverage_1sigma_forces"] for n in names], color=colors,
                        zorder=2)
    ax_c.bar_label(coverage, fmt="%.1f", fontsize=8)
    for bound in TARGETS["coverage_1sigma_forces"]:  # the target band's edges, drawn over the bars
        ax_c.axhline(100 * bound, color="0.4", ls="--", lw=1, zorder=3)
    ax_c.axhline(68.3, color="0.4", ls=":", lw=1, zorder=3)  # a Gaussian's 1-sigma coverage
    ax_s.set_ylim(min(0.0, ax_s.get_ylim()[0]), 1.0)
    ax_c.set_ylim(0.0, 85.0)
    ax_c.set_ylabel("1-sigma coverage,\nforce components (%)")
    ax_c.set_xticks(x, [f"{n}\n{results[n]['cpu_minutes']:.0f} CPU-min" for n in names], fontsize=8)
    fig.suptitle("Committee constructions at equal cost (targets dashed; fine-tuned ones on another test set)")
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(args.device)
    state: dict = {}
    results = {c: measure(args, c, device, state) for c in args.constructions}
    table = {c: {k: r["test"].get(k) for k in HEADLINE} | {"cpu_minutes": r["cpu_minutes"]} for c, r in results.items()}
    report = {"argv": sys.argv[1:] if argv is None else list(argv),
              "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "transfer"},
              "transfer_options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args.transfer).items()},
              "targets": TARGETS, "device": str(device), "machine": platform.processor() or platform.machine(),
              "torch_threads": torch.get_num_threads(), "table": table, "results": results}
    (args.out / "results.json").write_text(json.dumps(report, indent=1))
    plot(results, args.out / "committee_diversity.png")
    print(json.dumps(table, indent=1))
    return report


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    main()
