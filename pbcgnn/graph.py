"""ase.Atoms -> torch_geometric Data: the table of graph fields, shapes, dtypes and units.

=================  ==============  =========  ==========================================
field              shape           dtype      meaning
=================  ==============  =========  ==========================================
``z``              [N]             int64      atomic numbers
``pos``            [N, 3]          float64    positions, Angstrom (as read, not wrapped)
``cell``           [1, 3, 3]       float64    lattice vectors as rows, Angstrom (0 if none)
``pbc``            [1, 3]          bool       periodic directions
``edge_index``     [2, E]          int64      rows (j, i): neighbour, centre
``cell_offsets``   [E, 3]          int64      image shifts: vec = pos[j]-pos[i]+S @ cell
``natoms``         [1]             int64      atoms in the frame
``energy``         [1]             float64    total energy, eV (labelled frames)
``forces``         [N, 3]          float64    forces, eV/Angstrom (zeros when absent)
``has_forces``     [1]             bool       whether ``forces`` is a label
``weight``         [1]             float64    per-frame loss weight (default 1)
``stress``         [1, 3, 3]       float64    stress, eV/Angstrom^3, ASE sign (when given)
=================  ==============  =========  ==========================================

Per-frame tensors keep a leading 1 so a PyG batch stacks them to [B, ...]. Graphs
store integer offsets, never distances: models recompute edge vectors from ``pos``
and ``cell`` (:func:`pbcgnn.neighbors.edge_vectors`) so autograd reaches forces
and stress. Float fields stay float64 (total energies of -33 keV need it); models
cast at their boundary.
"""
from __future__ import annotations

import numpy as np
import torch
from ase import Atoms
from ase.stress import voigt_6_to_full_3x3_stress
from torch_geometric.data import Data

from .errors import InputError
from .neighbors import edge_vectors, neighbor_list

__all__ = ["atoms_to_graph", "PeriodicInteractionGraph", "MIN_DISTANCE"]

#: Atoms closer than this (Angstrom) are rejected as overlapping.
MIN_DISTANCE = 0.3


def _where(atoms: Atoms, index: int | None) -> dict:
    """Location of a frame for error messages: from the reader's ``info``, else its index."""
    path = atoms.info.get("source_path")
    line = atoms.info.get("source_line")
    frame = atoms.info.get("source_frame", index)
    return {"path": path, "line": line, "frame": None if line is not None else frame}


def atoms_to_graph(
    atoms: Atoms,
    cutoff: float,
    *,
    index: int | None = None,
    min_distance: float = MIN_DISTANCE,
) -> Data:
    """Build the periodic radius graph of one frame.

    Args:
        atoms: a frame in eV/Angstrom; labels are taken from ``atoms.calc.results``
            (``energy``, ``forces``, ``stress``) when present.
        cutoff: neighbour radius in Angstrom.
        index: frame index, used in error messages when ``atoms.info`` has no source.
        min_distance: atoms closer than this (Angstrom) raise :class:`InputError`.

    Returns:
        A :class:`torch_geometric.data.Data` with the fields in the module docstring.
    """
    where = _where(atoms, index)
    if len(atoms) == 0:
        raise InputError("expected at least one atom, found none", **where)
    pbc = np.asarray(atoms.pbc, dtype=bool)
    cell = np.asarray(atoms.cell.array, dtype=np.float64)
    if pbc.any() and abs(np.linalg.det(cell)) < 1e-6:
        raise InputError(f"periodic frame has a singular cell (volume {atoms.cell.volume:.3g} A^3)", **where)
    pos = np.asarray(atoms.positions, dtype=np.float64)
    if not np.all(np.isfinite(pos)) or not np.all(np.isfinite(cell)):
        raise InputError("expected finite positions and cell, found NaN or inf", **where)

    try:
        edge_index, offsets = neighbor_list(pos, cell, pbc, cutoff)
    except InputError as err:  # e.g. a cutoff whose list would not fit in memory: say which frame
        raise InputError(err.reason, **where) from None
    if edge_index.shape[1]:
        vec = pos[edge_index[0]] - pos[edge_index[1]] + offsets @ cell
        dist = np.linalg.norm(vec, axis=1)
        k = int(np.argmin(dist))
        if dist[k] < min_distance:
            i, j = int(edge_index[1, k]), int(edge_index[0, k])
            raise InputError(
                f"atoms {i} and {j} overlap: distance {dist[k]:.3g} A, expected >= {min_distance} A",
                **where,
            )

    data = Data(
        z=torch.as_tensor(atoms.numbers, dtype=torch.long),
        pos=torch.as_tensor(pos),
        cell=torch.as_tensor(cell).unsqueeze(0),
        pbc=torch.as_tensor(pbc).unsqueeze(0),
        edge_index=torch.as_tensor(edge_index),
        cell_offsets=torch.as_tensor(offsets),
        natoms=torch.tensor([len(atoms)]),
        weight=torch.tensor([float(atoms.info.get("weight", 1.0))], dtype=torch.float64),
    )
    results = atoms.calc.results if atoms.calc is not None else {}
    if "energy" in results:
        data.energy = torch.tensor([float(results["energy"])], dtype=torch.float64)
    forces = results.get("forces")
    data.has_forces = torch.tensor([forces is not None])
    data.forces = torch.as_tensor(
        np.zeros((len(atoms), 3)) if forces is None else np.asarray(forces, dtype=np.float64)
    )
    if results.get("stress") is not None:
        stress = np.asarray(results["stress"], dtype=np.float64)
        stress = voigt_6_to_full_3x3_stress(stress) if stress.shape == (6,) else stress
        data.stress = torch.as_tensor(stress).reshape(1, 3, 3)
    return data


class PeriodicInteractionGraph(torch.nn.Module):
    """Hands pbcgnn's periodic edges to PyG models that take an ``interaction_graph``.

    :class:`torch_geometric.nn.models.SchNet` calls ``interaction_graph(pos, batch)``
    and expects ``(edge_index, edge_weight)``; it has no notion of a cell. This module
    is bound to a batch (call :meth:`bind` before each forward) and returns that batch's
    periodic edges with distances recomputed from ``pos``, so gradients flow::

        graph = PeriodicInteractionGraph()
        model = torch_geometric.nn.models.SchNet(cutoff=6.0, interaction_graph=graph)
        for batch in loader:
            energy = model(batch.z, graph.bind(batch).pos, batch.batch)
    """

    def __init__(self) -> None:
        super().__init__()
        self._data: Data | None = None

    def bind(self, data: Data) -> Data:
        """Use ``data``'s edges for the next call; returns ``data`` for chaining."""
        self._data = data
        return data

    def forward(self, pos: torch.Tensor, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self._data is None:
            raise RuntimeError("PeriodicInteractionGraph: call bind(data) before the model's forward")
        d = self._data
        vec = edge_vectors(pos, d.edge_index, d.cell_offsets, d.cell, batch)
        return d.edge_index, vec.norm(dim=-1)
