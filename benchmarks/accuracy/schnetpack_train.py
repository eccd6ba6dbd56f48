"""SchNetPack's SchNet on the same split files and budget as pbcgnn (runs in SchNetPack's own venv).

Not part of pbcgnn and never imported by it. Called by ``run.py`` as

    /path/to/spk-venv/bin/python schnetpack_train.py --train train.xyz --val val.xyz --test test.xyz \
        --out DIR --minutes 20 --features 64 --interactions 3 --rbf 32 --cutoff 6.0

Uses the SchNetPack 2.x recipe for energies and forces: SchNet representation, Atomwise energy,
Forces by autograd, mean energy per atom removed (RemoveOffsets), MatScipy neighbour list,
AdamW, ReduceLROnPlateau and early stopping, a wall-clock limit. Writes ``DIR/metrics.json`` with
the same metric definitions as ``pbcgnn eval`` (energy per atom, force components).
"""
from __future__ import annotations

import argparse
import json
import time
import typing
from pathlib import Path

import numpy as np
import torch
import torch.utils.data.dataloader as _dl

_dl.T_co = typing.TypeVar("T_co", covariant=True)  # removed in torch 2.13; schnetpack imports it

import ase.io  # noqa: E402
import pytorch_lightning as pl  # noqa: E402
import schnetpack as spk  # noqa: E402
import schnetpack.transform as trn  # noqa: E402


def build_db(parts: dict[str, Path], out: Path) -> tuple[Path, Path]:
    """One ASE db with train, val and test frames, and the split file indexing them."""
    db = out / "frames.db"
    if db.exists():
        db.unlink()
    data = spk.data.ASEAtomsData.create(str(db), distance_unit="Ang",
                                        property_unit_dict={"energy": "eV", "forces": "eV/Ang"})
    index, start = {}, 0
    for name in ("train", "val", "test"):
        frames = ase.io.read(parts[name], index=":")
        props = [{"energy": np.array([a.get_potential_energy()]), "forces": a.get_forces()} for a in frames]
        data.add_systems(props, frames)
        index[f"{name}_idx"] = np.arange(start, start + len(frames))
        start += len(frames)
    split = out / "split.npz"
    np.savez(split, **index)
    return db, split


def main() -> None:
    p = argparse.ArgumentParser()
    for name in ("train", "val", "test", "out"):
        p.add_argument(f"--{name}", type=Path, required=True)
    p.add_argument("--minutes", type=float, default=20.0)
    p.add_argument("--features", type=int, default=128)
    p.add_argument("--interactions", type=int, default=6)
    p.add_argument("--rbf", type=int, default=50)
    p.add_argument("--cutoff", type=float, default=6.0)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--energy-weight", type=float, default=0.05)
    p.add_argument("--device", default="auto")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    cuda = torch.cuda.is_available() and args.device in ("auto", "cuda")

    db, split = build_db({"train": args.train, "val": args.val, "test": args.test}, args.out)
    dm = spk.data.AtomsDataModule(
        str(db), batch_size=args.batch_size, split_file=str(split), num_workers=0, pin_memory=cuda,
        transforms=[trn.MatScipyNeighborList(cutoff=args.cutoff),
                    trn.RemoveOffsets("energy", remove_mean=True, is_extensive=True), trn.CastTo32()],
    )
    dm.prepare_data()
    dm.setup()

    cutoff = args.cutoff
    schnet = spk.representation.SchNet(
        n_atom_basis=args.features, n_interactions=args.interactions,
        radial_basis=spk.nn.GaussianRBF(n_rbf=args.rbf, cutoff=cutoff), cutoff_fn=spk.nn.CosineCutoff(cutoff))
    model = spk.model.NeuralNetworkPotential(
        representation=schnet, input_modules=[spk.atomistic.PairwiseDistances()],
        output_modules=[spk.atomistic.Atomwise(n_in=args.features, output_key="energy"),
                        spk.atomistic.Forces(energy_key="energy", force_key="forces")],
        postprocessors=[trn.CastTo64(), trn.AddOffsets("energy", add_mean=True)])
    outputs = [spk.task.ModelOutput("energy", loss_fn=torch.nn.MSELoss(), loss_weight=args.energy_weight, metrics={}),
               spk.task.ModelOutput("forces", loss_fn=torch.nn.MSELoss(), loss_weight=1 - args.energy_weight,
                                    metrics={})]
    task = spk.task.AtomisticTask(
        model=model, outputs=outputs, optimizer_cls=torch.optim.AdamW, optimizer_args={"lr": args.lr},
        # spk.train.ReduceLROnPlateau passes `verbose`, which torch 2.13 removed; use torch's own.
        scheduler_cls=torch.optim.lr_scheduler.ReduceLROnPlateau, scheduler_args={"factor": 0.5, "patience": 10},
        scheduler_monitor="val_loss")
    trainer = pl.Trainer(
        accelerator="gpu" if cuda else "cpu", devices=1, max_epochs=100000,
        max_time={"minutes": args.minutes}, default_root_dir=str(args.out),
        logger=pl.loggers.CSVLogger(str(args.out), name="log", version=""),  # val_loss per epoch in log/metrics.csv enable_progress_bar=False,
        callbacks=[pl.callbacks.EarlyStopping("val_loss", patience=40),
                   pl.callbacks.ModelCheckpoint(dirpath=str(args.out), monitor="val_loss", filename="best")])
    t0 = time.monotonic()
    trainer.fit(task, datamodule=dm)
    wall = time.monotonic() - t0

    # Lightning pickles the model into its checkpoint; this file was written by this run, so only the
    # weights are taken (into the live task) instead of unpickling objects.
    state = torch.load(args.out / "best.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    task.load_state_dict(state)
    net = task.model.to("cuda" if cuda else "cpu").eval()
    net.do_postprocessing = False  # targets in the loader carry the same removed offsets
    de, df = [], []
    for batch in dm.test_dataloader():
        batch = {k: v.to("cuda" if cuda else "cpu") for k, v in batch.items()}
        ref_e, ref_f, n = batch["energy"].clone(), batch["forces"].clone(), batch["_n_atoms"]
        out = net(batch)
        de.append(((out["energy"] - ref_e) / n).detach().double().cpu())
        df.append((out["forces"] - ref_f).detach().double().cpu().ravel())
    de, df = torch.cat(de).numpy() * 1000, torch.cat(df).numpy() * 1000
    metrics = {"energy_rmse_mev_per_atom": float(np.sqrt(np.mean(de**2))),
               "energy_mae_mev_per_atom": float(np.mean(np.abs(de))),
               "force_rmse_mev_per_A": float(np.sqrt(np.mean(df**2))),
               "force_mae_mev_per_A": float(np.mean(np.abs(df))),
               "n_frames": int(de.size), "train_s": round(wall, 1), "epochs": int(trainer.current_epoch),
               "schnetpack": spk.__version__ if hasattr(spk, "__version__") else "2.x"}
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()
