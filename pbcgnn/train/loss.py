"""The loss: weighted per-atom energy and force mean squared errors (or Huber losses, for training),
for training and validation alike."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch_geometric.data import Batch

__all__ = ["ValidationLoss", "energy_force_loss", "loss_denominators", "penalty", "squared_errors"]


def loss_denominators(batch: Batch) -> torch.Tensor:
    """[2] float64: the energy term's weight sum and the force term's count of weighted components.

    Data-parallel training sums these over all processes, so every process normalises by the
    global batch and the averaged gradients equal those of one process with the whole batch.
    """
    weight = batch.weight.double()
    atom_w = (weight * batch.has_forces.double())[batch.batch]  # [N]
    return torch.stack([weight.sum(), 3.0 * atom_w.sum()])


def penalty(x: torch.Tensor, huber_delta: float | None = None) -> torch.Tensor:
    """Elementwise ``x**2``; with ``huber_delta``, twice the Huber loss: ``x**2`` for ``|x| <= delta``,
    ``2 delta |x| - delta**2`` beyond, so the loss weights mean the same below delta."""
    if huber_delta is None:
        return x**2
    return 2.0 * F.huber_loss(x, torch.zeros_like(x), reduction="none", delta=huber_delta)


def squared_errors(pred: dict[str, torch.Tensor], batch: Batch,
                   huber_delta: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted sums of squared errors (or of :func:`penalty`) over the batch, in the forces' dtype.

    The energy error is taken in float64 (totals of -33 keV) and divided by the atom count
    before it is cast. Frames with ``has_forces`` False add nothing to the force sum.

    Returns:
        ``sum_b w_b (dE_b / N_b)^2`` in (eV/atom)^2 and ``sum_i w_b(i) |dF_i|^2`` in (eV/A)^2,
        both scalars; with ``huber_delta`` (eV/atom and eV/A), :func:`penalty` in place of the
        squares, per energy and per force component.
    """
    dtype = pred["forces"].dtype
    weight = batch.weight.to(dtype)  # [B]
    de = ((pred["energy"] - batch.energy) / batch.natoms).to(dtype)  # [B] eV/atom
    atom_w = (weight * batch.has_forces.to(dtype))[batch.batch].unsqueeze(1)  # [N, 1]
    df = pred["forces"] - batch.forces.to(dtype)  # [N, 3]
    return (weight * penalty(de, huber_delta)).sum(), (atom_w * penalty(df, huber_delta)).sum()


def energy_force_loss(
    pred: dict[str, torch.Tensor],
    batch: Batch,
    energy_weight: float,
    force_weight: float,
    denominators: torch.Tensor | None = None,
    huber_delta: float | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``energy_weight * MSE(E/N) + force_weight * MSE(F)``, each frame weighted by ``batch.weight``.

    Args:
        pred: ``energy`` [B] eV (float64) and ``forces`` [N, 3] eV/Angstrom.
        batch: reference ``energy`` [B], ``forces`` [N, 3], ``natoms`` [B],
            ``has_forces`` [B], ``weight`` [B], ``batch`` [N].
        denominators: [2] from :func:`loss_denominators`, summed over a larger (global)
            batch; default: this batch's own.
        huber_delta: the loss means :func:`penalty` with this delta instead of squares (as
            MACE's Huber loss); the reported terms stay MSEs.

    Returns:
        ``(loss, terms)`` with the scalar loss and its unweighted ``energy`` and ``force`` MSEs.
    """
    if denominators is None:
        denominators = loss_denominators(batch)
    e_denom, f_denom = (float(d) for d in denominators)

    def means(energy_sum: torch.Tensor, force_sum: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return energy_sum / e_denom, force_sum / f_denom if f_denom > 0 else force_sum.new_zeros(())

    energy_mse, force_mse = means(*squared_errors(pred, batch))
    energy_term, force_term = (energy_mse, force_mse) if huber_delta is None else \
        means(*squared_errors(pred, batch, huber_delta))
    loss = energy_weight * energy_term + force_weight * force_term
    return loss, {"energy": energy_mse.detach(), "force": force_mse.detach()}


class ValidationLoss:
    """:func:`energy_force_loss` over a whole data set, batch by batch (float64 sums).

    Pass :meth:`add` as ``on_batch`` to :func:`pbcgnn.evaluation.predict.predict`; :meth:`value`
    is then the loss of all its frames, as if they formed one batch.
    """

    def __init__(self, energy_weight: float, force_weight: float) -> None:
        self.energy_weight, self.force_weight = energy_weight, force_weight
        self.sums = torch.zeros(4, dtype=torch.float64)  # energy SSE, force SSE, their denominators

    def add(self, pred: dict[str, torch.Tensor], batch: Batch) -> None:
        sse = torch.stack([s.detach().double() for s in squared_errors(pred, batch)])
        self.sums += torch.cat([sse, loss_denominators(batch)]).cpu()

    def value(self) -> float:
        e_sse, f_sse, e_denom, f_denom = self.sums.tolist()
        force = f_sse / f_denom if f_denom > 0 else 0.0
        return self.energy_weight * e_sse / e_denom + self.force_weight * force
