"""ASE calculator: energy, forces and stress of a pbcgnn model for one ase.Atoms."""
from __future__ import annotations

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from .graph import atoms_to_graph
from .model.derivatives import compute_properties

__all__ = ["PbcgnnCalculator"]


class PbcgnnCalculator(Calculator):
    r"""Energy, forces and stress from a pbcgnn energy model (e.g. :class:`pbcgnn.model.SchNet`).

    The model gives the total energy :math:`E` (eV) of the frame. Forces are
    :math:`\mathbf{F}_i = -\partial E/\partial \mathbf{r}_i` and the stress is
    :math:`\sigma = V^{-1}\,\partial E/\partial \varepsilon` (ASE sign: positive when
    tensile), both from one autograd pass (:func:`pbcgnn.model.compute_properties`), so they
    are exact derivatives of the energy and conserve it in NVE. Because the model's cutoff
    envelope takes value and slope to zero at the cutoff, forces stay continuous when
    neighbours cross it, unlike a merely shifted pair potential.

    Stress is returned (Voigt order xx yy zz yz xz xy, eV/Angstrom^3) only for a cell that
    is periodic in all three directions; asking for it otherwise raises ASE's
    ``PropertyNotImplementedError``. ``free_energy`` equals ``energy`` (no electronic
    entropy). The neighbour list is rebuilt from scratch on every call.

    Args:
        model: energy model with a ``cutoff`` attribute (Angstrom) and SchNet's
            ``forward`` signature; moved to ``device``, its dtype is kept.
        device: torch device to evaluate on.
        **kwargs: passed to :class:`ase.calculators.calculator.Calculator`.
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, model: torch.nn.Module, device: str | torch.device = "cpu", **kwargs) -> None:
        super().__init__(**kwargs)
        self.device = torch.device(device)
        self.model = model.to(self.device)

    def calculate(
        self,
        atoms: Atoms | None = None,
        properties: list[str] | tuple[str, ...] = ("energy",),
        system_changes: list[str] = all_changes,
    ) -> None:
        super().calculate(atoms, properties, system_changes)  # self.atoms = a copy of atoms
        periodic_3d = bool(np.all(self.atoms.pbc))
        want_stress = "stress" in properties and periodic_3d
        data = atoms_to_graph(self.atoms, self.model.cutoff).to(self.device)
        out = compute_properties(self.model, data, forces=True, stress=want_stress)
        energy = float(out["energy"].sum())
        self.results = {
            "energy": energy,
            "free_energy": energy,
            "forces": out["forces"].detach().cpu().numpy().astype(np.float64),
        }
        if want_stress:
            stress = out["stress"][0].detach().cpu().numpy().astype(np.float64)  # [3, 3]
            self.results["stress"] = full_3x3_to_voigt_6_stress(stress)  # [6]
