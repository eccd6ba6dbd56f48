"""SchNetPack side of ``time_to_accuracy.py``: ``schnetpack_train.py`` with a model at each budget mark.

Runs in SchNetPack's own venv; never imported by pbcgnn. Called as

    ~/spk-venv/bin/python schnetpack_snapshots.py --marks 5 15 45 135 --out DIR [schnetpack_train.py options]

``schnetpack_train.py`` trains once, for the largest mark (its ``--minutes``), with one more
Lightning callback: after each validation that improves ``val_loss`` it saves the weights and
the seconds since the start of training. At each mark M the weights saved last within M minutes
(the best so far, as its own ``best.ckpt`` was then) predict the test frames with SchNetPack's
ASE converter, into ``DIR/pred_{M}min.xyz`` (``SPK_energy``, ``SPK_forces``).
``DIR/snapshots.json`` lists them. (``schnetpack_train.py`` scores its final best model itself,
into ``DIR/metrics.json``, as in ``run.py``.)
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import schnetpack_train as base  # first: it patches torch for schnetpack

# isort: split
import ase.io
import pytorch_lightning as pl
import schnetpack as spk
import schnetpack.transform as trn


class Snapshots(pl.Callback):
    """Saves the weights after every validation that improves ``val_loss``, with the time."""

    def __init__(self, folder: Path):
        self.folder, self.best, self.saved, self.epoch_ends = folder, float("inf"), [], []
        folder.mkdir(parents=True, exist_ok=True)

    def on_train_start(self, trainer, module) -> None:
        self.t0 = time.monotonic()

    def on_validation_end(self, trainer, module) -> None:
        if trainer.sanity_checking:
            return
        elapsed, loss = time.monotonic() - self.t0, float(trainer.callback_metrics["val_loss"])
        self.epoch_ends.append(elapsed)
        if loss < self.best:
            self.best = loss
            path = self.folder / f"epoch{trainer.current_epoch + 1}.pt"
            torch.save(module.state_dict(), path)
            self.saved.append((elapsed, trainer.current_epoch + 1, path))


def with_callback(callback: pl.Callback, trainers: list):
    """A ``pl.Trainer`` factory that adds ``callback`` and remembers the trainer."""
    make = pl.Trainer

    def trainer(*args, **kwargs):
        kwargs["callbacks"] = [*kwargs.get("callbacks", []), callback]
        trainers.append(make(*args, **kwargs))
        return trainers[-1]

    return trainer


def predict(task, test: Path, cutoff: float, path: Path) -> None:
    """Energies and forces of the test frames (offsets added back), written as extxyz."""
    net = task.model.cpu().eval()
    net.do_postprocessing = True
    converter = spk.interfaces.AtomsConverter(neighbor_list=trn.MatScipyNeighborList(cutoff=cutoff),
                                              dtype=torch.float32)
    frames = ase.io.read(test, index=":")
    for atoms in frames:
        out = net(converter(atoms))
        atoms.info["SPK_energy"] = float(out["energy"].detach().sum())
        atoms.arrays["SPK_forces"] = out["forces"].detach().double().numpy()
    ase.io.write(path, frames, format="extxyz")


def snapshot(minutes: float, snaps: Snapshots, task, args) -> dict:
    """The weights saved last within ``minutes``, run on the test frames."""
    saved = [s for s in snaps.saved if s[0] <= 60 * minutes]
    row = {"minutes": minutes, "epochs": sum(t <= 60 * minutes for t in snaps.epoch_ends)}
    if not saved:
        return {**row, "snapshot": None}
    train_s, epoch, path = saved[-1]
    task.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    pred = args.out / f"pred_{minutes:g}min.xyz"
    predict(task, args.test, args.cutoff, pred)
    return {**row, "best_epoch": epoch, "snapshot_train_s": round(train_s, 1), "snapshot": str(path),
            "predictions": str(pred)}


def main() -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--marks", type=float, nargs="+", required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--test", type=Path, required=True)
    p.add_argument("--cutoff", type=float, default=6.0)
    args, rest = p.parse_known_args()
    args.out = args.out.resolve()
    torch.set_num_threads(1)
    snaps, trainers = Snapshots(args.out / "snapshots"), []
    pl.Trainer = base.pl.Trainer = with_callback(snaps, trainers)
    sys.argv = [sys.argv[0], "--out", str(args.out), "--test", str(args.test), "--cutoff", str(args.cutoff),
                "--minutes", str(max(args.marks)), *rest]
    base.main()
    rows = [snapshot(m, snaps, trainers[0].lightning_module, args) for m in sorted(args.marks)]
    (args.out / "snapshots.json").write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
