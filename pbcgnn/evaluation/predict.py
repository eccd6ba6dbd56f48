"""Predictions of a model on frames, next to their references: the numbers every error is computed from."""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from torch_geometric.data import Batch, Data
from torch_geometric.loader import DataLoader

from ..model import Committee, committee_properties, compute_properties

__all__ = ["Predictions", "predict", "predictions_to_atoms", "concat_predictions", "graph_chunks", "CHUNK_FRAMES"]

#: About how many frames a pass over a stream of graphs builds and predicts at once (then drops):
#: 64 water frames of 192 atoms hold about 90 MB of graphs at a 6 A cutoff.
CHUNK_FRAMES = 64


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
        energy_std: [F] committee std of the total energy, calibrated, eV (None for a single model).
        forces_std: [N, 3] committee std of each force component, calibrated, eV/Angstrom (or None).
        energy_std_raw, forces_std_raw: the same, the members' sample std before calibration.
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
    energy_std_raw: np.ndarray | None = None
    forces_std_raw: np.ndarray | None = None

    @property
    def atom_has_forces(self) -> np.ndarray:
        """[N] bool: atom belongs to a frame with reference forces."""
        return np.repeat(self.has_forces, self.natoms)


def predict(
    model: torch.nn.Module,
    data: Iterable[Batch] | Sequence,
    device: str | torch.device = "cpu",
    batch_size: int = 8,
    on_batch: Callable[[dict[str, torch.Tensor], Batch], None] | None = None,
) -> Predictions:
    """Energies and forces of ``model`` on a dataset (or an iterable of batches); for a
    :class:`pbcgnn.model.Committee`, the mean and the spread over its members (calibrated, and raw).

    ``on_batch(out, batch)``, when given, sees every batch's outputs (``energy`` [B] eV,
    ``forces`` [N, 3] eV/Angstrom, detached) with the batch on ``device``, e.g. to add up a loss.
    """
    loader = data if isinstance(data, DataLoader) else DataLoader(data, batch_size=batch_size, shuffle=False)
    was_training = model.training
    model.eval()
    is_committee = isinstance(model, Committee)
    parts: dict[str, list] = {k: [] for k in ("e", "eref", "n", "f", "fref", "hf", "estd", "fstd",
                                               "estd_raw", "fstd_raw")}
    sources, structures = [], []
    for batch in loader:
        if batch.pos.is_shared():  # from a DataLoader worker: each shared storage holds a file descriptor
            batch = batch.clone()  # until freed, and what is kept below would hold them all (fd exhaustion)
        batch = batch.to(device)
        with torch.enable_grad():  # forces are derivatives even at inference
            if is_committee:
                out = committee_properties(model, batch, forces=True)
                for key, name in (("estd", "energy_std"), ("fstd", "forces_std")):
                    parts[key].append(out[name].double().cpu())
                    parts[f"{key}_raw"].append(out[f"{name}_raw"].double().cpu())
            else:
                out = compute_properties(model, batch, forces=True, training=False)
        if on_batch is not None:
            on_batch(out, batch)
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
                       structures, cat.get("estd"), cat.get("fstd"), cat.get("estd_raw"), cat.get("fstd_raw"))


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
        if pred.energy_std_raw is not None:
            atoms.info["energy_std_raw"] = float(pred.energy_std_raw[k])
            atoms.arrays["forces_std_raw"] = pred.forces_std_raw[start : start + n].copy()
        frames.append(atoms)
        start += n
    return frames


def concat_predictions(preds: list[Predictions]) -> Predictions:
    """The predictions of several data sets as one (frames in order)."""
    spread = all(p.energy_std is not None for p in preds)
    raw = all(p.energy_std_raw is not None for p in preds)
    return Predictions(
        *(np.concatenate([getattr(p, k) for p in preds]) for k in
          ("energy", "energy_ref", "natoms", "forces", "forces_ref", "has_forces")),
        sources=[s for p in preds for s in p.sources],
        structures=[s for p in preds for s in p.structures],
        energy_std=np.concatenate([p.energy_std for p in preds]) if spread else None,
        forces_std=np.concatenate([p.forces_std for p in preds]) if spread else None,
        energy_std_raw=np.concatenate([p.energy_std_raw for p in preds]) if raw else None,
        forces_std_raw=np.concatenate([p.forces_std_raw for p in preds]) if raw else None,
    )


def graph_chunks(graphs: Iterable[Data], batch_size: int) -> Iterator[list[Data]]:
    """``graphs`` in lists of about :data:`CHUNK_FRAMES`, a whole number of batches each, so that
    predicting chunk by chunk (:func:`predict`) forms the same batches as predicting all at once."""
    size = batch_size * max(1, CHUNK_FRAMES // batch_size)
    chunk: list[Data] = []
    for graph in graphs:
        chunk.append(graph)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
