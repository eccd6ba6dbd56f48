"""Train, score and ship the pretrained Cheng revPBE0-D3 water model (``data/pretrained``).

Usage (from the repository root):

    python benchmarks/accuracy/pretrained.py --minutes 100 --out runs/pretrained -- --energy-weight 1000

Everything after ``--`` is passed to ``pbcgnn train``. The script

1. splits the shared Cheng frames 80/10/10 exactly as ``run.py`` does (seed 0),
2. runs ``pbcgnn train`` on the training part with the validation part for early stopping
   (the command is recorded with every option the checkpoint stored),
3. scores the best checkpoint with ``pbcgnn eval`` on the test part, and on its first
   ``--regression-frames`` frames (which the regression test re-evaluates), and
4. with ``--ship``, copies the checkpoint to ``data/pretrained/`` with its record (``<model>.json``) and
   model card (``<model>.md``), and rewrites the folder's index, ``README.md``, from every record there.

With ``--resume`` it continues ``OUT/model/last.pt`` until ``--minutes`` of training in all.
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
from pathlib import Path

import ase.io
import torch

ROOT = Path(__file__).resolve().parents[2]
SHIP = ROOT / "data" / "pretrained"
NAME = "cheng2019_revpbe0_d3_{architecture}.pt"  # one file per architecture
SOURCE = "../shared/data/cheng2019_h2o_revpbe0_d3/cheng2019_h2o_revpbe0_d3.xyz"

_spec = importlib.util.spec_from_file_location("accuracy_run", Path(__file__).with_name("run.py"))
run = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(run)


# The `pbcgnn train` option of every stored setting that decides the result. The recorded command
# spells all of them out, read back from the checkpoint, so it stays exact when defaults change.
OPTIONS = {"model": {"architecture": "--model", "cutoff": "--cutoff", "hidden_channels": "--features", "num_filters": "--filters",
                     "num_interactions": "--interactions", "num_rbf": "--rbf", "dtype": "--dtype"},
           "train": {"epochs": "--epochs", "max_minutes": "--max-minutes", "batch_size": "--batch-size",
                     "lr": "--lr", "lr_schedule": "--lr-schedule", "anneal": "--anneal", "min_lr": "--min-lr",
                     "energy_weight": "--energy-weight", "final_energy_weight": "--final-energy-weight",
                     "huber_delta": "--huber-delta",
                     "force_weight": "--force-weight",
                     "ema_decay": "--ema-decay", "patience": "--patience", "seed": "--seed"}}


def under_out(path: str | Path, out: Path) -> str:
    """``path`` written as ``$OUT/...`` when it lies in the run folder ``out``: records stay true
    wherever the run was made (the README sets ``OUT``)."""
    try:
        return str(Path("$OUT") / Path(path).resolve().relative_to(out.resolve()))
    except ValueError:
        return str(path)


def explicit_command(config: dict, out: Path, model_dir: Path) -> str:
    """The `pbcgnn train` command of a stored checkpoint ``config``, every deciding option explicit;
    paths in the run folder ``out`` are written ``$OUT/...``."""
    data = config["data"]
    words = ["pbcgnn", "train", *[under_out(v, out) for v in data["paths"]],
             *[w for v in data["val_paths"] for w in ("--val", under_out(v, out))],
             "--out", under_out(model_dir, out)]
    for group, names in OPTIONS.items():
        words += [w for name, option in names.items() if config[group].get(name) is not None
                  and name not in unused(config) for w in (option, str(config[group][name]))]
    return " ".join(words)


def unused(config: dict) -> set[str]:
    """Stored model options the architecture does not read (PaiNN has no SchNet filter width)."""
    return {"num_filters"} if config["model"].get("architecture", "schnet") != "schnet" else set()


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
    p.add_argument("--resume", action="store_true",
                   help="continue OUT/model/last.pt up to --minutes in all (the options stored there are used)")
    p.add_argument("--note", default="", help="a paragraph for the model card, data/pretrained/<model>.md (how the run was made)")
    p.add_argument("train_args", nargs="*", help="extra pbcgnn train options (after --)")
    args = p.parse_args(argv)

    source = run.SETS["cheng"]
    files = run.write_splits("cheng", source, args.out, args.seed, args.max_frames)
    parts = json.loads((files["test"].parent / "indices.json").read_text())
    regression = [int(i) for i in parts["test"][: args.regression_frames]]
    reg_file = args.out / "regression.xyz"
    ase.io.write(reg_file, ase.io.read(files["test"], index=f":{args.regression_frames}"), format="extxyz")

    model_dir = args.out / "model"
    pbcgnn("train", str(files["train"]), "--val", str(files["val"]), "--out", str(model_dir),
           "--max-minutes", f"{args.minutes:g}", "--no-progress", *(["--resume"] if args.resume else []),
           *args.train_args)
    best = model_dir / "best.pt"
    pbcgnn("-q", "eval", str(best), str(files["test"]), "--out", str(args.out / "test"), "--device", "cpu")
    pbcgnn("-q", "eval", str(best), str(reg_file), "--out", str(args.out / "regression"), "--device", "cpu")
    test = json.loads((args.out / "test" / "metrics.json").read_text())["total"]
    reg = json.loads((args.out / "regression" / "metrics.json").read_text())["total"]
    last = torch.load(model_dir / "last.pt", weights_only=True)
    loop = last["train_state"]["loop"]
    history = loop["history"]
    script = " ".join(["python benchmarks/accuracy/pretrained.py", "--minutes", f"{args.minutes:g}",
                       "--out", "$OUT", *(["--resume"] if args.resume else []),
                       *(["--ship"] if args.ship else []), *(["--", *args.train_args] if args.train_args else [])])
    previous = args.out / "metrics.json"
    trained = True
    if args.resume and previous.is_file():  # the invocations that trained the model, in order
        before = json.loads(previous.read_text())
        earlier = before["script"].replace(f"--out {args.out} ", "--out $OUT ")  # records made before $OUT
        trained = before["training"]["epochs"] < len(history)
        script = earlier + ("\n" + script if trained else "")
    record = {
        "model": NAME.format(architecture=last["config"]["model"].get("architecture", "schnet")),
        "data": {"source": SOURCE, "split_seed": args.seed, "split": "80/10/10 as benchmarks/accuracy/run.py",
                 "n_train": len(parts["train"]), "n_val": len(parts["val"]), "n_test": len(parts["test"])},
        # a resumed run's options are the stored ones, and its budget counts every part: the
        # command is the equivalent uninterrupted run
        "command": explicit_command(last["config"], args.out, model_dir),
        "architecture": {k: last["config"]["model"][k] for k in OPTIONS["model"]
                         if k != "dtype" and k in last["config"]["model"] and k not in unused(last["config"])},
        "script": script,
        "training": {"wall_s": round(loop["elapsed_s"]), "epochs": len(history),
                     "device": "cuda" if torch.cuda.is_available() else "cpu",
                     # an invocation that trained nothing (only scored and shipped) keeps the threads of training
                     "threads": torch.get_num_threads() if trained else before["training"]["threads"], "machine": platform.processor() or platform.machine(),
                     "torch": torch.__version__},
        "test": test,
        "regression": {"frames": regression, "metrics": reg},
        **({"note": args.note.strip()} if args.note.strip() else {}),
    }
    (args.out / "metrics.json").write_text(json.dumps(record, indent=2))
    if args.ship:
        record = ship(record, best)
    print(json.dumps(record, indent=2))
    return record


def ship(record: dict, best: Path) -> dict:
    """Copy the checkpoint to data/pretrained/ with its record and card; rewrite the index."""
    SHIP.mkdir(parents=True, exist_ok=True)
    stem = Path(record["model"]).stem
    shutil.copyfile(best, SHIP / record["model"])
    record = {**record, "sha256": hashlib.sha256((SHIP / record["model"]).read_bytes()).hexdigest()}
    (SHIP / f"{stem}.json").write_text(json.dumps(record, indent=2) + "\n")
    (SHIP / f"{stem}.md").write_text(readme(record))
    records = [json.loads(p.read_text()) for p in sorted(SHIP.glob("*.json"))]
    (SHIP / "README.md").write_text(index(records))
    return record


def describe(m: dict) -> str:
    """The architecture in words, from a record's ``architecture`` (records before it was stored: SchNet)."""
    if m.get("architecture", "schnet") == "painn":
        return (f"a PaiNN ({m['hidden_channels']} scalar and vector features, {m['num_interactions']} "
                f"interactions, {m['num_rbf']} sine radial functions, {m['cutoff']:g} Å cosine cutoff)")
    return (f"a SchNet ({m['hidden_channels']} features,\n{m['num_filters']} filters, {m['num_interactions']} "
            f"interactions, {m['num_rbf']} Gaussians, {m['cutoff']:g} Å cosine cutoff)")


def index(records: list[dict]) -> str:
    """data/pretrained/README.md: every shipped model with its test errors (tests check they agree)."""
    rows = "\n".join(
        f"| `{r['model']}` | {describe(r['architecture']).replace(chr(10), ' ')} | "
        f"{r['test']['energy_rmse_mev_per_atom']:.2f} | {r['test']['force_rmse_mev_per_A']:.1f} | "
        f"{r['training']['wall_s'] / 60:.0f} | [{Path(r['model']).stem}.md]({Path(r['model']).stem}.md) |"
        for r in records)
    return f"""# Pretrained models for revPBE0-D3 liquid water

Each model was trained on the same {records[0]['data']['n_train']} Cheng et al. revPBE0-D3 frames
and scored on the same {records[0]['data']['n_test']} held-out test frames (RMSEs). Its card
(`.md`) says how it was made; its record (`.json`) holds the numbers, which `tests/test_pretrained.py`
reproduces.

| file | model | energy (meV/atom) | forces (meV/Å) | training (CPU minutes) | card |
|---|---|---|---|---|---|
{rows}
"""


def readme(r: dict) -> str:
    """data/pretrained/<model>.md from the record (the regression test checks they agree)."""
    t, reg, tr, d = r["test"], r["regression"]["metrics"], r["training"], r["data"]
    m = r["architecture"]
    name = "PaiNN" if m.get("architecture", "schnet") == "painn" else "SchNet"
    return f"""# Pretrained model: {name} for revPBE0-D3 liquid water

`{r['model']}` (float32; sha256 `{r['sha256']}`) is {describe(m)} trained on the Cheng et al.
revPBE0-D3 water frames. Energies in eV, lengths in Å, as every pbcgnn checkpoint.

## Data

* **Frames:** `{d['source']}` (1270 frames of 64 H2O, 24-44 Å³ per molecule). They are split
  80/10/10 with seed {d['split_seed']}, the split of `benchmarks/accuracy/run.py`:
  {d['n_train']} training, {d['n_val']} validation (early stopping) and {d['n_test']} test frames.
* **Source:** B. Cheng, E. A. Engel, J. Behler, C. Dellago, M. Ceriotti, PNAS 116, 1110
  (2019), doi:10.1073/pnas.1815117116. See `../shared/data/README.md` for provenance.
* **Licence:** the upstream repository has no licence file. The model is derived from those
  data and is shipped for evaluation and research.

## Test errors (the {d['n_test']} held-out frames)

| energy RMSE | energy MAE | force RMSE | force MAE |
|---|---|---|---|
| {t['energy_rmse_mev_per_atom']:.2f} meV/atom | {t['energy_mae_mev_per_atom']:.2f} meV/atom | {t['force_rmse_mev_per_A']:.1f} meV/Å | {t['force_mae_mev_per_A']:.1f} meV/Å |

Published models on this set, for comparison (RMSEs as recalled, not verified against the
papers; all GPU-trained). Their energy errors are quoted **per H2O**; one H2O is 3 atoms:

| model | energy (meV/H2O) | energy (meV/atom) | forces (meV/Å) |
|---|---|---|---|
| Behler-Parrinello | about 2-3 | about 0.8 | about 120 |
| ACE | - | - | about 99 |
| REANN | - | - | about 53 |
| NequIP | - | - | about 45 |
| MACE | - | - | about 36 |

This model had a reduced budget: {tr['wall_s'] / 60:.0f} minutes ({tr['epochs']} epochs) on
{tr['threads']} CPU thread(s). No GPU was available, and it is not converged.

## How it was made

From the repository root, with `OUT` any folder for the splits, checkpoints and scores:

```bash
OUT=runs/pretrained
{r['script']}
```

After writing the split files, the script ran the equivalent of this command (every option
written out, as stored in the checkpoint; a resumed run counts the minutes of all its parts):

```bash
{r['command']}
```

{r['note'] + chr(10) * 2 if r.get('note') else ''}Environment: torch {tr['torch']}, {tr['machine']}.

## Reproducing the numbers

```bash
python benchmarks/accuracy/pretrained.py --help       # the split and the training
pbcgnn eval data/pretrained/{r['model']} $OUT/splits/cheng/test.xyz
```

`tests/test_pretrained.py` evaluates the model with `pbcgnn eval` on {reg['n_frames']} shared
frames, the first of the test split: indices {r['regression']['frames']} of the shared file. It
checks the recorded errors ({reg['energy_rmse_mev_per_atom']:.3f} meV/atom and
{reg['force_rmse_mev_per_A']:.2f} meV/Å) to a relative 1e-4.
"""


if __name__ == "__main__":
    main()
