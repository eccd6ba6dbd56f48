"""The energy of pbcgnn models as a metatomic ``ModelInterface`` (TorchScript), for :mod:`pbcgnn.export`.

metatomic is optional (``pip install 'pbcgnn[metatomic]'``): only :mod:`pbcgnn.export` imports
this module, inside a function. No ``from __future__ import annotations`` here: metatomic
checks ``forward``'s annotations as typing objects (``List[System]``, ...).
"""
from typing import Dict, List, Optional, Tuple

import torch
from metatensor.torch import Labels, TensorBlock, TensorMap
from metatomic.torch import ModelOutput, NeighborListOptions, System
from torch import Tensor
from torch.nn import Module, ModuleList

from .model.calibration import power_law, scale_members, spread_ratio

__all__ = ["EnergyModel"]


class EnergyModel(Module):
    r"""Total energy, per-atom energies and the committee ensemble of pbcgnn models for metatomic engines.

    Every member is a :class:`pbcgnn.model.EnergyModel` (SchNet, PaiNN) evaluated by
    its ``atomic_energies_plain`` (its own layers and weights, sums by
    ``index_add``) on the engine's full neighbour list; the energy is

    .. math::
        E = \frac{1}{M} \sum_m \sum_{i \in \mathrm{selected}} \left(s_m\, y_{m,i} + E_{0,m}[Z_i]\right)

    summed in float64 and returned in the model's dtype. Forces and stress are the engine's
    autograd derivatives through the neighbour vectors (``pos[j] - pos[i] + shift @ cell``).
    With ``selected_atoms`` (domain decomposition: LAMMPS ghosts) only the selected atoms'
    energies are summed; all atoms are neighbours.

    Outputs: ``"energy"`` (the members' mean; per system or per atom) and, for more than one
    member, ``"energy_ensemble"`` (one property per member) and ``"energy_uncertainty"`` (per
    system). Both carry the committee's energy calibration
    (:mod:`pbcgnn.model.calibration`): with :math:`s` the members' sample std of the summed
    energy and :math:`n` the atoms summed, the uncertainty is :math:`n\, a\, (s / n)^b` eV, and
    the ensemble's members are moved away from their mean by its ratio to :math:`s` (per atom
    too), so engines that compute the spread themselves (i-PI) get the calibrated one.

    Args:
        members: the models (one, or a committee's members), all with the same cutoff, in
            the export dtype.
        energy_calibration: ``(a, b)`` of the energy-per-atom power law (default: the identity).

    Shapes:
        - **input:** ``systems`` with the neighbour list :meth:`requested_neighbor_lists`
          asks for (samples ``first_atom``, ``second_atom``, cell shifts; values [E, 3, 1] Angstrom)
        - **output:** ``TensorMap`` per output, one block: values [S, P] per system or
          [n_atoms, P] per atom (P = 1, or M for the ensemble), eV
    """

    def __init__(self, members: List[Module], energy_calibration: Tuple[float, float] = (1.0, 1.0)) -> None:
        super().__init__()
        self.members = ModuleList(members)
        self.calibration_a = float(energy_calibration[0])
        self.calibration_b = float(energy_calibration[1])
        self.cutoff = float(members[0].cutoff)  # Angstrom
        self.neighbors = NeighborListOptions(cutoff=self.cutoff, full_list=True, strict=False)

    def requested_neighbor_lists(self) -> List[NeighborListOptions]:
        """One full list at the cutoff; pairs beyond it (a Verlet skin) are dropped by the model."""
        return [self.neighbors]

    def forward(
        self, systems: List[System], outputs: Dict[str, ModelOutput], selected_atoms: Optional[Labels] = None
    ) -> Dict[str, TensorMap]:
        """The requested ``outputs`` (``"energy"``, ``"energy_ensemble"``, ``"energy_uncertainty"``)
        of ``systems``, eV."""
        if len(systems) == 0:
            raise ValueError("pbcgnn: expected at least one system")
        energies: List[Tensor] = []  # per system [M, N_s] float64 eV
        for system in systems:
            energies.append(self.member_energies(system))
        dtype = systems[0].positions.dtype
        results: Dict[str, TensorMap] = {}
        for name, output in outputs.items():
            per_atom = output.sample_kind == "atom"
            if name.startswith("energy_uncertainty"):
                if per_atom:
                    raise ValueError("pbcgnn: energy_uncertainty is per system, not per atom")
                stds = [self.calibrated_std(e, s, selected_atoms)[0] for s, e in enumerate(energies)]
                results[name] = _system_map(torch.stack(stds).unsqueeze(1), dtype)
                continue
            if name.startswith("energy_ensemble"):
                values: List[Tensor] = []
                for s, e in enumerate(energies):
                    std, raw = self.calibrated_std(e, s, selected_atoms)
                    values.append(scale_members(e, spread_ratio(std, raw)))
            else:
                values = [e.mean(0, keepdim=True) for e in energies]  # [1, N_s]
            results[name] = _energy_map(values, per_atom, selected_atoms, dtype)
        return results

    def calibrated_std(self, atomic: Tensor, system: int, selected_atoms: Optional[Labels]) -> Tuple[Tensor, Tensor]:
        """Calibrated and raw std (scalars, eV) of the members' energies summed over the selected
        atoms of ``system``, from atomic energies [M, N_s]."""
        atoms = _selected(atomic.shape[1], system, selected_atoms, atomic.device)
        totals = atomic[:, atoms].sum(1)  # [M]
        raw = totals.std(correction=1) if totals.shape[0] > 1 else torch.zeros_like(totals[0])
        n = float(atoms.shape[0])
        return n * power_law(raw / n, self.calibration_a, self.calibration_b), raw

    def member_energies(self, system: System) -> Tensor:
        """Atomic energies [M, N] float64 eV of every member for one system."""
        neighbors = system.get_neighbor_list(self.neighbors)
        pairs = neighbors.samples.values  # [E, 5] first_atom i, second_atom j, cell shifts
        edge_index = torch.stack([pairs[:, 1], pairs[:, 0]]).to(torch.long)  # [2, E] rows (j, i)
        vec = neighbors.values.reshape(-1, 3)  # [E, 3] Angstrom: pos[j] - pos[i] + shift @ cell
        z = system.types.to(torch.long)  # [N]
        energies: List[Tensor] = []
        for member in self.members:
            energies.append(member.atomic_energies_plain(z, edge_index, vec))
        return torch.stack(energies)  # [M, N]


def _energy_map(energies: List[Tensor], per_atom: bool, selected_atoms: Optional[Labels],
                dtype: torch.dtype) -> TensorMap:
    """A metatomic energy ``TensorMap`` from atomic energies [P, N_s] float64 of each of S >= 1 systems.

    Values [S, P] (per system: the sums over the selected atoms) or [n_atoms, P] (per atom),
    cast to ``dtype``; properties ``energy`` 0..P-1.
    """
    device = energies[0].device
    rows: List[Tensor] = []
    samples: List[Tensor] = []
    for s, atomic in enumerate(energies):
        atoms = _selected(atomic.shape[1], s, selected_atoms, device)  # [n]
        picked = atomic[:, atoms]  # [P, n]
        if per_atom:
            rows.append(picked.T)
            samples.append(torch.stack([torch.full_like(atoms, s), atoms], dim=1))
        else:
            rows.append(picked.sum(1).unsqueeze(0))
            samples.append(torch.tensor([[s]], device=device))
    count = energies[0].shape[0]
    block = TensorBlock(
        values=torch.cat(rows).to(dtype),
        samples=Labels(["system", "atom"] if per_atom else ["system"], torch.cat(samples).to(torch.int32)),
        components=[],
        properties=Labels(["energy"], torch.arange(count, dtype=torch.int32, device=device).reshape(-1, 1)),
    )
    return TensorMap(Labels(["_"], torch.zeros(1, 1, dtype=torch.int32, device=device)), [block])


def _selected(n_atoms: int, system: int, selected_atoms: Optional[Labels], device: torch.device) -> Tensor:
    """Indices [n] of the atoms of ``system`` whose energies are summed (all without a selection)."""
    if selected_atoms is None:
        return torch.arange(n_atoms, device=device)
    chosen = selected_atoms.values  # [n_selected, 2] (system, atom)
    return chosen[chosen[:, 0] == system, 1].to(torch.long)


def _system_map(values: Tensor, dtype: torch.dtype) -> TensorMap:
    """A per-system ``TensorMap`` of values [S, 1] (property ``energy`` 0), cast to ``dtype``."""
    device = values.device
    block = TensorBlock(
        values=values.to(dtype),
        samples=Labels(["system"], torch.arange(values.shape[0], dtype=torch.int32, device=device).reshape(-1, 1)),
        components=[],
        properties=Labels(["energy"], torch.zeros(1, 1, dtype=torch.int32, device=device)),
    )
    return TensorMap(Labels(["_"], torch.zeros(1, 1, dtype=torch.int32, device=device)), [block])
