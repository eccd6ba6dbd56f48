r"""A committee of energy models as one model: mean energy, forces and stress, and their spread.

A committee of M independently trained members predicts the mean :math:`\bar E = \frac1M
\sum_m E_m` (forces are then the mean member forces, exactly :math:`-\partial \bar E /
\partial \mathbf r`) and, as its uncertainty, the sample standard deviation over members
(``correction=1``) of the total energy and of every force component, mapped to a calibrated
uncertainty by the committee's :class:`pbcgnn.model.calibration.Calibration` (the identity
unless one was fitted). Per-frame spreads and the calibration's fit and scores are in
:mod:`pbcgnn.evaluation`; ranking a pool by spread in :mod:`pbcgnn.select`.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.nn import ModuleList
from torch_geometric.data import Data

from .calibration import Calibration
from .derivatives import compute_properties

__all__ = ["Committee", "committee_properties"]


class Committee(torch.nn.Module):
    """M energy models evaluated on the same graphs; ``forward`` gives their mean energy.

    It has SchNet's ``forward`` signature, so :func:`pbcgnn.model.compute_properties` and the
    evaluation code use it unchanged (mean energy, forces and stress).
    :meth:`committee_properties` adds the spread; :class:`pbcgnn.PbcgnnCalculator` calls it and
    puts ``energy_std``, ``forces_std`` (calibrated), their ``_raw`` values and ``energies``
    into ``results``.

    Args:
        members: models with a ``cutoff`` attribute (Angstrom) and SchNet's ``forward``;
            all with the same cutoff.
        calibration: maps the members' std to the reported one (default: the identity).

    Attributes:
        members: the ``ModuleList`` of models (state-dict keys ``members.K.*``).
        cutoff: the common cutoff, Angstrom.
        calibration: the :class:`Calibration` (plain values, stored in the checkpoint beside the
            weights, not in the state dict, so checkpoints without one load unchanged).
    """

    def __init__(self, members: Sequence[torch.nn.Module], calibration: Calibration | None = None) -> None:
        super().__init__()
        if len(members) < 1:
            raise ValueError("Committee: expected at least one member, found none")
        cutoffs = {float(m.cutoff) for m in members}
        if len(cutoffs) != 1:
            raise ValueError(f"Committee: expected members with one cutoff, found {sorted(cutoffs)}")
        self.members = ModuleList(members)
        self.cutoff = cutoffs.pop()
        self.calibration = calibration if calibration is not None else Calibration()

    def __len__(self) -> int:
        return len(self.members)

    def reset_parameters(self) -> None:
        """Re-draw every member's weights (their fitted references are kept)."""
        for member in self.members:
            member.reset_parameters()

    def member_energies(self, z: Tensor, pos: Tensor, edge_index: Tensor, cell_offsets: Tensor, cell: Tensor,
                        batch: Tensor | None = None, num_graphs: int | None = None) -> Tensor:
        """Energies of every member, [M, B] float64 eV; arguments as in :meth:`forward`."""
        return torch.stack([m(z, pos, edge_index, cell_offsets, cell, batch, num_graphs) for m in self.members])

    def forward(self, z: Tensor, pos: Tensor, edge_index: Tensor, cell_offsets: Tensor, cell: Tensor,
                batch: Tensor | None = None, num_graphs: int | None = None) -> Tensor:
        """Mean total energy per frame, [B] float64 eV; arguments as :meth:`pbcgnn.model.SchNet.forward`."""
        return self.member_energies(z, pos, edge_index, cell_offsets, cell, batch, num_graphs).mean(0)

    def committee_properties(self, data: Data, forces: bool = True, stress: bool = False) -> dict[str, Tensor]:
        """Mean and spread of energy, forces and stress; see :func:`committee_properties`."""
        return committee_properties(self, data, forces=forces, stress=stress)

    def extra_repr(self) -> str:
        calibrated = "" if self.calibration.is_identity else ", calibrated"
        return f"size={len(self.members)}, cutoff={self.cutoff:g}{calibrated}"


def _std(x: Tensor) -> Tensor:
    """Sample std over dim 0 (zero for one member)."""
    return x.std(0, correction=1) if x.shape[0] > 1 else torch.zeros_like(x[0])


def committee_properties(model: Committee, data: Data, forces: bool = True,
                         stress: bool = False) -> dict[str, Tensor]:
    """Mean and sample standard deviation over members of energy, forces and stress, with the
    committee's calibration applied to the energy and force spreads.

    Each member is differentiated separately (:func:`pbcgnn.model.compute_properties`);
    outputs are detached.

    Args:
        model: a :class:`Committee`.
        data: a PyG ``Data`` or ``Batch`` of periodic graphs (fields of :mod:`pbcgnn.graph`).
        forces, stress: what to compute besides the energy.

    Returns:
        ``energy``, ``energy_std`` (calibrated) and ``energy_std_raw`` [B] float64 eV, the
        members' ``energies`` [M, B]; with ``forces``: ``forces``, ``forces_std`` (calibrated)
        and ``forces_std_raw`` [N, 3] eV/Angstrom; with ``stress``: ``stress`` and ``stress_std``
        [B, 3, 3] eV/Angstrom^3 (raw: stress spreads are not calibrated).
    """
    outs = [compute_properties(m, data, forces=forces, stress=stress) for m in model.members]
    result: dict[str, Tensor] = {}
    for key in ("energy", "forces", "stress"):
        if key in outs[0]:
            stacked = torch.stack([o[key].detach() for o in outs])  # [M, ...]
            result[key] = stacked.mean(0)
            result[f"{key}_std"] = _std(stacked)
            if key == "energy":
                result["energies"] = stacked
    cal = model.calibration
    if "forces_std" in result:
        result["forces_std_raw"] = result["forces_std"]
        result["forces_std"] = cal.forces_std(result["forces_std_raw"])
    result["energy_std_raw"] = result["energy_std"]
    result["energy_std"] = cal.energy_std(result["energy_std_raw"], _natoms(data, result["energy"].shape[0]))
    return result


def _natoms(data: Data, num_graphs: int) -> Tensor:
    """Atoms per frame [B] (float64) of a ``Data`` or ``Batch``."""
    batch = getattr(data, "batch", None)
    if batch is None:
        return torch.full((num_graphs,), float(data.z.shape[0]), dtype=torch.float64, device=data.z.device)
    return torch.bincount(batch, minlength=num_graphs).to(torch.float64)
