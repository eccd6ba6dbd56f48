"""Predictions of a model on frames, and their errors in meV/atom and meV/Angstrom.

Metric definitions (all against the reference labels):

* ``energy_rmse_mev_per_atom`` / ``energy_mae_mev_per_atom``: root mean square / mean
  absolute of ``(E_pred - E_ref) / N`` over frames, in meV per atom.
* ``force_rmse_mev_per_A`` / ``force_mae_mev_per_A``: over every Cartesian force
  component of every atom of frames that have forces, in meV/Angstrom.

For a committee checkpoint the predictions are the committee mean, and the report adds the
spread and its calibration (:func:`pbcgnn.committee.calibration_metrics`: Spearman rank
correlation of per-frame spread and error, RMS error over RMS spread) and ``calibration.png``.
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from torch_geometric.data import Batch
from torch_geometric.loader import DataLoader

from .model import compute_properties

__all__ = ["Predictions", "predict", "error_metrics", "prediction_metrics", "evaluate", "evaluate_validation",
           "predictions_to_atoms"]

log = logging.getLogger(__name__)


@dataclass
class Predictions:
    """Per-frame and per-atom predictions next to their references (numpy, float64).

    Attributes:
        energy, energy_ref: [F] total energies, eV.
        natoms: [F] atoms per frame.
        forces, forces_ref: [N, 3] eV/Angstrom, frames concatenated.
        has_forces: [F] bool, whether the frame has reference forces.
        sources: [F] where each frame came from (``path:line``).
        structures: per frame (z, pos, cell, pbc), to write the frames back out.
        energy_std: [F] committee std of the total energy, eV (None for a single model).
        forces_std: [N, 3] committee std of each force component, eV/Angstrom (or None).
    """

    energy: np.ndarray
    energy_ref: np.ndarray
    natoms: np.ndarray
    forces: np.ndarray
    forces_ref: np.ndarray
    has_forces: np.ndarray
    sources: list[str]
    structures: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]
    energy_std: np.ndarray | None = None
    forces_std: np.ndarray | None = None

    @property
    def atom_has_forces(self) -> np.ndarray:
        """[N] bool: atom belongs to a frame with reference forces."""
        return np.repeat(self.has_forces, self.natoms)


def predict(
    model: torch.nn.Module,
    data: Iterable[Batch] | Sequence,
    device: str | torch.device = "cpu",
    batch_size: int = 8,
) -> Predictions:
    """Energies and forces of ``model`` on a dataset (or an iterable of batches); for a
    :class:`pbcgnn.committee.Committee`, the mean and the spread over its members."""
    from .committee import Committee, committee_properties

    loader = data if isinstance(data, DataLoader) else DataLoader(data, batch_size=batch_size, shuffle=False)
    was_training = model.training
    model.eval()
    is_committee = isinstance(model, Committee)
    parts: dict[str, list] = {k: [] for k in ("e", "eref", "n", "f", "fref", "hf", "estd", "fstd")}
    sources, structures = [], []
    for batch in loader:
        batch = batch.to(device)
        with torch.enable_grad():  # forces are derivatives even at inference
            if is_committee:
                out = committee_properties(model, batch, forces=True)
                parts["estd"].append(out["energy_std"].double().cpu())
                parts["fstd"].append(out["forces_std"].double().cpu())
            else:
                out = compute_properties(model, batch, forces=True, training=False)
        parts["e"].append(out["energy"].detach().double().cpu())
        parts["eref"].append(batch.energy.double().cpu() if "energy" in batch else torch.full_like(out["energy"], float("nan")).cpu())
        parts["n"].append(batch.natoms.cpu())
        parts["f"].append(out["forces"].detach().double().cpu())
        parts["fref"].append(batch.forces.double().cpu())
        parts["hf"].append(batch.has_forces.cpu())
        sources.extend(batch.source if "source" in batch else [""] * batch.num_graphs)
        for g in batch.cpu().to_data_list():
            structures.append((g.z.numpy(), g.pos.numpy(), g.cell[0].numpy(), g.pbc[0].numpy()))
    model.train(was_training)
    cat = {k: torch.cat(v).numpy() for k, v in parts.items() if v}
    return Predictions(cat["e"], cat["eref"], cat["n"], cat["f"], cat["fref"], cat["hf"].astype(bool), sources,
                       structures, cat.get("estd"), cat.get("fstd"))


def error_metrics(pred: Predictions) -> dict[str, float]:
    """Energy (meV/atom) and force (meV/Angstrom) RMSE and MAE; see the module docstring."""
    de = (pred.energy - pred.energy_ref) / pred.natoms * 1000.0
    df = (pred.forces - pred.forces_ref)[pred.atom_has_forces].ravel() * 1000.0
    nan = float("nan")
    return {
        "energy_rmse_mev_per_atom": float(np.sqrt(np.mean(de**2))) if de.size else nan,
        "energy_mae_mev_per_atom": float(np.mean(np.abs(de))) if de.size else nan,
        "force_rmse_mev_per_A": float(np.sqrt(np.mean(df**2))) if df.size else nan,
        "force_mae_mev_per_A": float(np.mean(np.abs(df))) if df.size else nan,
        "n_frames": int(pred.natoms.size),
        "n_atoms": int(pred.natoms.sum()),
    }


def predictions_to_atoms(pred: Predictions) -> list[Atoms]:
    """Frames with predicted energy and forces as results, references in info/arrays."""
    frames, start = [], 0
    for k, (z, pos, cell, pbc) in enumerate(pred.structures):
        n = len(z)
        atoms = Atoms(numbers=z, positions=pos, cell=cell, pbc=pbc)
        atoms.calc = SinglePointCalculator(atoms, energy=float(pred.energy[k]), forces=pred.forces[start : start + n])
        atoms.info["ref_energy"] = float(pred.energy_ref[k])
        atoms.info["source"] = pred.sources[k]
        if pred.has_forces[k]:
            atoms.arrays["ref_forces"] = pred.forces_ref[start : start + n].copy()
        if pred.energy_std is not None:
            atoms.info["energy_std"] = float(pred.energy_std[k])
            atoms.arrays["forces_std"] = pred.forces_std[start : start + n].copy()
        frames.append(atoms)
        start += n
    return frames


def evaluate(
    checkpoint: str | os.PathLike,
    paths: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    format: str | None = None,
    length_unit: str | None = None,
    energy_unit: str | None = None,
    device: str = "cpu",
    batch_size: int = 8,
    plot: bool = True,
) -> dict[str, dict[str, float]]:
    """Evaluate a checkpoint on data files; write ``metrics.json``, ``predictions.xyz``
    and ``parity.png`` to ``out_dir``.

    Returns:
        Metrics per data file (keyed by the path as given) plus ``"total"``.
    """
    from .dataset import FrameDataset
    from .train.checkpoint import load_checkpoint

    model, _ = load_checkpoint(checkpoint, device=device)
    named = {}
    for path in paths:
        dataset = FrameDataset(path, model.cutoff, format=format, length_unit=length_unit, energy_unit=energy_unit)
        named[os.fspath(path)] = predict(model, dataset, device=device, batch_size=batch_size)
    return _report(named, out_dir, plot)


def evaluate_validation(
    checkpoint: str | os.PathLike, out_dir: str | os.PathLike, *, device: str = "cpu", batch_size: int = 8,
    plot: bool = True,
) -> dict[str, dict[str, float]]:
    """Evaluate a checkpoint on the validation frames of its own training run (same files, split and seed)."""
    from .train.checkpoint import load_checkpoint
    from .train.config import Config
    from .train.loop import load_datasets

    model, ckpt = load_checkpoint(checkpoint, device=device)
    _, val = load_datasets(Config.from_dict(ckpt["config"]))
    return _report({"validation": predict(model, val, device=device, batch_size=batch_size)}, out_dir, plot)


def _report(named: dict[str, Predictions], out_dir: str | os.PathLike, plot: bool) -> dict[str, dict[str, float]]:
    """metrics.json, predictions.xyz and parity.png (committees: calibration.png) per data source."""
    import ase.io

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    named = {**named, "total": _concat(list(named.values()))}
    results = {name: prediction_metrics(p) for name, p in named.items()}
    total = named["total"]
    with open(out / "metrics.json", "w") as f:
        json.dump(results, f, indent=2)
    ase.io.write(out / "predictions.xyz", predictions_to_atoms(total), format="extxyz")
    if plot:
        from .plots import parity_plot

        parity_plot(total, out / "parity.png")
        if total.energy_std is not None:
            from .plots import calibration_plot

            calibration_plot(total, out / "calibration.png")
    return results


def prediction_metrics(pred: Predictions) -> dict[str, float]:
    """:func:`error_metrics`, plus the committee's spread and calibration
    (:func:`pbcgnn.committee.calibration_metrics`) when the predictions carry one."""
    metrics = error_metrics(pred)
    if pred.energy_std is not None:
        from .committee import calibration_metrics

        metrics.update(calibration_metrics(pred))
    return metrics


def _concat(preds: list[Predictions]) -> Predictions:
    spread = all(p.energy_std is not None for p in preds)
    return Predictions(
        *(np.concatenate([getattr(p, k) for p in preds]) for k in
          ("energy", "energy_ref", "natoms", "forces", "forces_ref", "has_forces")),
        sources=[s for p in preds for s in p.sources],
        structures=[s for p in preds for s in p.structures],
        energy_std=np.concatenate([p.energy_std for p in preds]) if spread else None,
        forces_std=np.concatenate([p.forces_std for p in preds]) if spread else None,
    )
