"""The training loss: weighted per-atom energy and force mean squared errors."""
from __future__ import annotations

import torch
from torch_geometric.data import Batch

__all__ = ["energy_force_loss", "loss_denominators"]


def loss_denominators(batch: Batch) -> torch.Tensor:
    """[2] float64: the energy term's weight sum and the force term's count of weighted components.

    Data-parallel training sums these over all processes, so every process normalises by the
    global batch and the averaged gradients equal those of one process with the whole batch.
    """
    weight = batch.weight.double()
    atom_w = (weight * batch.has_forces.double())[batch.batch]  # [N]
    return torch.stack([weight.sum(), 3.0 * atom_w.sum()])


def energy_force_loss(
    pred: dict[str, torch.Tensor],
    batch: Batch,
    energy_weight: float,
    force_weight: float,
    denominators: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``energy_weight * MSE(E/N) + force_weight * MSE(F)``, each frame weighted by ``batch.weight``.

    The energy error is taken in float64 (totals of -33 keV) and divided by the atom
    count before it is cast to the model's dtype. Frames with ``has_forces`` False add
    nothing to the force term (and so no force gradient).

    Args:
        pred: ``energy`` [B] eV (float64) and ``forces`` [N, 3] eV/Angstrom.
        batch: reference ``energy`` [B], ``forces`` [N, 3], ``natoms`` [B],
            ``has_forces`` [B], ``weight`` [B], ``batch`` [N].
        denominators: [2] from :func:`loss_denominators`, summed over a larger (global)
            batch; default: this batch's own.

    Returns:
        ``(loss, terms)`` with the scalar loss and its unweighted ``energy`` and ``force`` MSEs.
    """
    dtype = pred["forces"].dtype
    if denominators is None:
        denominators = loss_denominators(batch)
    e_denom, f_denom = (float(d) for d in denominators)
    weight = batch.weight.to(dtype)  # [B]
    de = ((pred["energy"] - batch.energy) / batch.natoms).to(dtype)  # [B] eV/atom
    energy_mse = (weight * de**2).sum() / e_denom

    atom_w = (weight * batch.has_forces.to(dtype))[batch.batch].unsqueeze(1)  # [N, 1]
    df = pred["forces"] - batch.forces.to(dtype)  # [N, 3]
    force_mse = (atom_w * df**2).sum() / f_denom if f_denom > 0 else df.new_zeros(())

    loss = energy_weight * energy_mse + force_weight * force_mse
    return loss, {"energy": energy_mse.detach(), "force": force_mse.detach()}
