"""The one fit of a model's reference energies E0 and energy scale to its training frames.

A model's energy is ``E = sum_i (scale * y_i + E0[Z_i])`` (:class:`pbcgnn.model.AtomicReference`).
Before training, :func:`fit_reference` sets both from the training frames:

* ``scale``: the RMS force component of the frames (eV/Angstrom over ~1 Angstrom), unless
  ``keep_scale``. A pretrained network's last readout layer is multiplied by old/new scale,
  so its function is unchanged. Energy-only frames give no force scale: a new model then takes
  the spread of the residual energies per atom, a pretrained one keeps its scale.
* ``E0``: least squares of ``E_ref - sum_i scale * y_i`` over the frames, i.e. the residual of
  the network as it stands (zero for a new model, whose readout starts at zero). Fine-tuning to
  another level of theory, whose absolute energies differ by eV per atom, then starts with zero
  mean energy error. For pure water only ``2 E0[H] + E0[O]`` is determined
  (:func:`pbcgnn.model.fit_reference_energies` takes the minimum-norm split). Elements absent
  from the frames keep their E0.
"""
from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import torch
from torch_geometric.loader import DataLoader

from ..model.reference import estimate_scale, fit_reference_energies

__all__ = ["fit_reference"]

log = logging.getLogger(__name__)


@torch.no_grad()
def _network_energies(model: torch.nn.Module, dataset, device: torch.device) -> np.ndarray:
    """Per frame, the model energy without the E0 part: ``sum_i scale * y_i`` [F] eV."""
    was_training = model.training
    model.eval()
    out = []
    for batch in DataLoader(dataset, batch_size=8, shuffle=False):
        batch = batch.to(device)
        energy = model(batch.z, batch.pos, batch.edge_index, batch.cell_offsets, batch.cell, batch.batch,
                       batch.num_graphs)  # [B] float64
        e0 = model.reference.e0[batch.z]  # [N] float64 eV
        e0_sum = torch.zeros_like(energy).index_add_(0, batch.batch, e0)  # [B]
        out.append((energy - e0_sum).cpu())
    model.train(was_training)
    return torch.cat(out).numpy()


def _labels(train_set) -> tuple[list[np.ndarray], np.ndarray, list[np.ndarray]]:
    """``(numbers per frame, energies [F] eV, [RMS force component] or [])`` in one pass over the
    frames without their edges (a streamed set builds no neighbour list), never holding all forces
    (80 MB per 10,000 frames of 192 atoms)."""
    numbers, energies, square, count = [], [], 0.0, 0
    for g in train_set.labels_only():
        numbers.append(g.z.numpy().astype(np.int16))
        energies.append(float(g.energy))
        if bool(g.has_forces):
            square, count = square + float(torch.sum(g.forces.double() ** 2)), count + g.forces.numel()
    return numbers, np.array(energies), [np.array([np.sqrt(square / count)])] if count else []


def _readout(model: torch.nn.Module) -> torch.nn.Linear:
    """The readout's last linear layer: its output times ``scale`` is the atomic energy."""
    return model.lin2


def _rescale(model: torch.nn.Module, scale: float) -> None:
    """Set the scale and compensate the last readout layer, so the network energy is unchanged."""
    ratio = float(model.reference.scale) / scale
    with torch.no_grad():
        _readout(model).weight.mul_(ratio)
        _readout(model).bias.mul_(ratio)
    model.reference.set_values(scale=scale)


def fit_reference(model: torch.nn.Module, train_set, device: str | torch.device = "cpu",
                  keep_scale: bool = False) -> dict[str, Any]:
    """Fit E0 and the energy scale of ``model`` (new or pretrained) to ``train_set``; see the module docstring.

    Args:
        model: a SchNet on ``device``; changed in place.
        train_set: graphs with ``z``, ``energy`` [1] eV, ``forces`` [N, 3] eV/Angstrom, ``has_forces``.
        device: where the model is.
        keep_scale: keep the model's scale and readout.

    Returns:
        ``e0`` (Z -> eV), ``scale`` (eV), ``scale_ratio`` (old/new), ``elements``, ``rank``,
        ``full_rank``, ``rmse_per_atom`` (eV, after E0), and the energy RMSE (meV/atom) of the
        model on the frames before and after the fit.
    """
    numbers, energies, forces = _labels(train_set)
    natoms = np.array([len(z) for z in numbers])
    old_scale = float(model.reference.scale)
    readout = _readout(model)
    pretrained = bool(readout.weight.any() or readout.bias.any())  # a new readout is exactly zero
    if forces and not keep_scale:
        _rescale(model, estimate_scale(forces, np.zeros(len(numbers))))
    network = _network_energies(model, train_set, torch.device(device)) if pretrained else np.zeros(len(numbers))
    e0_old = model.reference.e0.cpu().numpy()
    before = (network + np.array([e0_old[zs].sum() for zs in numbers]) - energies) / natoms  # [F] eV/atom
    e0, info = fit_reference_energies(numbers, energies - network)
    model.reference.set_values(e0=e0)
    residual = (energies - network - np.array([sum(e0[int(z)] for z in zs) for zs in numbers])) / natoms
    if not forces and not keep_scale and not pretrained:  # energy-only data, new model
        model.reference.set_values(scale=estimate_scale([], residual))
    elif not forces and not keep_scale:
        log.info("no forces in the training frames: the pretrained scale %.4f eV is kept", old_scale)
    scale = float(model.reference.scale)
    rmse = lambda x: float(np.sqrt(np.mean(np.square(x)))) * 1000  # noqa: E731 (meV)
    base_f = rmse(np.concatenate([f.ravel() for f in forces])) if forces else math.nan
    log.info("E0 per element (eV): %s; scale %.4f -> %.4f eV; rank %s", {int(k): round(v, 6) for k, v in e0.items()},
             old_scale, scale, info["rank"])
    if pretrained:
        log.info("energy RMSE of the pretrained model on the training set %.3f -> %.3f meV/atom (E0 refit)",
                 rmse(before), rmse(residual))
    else:
        log.info("baseline on the training set: energy RMSE %.3f meV/atom (E0 only), force RMSE %.1f meV/A (zero)",
                 rmse(residual - residual.mean()), base_f)
    return {"e0": {int(k): float(v) for k, v in e0.items()}, "scale": scale, "scale_ratio": old_scale / scale, **info,
            "energy_rmse_before_mev_per_atom": rmse(before), "energy_rmse_after_mev_per_atom": rmse(residual)}
