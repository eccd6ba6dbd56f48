"""ASE calculator: energy, forces and stress of a pbcgnn model, with a Verlet-skin neighbour list."""
from __future__ import annotations

import logging
import os

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from ase.stress import full_3x3_to_voigt_6_stress
from torch_geometric.data import Data

from .checkpoint import load_checkpoint
from .errors import InputError
from .graph import MIN_DISTANCE, _where, atoms_to_graph
from .io.checks import check_supported
from .model.derivatives import compute_properties
from .model.tabulate import tabulate as make_table
from .neighbors import radius_graph_pbc

__all__ = ["PbcgnnCalculator"]

log = logging.getLogger(__name__)


class PbcgnnCalculator(Calculator):
    r"""Energy, forces and stress from a pbcgnn energy model (e.g. :class:`pbcgnn.model.SchNet`).

    The model gives the total energy :math:`E` (eV) of the frame. Forces are
    :math:`\mathbf{F}_i = -\partial E/\partial \mathbf{r}_i` and the stress is
    :math:`\sigma = V^{-1}\,\partial E/\partial \varepsilon` (ASE sign: positive when
    tensile), both from one autograd pass (:func:`pbcgnn.model.compute_properties`), so they
    are exact derivatives of the energy and conserve it in NVE. Because the model's cutoff
    envelope takes value and slope to zero at the cutoff :math:`r_c`, forces stay continuous
    when neighbours cross it, unlike a merely shifted pair potential.

    Neighbour list with a Verlet skin: the list is built for :math:`r_c + \mathrm{skin}` and
    reused while every atom stays within :math:`\mathrm{skin}/2` of where it was at the build
    (then no pair outside :math:`r_c + \mathrm{skin}` can have come within :math:`r_c`). Edges
    between :math:`r_c` and :math:`r_c + \mathrm{skin}` contribute exactly zero (the envelope is
    0 there and so is its derivative), so results equal those of a fresh list up to the order
    of floating-point sums. The list is rebuilt when an atom moved more than ``skin/2``, or the
    cell, the atomic numbers or the periodicity changed (with ``lists`` > 1, when none of the
    kept lists fits). An atom moved by a whole lattice
    vector (wrapped back into the box, as OpenMM may do) is mapped back onto its image near
    the reference, which changes neither energy nor forces, so wrapping alone costs no rebuild.
    On CPU the list comes from :func:`pbcgnn.graph.atoms_to_graph` (matscipy, with the dataset's
    checks); on CUDA from :func:`pbcgnn.neighbors.radius_graph_pbc`, so positions are binned on
    the device.

    Checks (:class:`pbcgnn.errors.InputError`, naming the frame's source when known): elements
    outside ``elements``, a frame without a 3-D periodic cell when ``periodic`` is set, at
    every rebuild, two atoms closer than ``MIN_DISTANCE``, and a NaN or inf energy or force.

    Stress is returned (Voigt order xx yy zz yz xz xy, eV/Angstrom^3) only for a cell that
    is periodic in all three directions; asking for it otherwise raises ASE's
    ``PropertyNotImplementedError``. Once asked for, it is computed with every evaluation (the
    same autograd pass), so NPT integrators that ask for forces and then stress cost one
    evaluation per step. ``free_energy`` equals ``energy`` (no electronic entropy).

    Committees (a model with ``committee_properties``, e.g. :class:`pbcgnn.model.Committee`):
    energy, forces and stress are the members' means, and ``results`` also holds the spread:
    ``energy_std`` (eV) and ``forces_std`` ([N, 3] eV/Angstrom) as calibrated uncertainties
    (the committee's :class:`pbcgnn.model.calibration.Calibration`, fitted when it was trained or
    by ``pbcgnn calibrate``; a checkpoint without one gives the raw spread), the members' raw
    sample std as ``energy_std_raw`` and ``forces_std_raw``, and the members' ``energies`` [M] eV.

    Args:
        model: energy model with a ``cutoff`` attribute (Angstrom) and SchNet's
            ``forward`` signature; moved to ``device``, its dtype is kept.
        device: torch device to evaluate on.
        skin: Verlet skin in Angstrom (0 rebuilds the list on every call).
        elements: atomic numbers the model was trained on (``None``: no check).
        periodic: require a cell periodic in all three directions (models trained on
            periodic frames know nothing of surfaces or vacuum).
        min_distance: atoms closer than this (Angstrom) raise :class:`InputError`.
        lists: neighbour lists kept; a structure uses the first one it fits, so alternating
            structures (the beads of a ring polymer) each keep their own list.
        **kwargs: passed to :class:`ase.calculators.calculator.Calculator`.
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(
        self,
        model: torch.nn.Module,
        device: str | torch.device = "cpu",
        skin: float = 1.0,
        elements: list[int] | None = None,
        periodic: bool = False,
        min_distance: float = MIN_DISTANCE,
        lists: int = 1,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if skin < 0 or lists < 1:
            raise ValueError(f"PbcgnnCalculator: expected skin >= 0 Angstrom and lists >= 1, found {skin}, {lists}")
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.skin = float(skin)
        self.elements = None if elements is None else sorted(int(z) for z in elements)
        self.periodic = bool(periodic)
        self.min_distance = float(min_distance)
        self.rebuilds = 0  #: neighbour-list builds so far
        self.evaluations = 0  #: model evaluations so far
        self.lists = int(lists)
        self._list: dict | None = None  # the list of the current evaluation
        self._lists: list[dict] = []  # the kept lists, newest first
        self._stress_wanted = False

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike,
        device: str | torch.device = "cpu",
        dtype: str | None = None,
        skin: float = 1.0,
        tabulate: bool = True,
        **kwargs,
    ) -> PbcgnnCalculator:
        """A calculator for a trained checkpoint (``best.pt``/``last.pt``).

        Args:
            path: the checkpoint.
            device: torch device.
            dtype: ``"float32"``/``"float64"`` to override the trained dtype (float64 for
                long NVE runs).
            skin: Verlet skin, Angstrom.
            tabulate: evaluate the distance-only filters from precomputed cubic Hermite cells
                (:func:`pbcgnn.model.tabulate.tabulate`: tables for SchNet, the grid cells of
                its training path for PaiNN, a committee member by member), equal to the exact
                model within float32 rounding and several times faster; False: the filter
                networks at every edge.
            **kwargs: passed to the constructor.

        The checked elements are those of the training set (``checkpoint["elements"]``).
        The checkpoint's ``periodic`` entry (default True: pbcgnn trains on periodic frames)
        decides whether a frame without a cell is refused.
        """
        model, ckpt = load_checkpoint(path, device=device, dtype=dtype)
        if tabulate:
            model = make_table(model)
        kwargs.setdefault("elements", ckpt.get("elements"))
        kwargs.setdefault("periodic", bool(ckpt.get("periodic", True)))
        return cls(model, device=device, skin=skin, **kwargs)

    @property
    def cutoff(self) -> float:
        """Model cutoff in Angstrom."""
        return float(self.model.cutoff)

    def reset(self) -> None:
        super().reset()
        self._list, self._lists = None, []

    # ------------------------------------------------------------------ checks
    def _check_frame(self, atoms: Atoms) -> None:
        check_supported(atoms, self.elements, self.periodic)  # the same check as `pbcgnn eval`

    def _check_finite(self, energy: float, forces: torch.Tensor) -> None:
        """Refuse a NaN or inf energy or force: the integrator would carry it into the positions."""
        if not (np.isfinite(energy) and bool(torch.isfinite(forces).all())):
            raise InputError(f"expected a finite energy and forces from the model, found energy {energy:.4g} eV"
                             f"{'' if bool(torch.isfinite(forces).all()) else ' and non-finite forces'}",
                             **_where(self.atoms, None))

    # ------------------------------------------------------------ neighbours
    def _edges_on_device(self, atoms: Atoms, pos: torch.Tensor, radius: float) -> tuple[torch.Tensor, torch.Tensor]:
        """radius_graph_pbc on the device, with the host path's checks (finite, overlap)."""
        where = _where(atoms, None)
        if not bool(torch.isfinite(pos).all()):
            raise InputError("expected finite positions and cell, found NaN or inf", **where)
        cell = torch.as_tensor(atoms.cell.array, device=self.device)
        edge_index, offsets = radius_graph_pbc(pos, cell, torch.as_tensor(atoms.pbc, device=self.device), radius)
        if edge_index.shape[1]:
            dist = torch.linalg.vector_norm(pos[edge_index[0]] - pos[edge_index[1]] + offsets.double() @ cell, dim=1)
            k = int(torch.argmin(dist))
            if float(dist[k]) < self.min_distance:
                raise InputError(f"atoms {int(edge_index[1, k])} and {int(edge_index[0, k])} overlap: distance "
                                 f"{float(dist[k]):.3g} A, expected >= {self.min_distance} A", **where)
        return edge_index, offsets

    def _build(self, atoms: Atoms, pos: torch.Tensor) -> None:
        """Neighbour list at cutoff + skin around ``atoms.positions`` (``pos`` [N, 3] on the device)."""
        self._check_frame(atoms)
        radius = self.cutoff + self.skin
        if self.device.type == "cuda":
            edge_index, offsets = self._edges_on_device(atoms, pos, radius)
        else:  # the dataset's graph builder: the same checks (finite, singular cell, overlap)
            graph = atoms_to_graph(atoms, radius, min_distance=self.min_distance)
            edge_index, offsets = graph.edge_index, graph.cell_offsets
        cell = np.array(atoms.cell.array, dtype=np.float64)
        cell_t = torch.as_tensor(cell, device=self.device)
        periodic = bool(atoms.pbc.any()) and abs(np.linalg.det(cell)) > 1e-6
        self._list = {
            "edge_index": edge_index.to(self.device),  # [2, E] int64
            "cell_offsets": offsets.to(self.device),  # [E, 3] int64
            "ref_pos": pos.clone(),  # [N, 3] Angstrom at the build
            "cell": cell,  # [3, 3]
            "cell_t": cell_t.reshape(1, 3, 3),  # [1, 3, 3]
            "inv_cell": torch.linalg.inv(cell_t) if periodic else None,
            "pbc": np.array(atoms.pbc, dtype=bool),
            "pbc_t": torch.as_tensor(atoms.pbc, device=self.device),
            "numbers": np.array(atoms.numbers),
            "z": torch.as_tensor(atoms.numbers, dtype=torch.long, device=self.device),
        }
        self._lists = [self._list, *self._lists][: self.lists]
        self.rebuilds += 1
        log.debug("neighbour list rebuilt (%d edges within %.2f A)", edge_index.shape[1], radius)

    def _match(self, nl: dict, atoms: Atoms, pos: torch.Tensor) -> torch.Tensor | None:
        """``pos`` mapped onto the images the list ``nl`` was built for, or None when ``nl``
        does not hold every pair within the cutoff of ``atoms``."""
        if (self.skin == 0.0 or not np.array_equal(nl["numbers"], atoms.numbers)
                or not np.array_equal(nl["pbc"], atoms.pbc) or not np.array_equal(nl["cell"], atoms.cell.array)):
            return None
        mapped = pos
        disp = pos - nl["ref_pos"]  # [N, 3]
        if nl["inv_cell"] is not None:  # undo whole-lattice-vector jumps (wrapping)
            jumps = torch.round(disp @ nl["inv_cell"]) * nl["pbc_t"]  # [N, 3] integers
            if bool(jumps.any()):
                mapped = pos - jumps @ nl["cell_t"][0]
                disp = mapped - nl["ref_pos"]
        return mapped if float(torch.linalg.vector_norm(disp, dim=1).max()) <= 0.5 * self.skin else None

    def _positions(self, atoms: Atoms) -> torch.Tensor:
        """Positions [N, 3] (float64, on the device) for which ``self._list`` is valid, after
        building a list if none of the kept ones is."""
        pos = torch.as_tensor(np.asarray(atoms.positions, dtype=np.float64), device=self.device)
        for nl in self._lists:
            mapped = self._match(nl, atoms, pos)
            if mapped is not None:
                self._list = nl
                return mapped
        self._build(atoms, pos)
        return pos

    # ------------------------------------------------------------ ASE contract
    def calculate(
        self,
        atoms: Atoms | None = None,
        properties: list[str] | tuple[str, ...] = ("energy",),
        system_changes: list[str] = all_changes,
    ) -> None:
        super().calculate(atoms, properties, system_changes)  # self.atoms = a copy of atoms
        pos = self._positions(self.atoms)
        nl = self._list
        # Once stress is asked for (NPT asks every step, after the forces), compute it with
        # every evaluation: the same autograd pass, so no second evaluation per step.
        self._stress_wanted = self._stress_wanted or "stress" in properties
        want_stress = self._stress_wanted and bool(np.all(self.atoms.pbc))
        data = Data(z=nl["z"], pos=pos, edge_index=nl["edge_index"], cell_offsets=nl["cell_offsets"],
                    cell=nl["cell_t"])
        committee = hasattr(self.model, "committee_properties")
        if committee:  # each member differentiated once: mean and spread from the same passes
            out = self.model.committee_properties(data, forces=True, stress=want_stress)
        else:
            out = compute_properties(self.model, data, forces=True, stress=want_stress)
        self.evaluations += 1
        energy = float(out["energy"].sum())
        self._check_finite(energy, out["forces"])
        self.results = {
            "energy": energy,
            "free_energy": energy,
            "forces": out["forces"].detach().cpu().numpy().astype(np.float64),
        }
        if want_stress:
            stress = out["stress"][0].detach().cpu().numpy().astype(np.float64)  # [3, 3]
            self.results["stress"] = full_3x3_to_voigt_6_stress(stress)  # [6]
        if committee:
            for key in ("energy_std", "energy_std_raw"):
                self.results[key] = float(out[key][0])
            for key in ("forces_std", "forces_std_raw"):
                self.results[key] = out[key].detach().cpu().numpy().astype(np.float64)
            self.results["energies"] = out["energies"][:, 0].detach().cpu().numpy().astype(np.float64)
