"""Periodic neighbour lists and the edge-direction convention of pbcgnn.

Convention (one formula, used everywhere)::

    edge_index[0] = j   (the neighbour; PyG "source")
    edge_index[1] = i   (the centre;    PyG "target", where messages aggregate)
    vec_ij = pos[j] - pos[i] + cell_offsets @ cell      # [E, 3], Angstrom

``cell_offsets`` are integer image shifts (rows multiply the lattice vectors,
which are the rows of ``cell``). Every periodic image within the cutoff is an
edge, so a cutoff longer than half the box gives several edges between the same
two atoms, and edges from an atom to its own images. Only the true self-pair
(``i == j`` with zero shift) is excluded; never filter by ``distance != 0``.

Two builders follow this convention and agree edge for edge:

* :func:`neighbor_list` -- matscipy's linked-cell list on the host (numpy), used
  to build datasets; O(N).
* :func:`radius_graph_pbc` -- torch-cluster on the tensors' device, for GPU MD
  and on-the-fly graphs, so positions never leave the device.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from matscipy.neighbours import neighbour_list as _matscipy_neighbour_list

__all__ = ["neighbor_list", "radius_graph_pbc", "edge_vectors"]


def _finite_box(positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float) -> np.ndarray:
    """A copy of ``cell`` whose non-periodic, degenerate directions are replaced by a box
    larger than the atoms' extent, so matscipy can bin them (it inverts the cell)."""
    cell = np.array(cell, dtype=np.float64, copy=True)
    if np.all(pbc) or abs(np.linalg.det(cell)) > 1e-12:
        return cell
    extent = 2.0 * (np.abs(positions).max(initial=0.0) + cutoff) + 1.0
    for k in range(3):
        if not pbc[k]:
            cell[k] = 0.0
            cell[k, k] = extent
    if abs(np.linalg.det(cell)) < 1e-12:
        # Periodic vectors not orthogonal to the padded axes: fall back to an orthogonal box.
        cell = np.diag([extent if not p else np.linalg.norm(v) for p, v in zip(pbc, cell)])
    return cell


def neighbor_list(
    positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float
) -> tuple[np.ndarray, np.ndarray]:
    """All pairs closer than ``cutoff``, over every periodic image (matscipy).

    Args:
        positions: [N, 3] Angstrom; need not be wrapped into the cell.
        cell: [3, 3] lattice vectors as rows, Angstrom (ignored along non-periodic directions).
        pbc: [3] bool periodicity per lattice direction.
        cutoff: radius in Angstrom.

    Returns:
        edge_index: [2, E] int64, rows (j, i), sorted by centre i.
        cell_offsets: [E, 3] int64 image shifts S with vec = pos[j] - pos[i] + S @ cell.
    """
    positions = np.ascontiguousarray(positions, dtype=np.float64)
    pbc = np.asarray(pbc, dtype=bool).reshape(3)
    box = _finite_box(positions, np.asarray(cell, dtype=np.float64).reshape(3, 3), pbc, cutoff)
    i, j, shifts = _matscipy_neighbour_list(
        "ijS", positions=positions, cell=box, pbc=pbc, cutoff=float(cutoff)
    )
    edge_index = np.stack([j, i]).astype(np.int64)  # [2, E]
    return edge_index, shifts.astype(np.int64)  # [E, 3]


def _image_range(cell: torch.Tensor, pbc: torch.Tensor, cutoff: float) -> list[int]:
    """Images needed per direction: ceil(cutoff / spacing of the lattice planes)."""
    inv = torch.linalg.inv(cell.double())  # columns are reciprocal vectors (without 2 pi)
    spacing = 1.0 / torch.linalg.norm(inv, dim=0)  # [3] Angstrom between lattice planes
    return [int(math.ceil(cutoff / float(h))) if p else 0 for h, p in zip(spacing, pbc.tolist())]


def _radius_graph_one(pos: torch.Tensor, cell: torch.Tensor, pbc: torch.Tensor, cutoff: float):
    from torch_cluster import radius

    n = pos.shape[0]
    dtype = torch.float64
    pos64 = pos.to(dtype)
    periodic = bool(pbc.any())
    if periodic:
        cell64 = cell.to(dtype)
        frac = pos64 @ torch.linalg.inv(cell64)  # [N, 3]
        wrap = torch.where(pbc, torch.floor(frac), torch.zeros_like(frac))  # [N, 3]
        pos_w = pos64 - wrap @ cell64  # wrapped into the cell along periodic directions
        ranges = [torch.arange(-m, m + 1, device=pos.device) for m in _image_range(cell64, pbc, cutoff)]
        images = torch.cartesian_prod(*ranges).to(dtype)  # [I, 3]
    else:
        cell64 = torch.zeros(3, 3, dtype=dtype, device=pos.device)
        wrap = torch.zeros(n, 3, dtype=dtype, device=pos.device)
        pos_w = pos64
        images = torch.zeros(1, 3, dtype=dtype, device=pos.device)
    # Candidate neighbours: every atom in every image box, [I * N, 3].
    cand = (pos_w.unsqueeze(0) + (images @ cell64).unsqueeze(1)).reshape(-1, 3)
    # Bound the neighbour count from the density, then grow it until nothing is cut off.
    volume = abs(float(torch.linalg.det(cell64))) if periodic and bool(pbc.all()) else 0.0
    density = n / volume if volume > 0 else n / (4.0 / 3.0 * math.pi * cutoff**3)
    max_nb = min(cand.shape[0], int(2.0 * density * 4.0 / 3.0 * math.pi * cutoff**3) + 64)
    while True:
        centre, nb = radius(cand, pos_w, cutoff, max_num_neighbors=max_nb)  # y index, x index
        most = int(torch.bincount(centre, minlength=n).max()) if centre.numel() else 0
        if most < max_nb or max_nb >= cand.shape[0]:
            break
        max_nb = min(cand.shape[0], 2 * max_nb)
    j = nb % n
    image = images[torch.div(nb, n, rounding_mode="floor")]
    # pos_w = pos - wrap @ cell, so shift S = image - wrap[j] + wrap[i] in unwrapped coordinates.
    offsets = (image - wrap[j] + wrap[centre]).round().long()
    keep = ~((j == centre) & (offsets == 0).all(dim=1))  # drop only the true self-pair
    j, centre, offsets = j[keep], centre[keep], offsets[keep]
    order = torch.argsort(centre * n + j, stable=True)
    return torch.stack([j[order], centre[order]]), offsets[order]


def radius_graph_pbc(
    pos: torch.Tensor,
    cell: torch.Tensor,
    pbc: torch.Tensor,
    cutoff: float,
    batch: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The same list as :func:`neighbor_list`, built with torch-cluster on ``pos.device``.

    Args:
        pos: [N, 3] Angstrom.
        cell: [B, 3, 3] (or [3, 3]) lattice vectors as rows, Angstrom.
        pbc: [B, 3] (or [3]) bool.
        cutoff: radius in Angstrom.
        batch: [N] int64 graph index of each atom, or None for one graph.

    Returns:
        edge_index: [2, E] int64 (j, i) in global atom numbering, sorted by centre i.
        cell_offsets: [E, 3] int64.
    """
    cell = cell.reshape(-1, 3, 3)
    pbc = pbc.reshape(-1, 3).to(torch.bool)
    if batch is None:
        batch = torch.zeros(pos.shape[0], dtype=torch.long, device=pos.device)
    counts = torch.bincount(batch, minlength=cell.shape[0]).tolist()
    edges, offsets, start = [], [], 0
    for b, n in enumerate(counts):
        e, s = _radius_graph_one(pos[start : start + n], cell[b], pbc[b], cutoff)
        edges.append(e + start)
        offsets.append(s)
        start += n
    return torch.cat(edges, dim=1), torch.cat(offsets, dim=0)


def edge_vectors(
    pos: torch.Tensor,
    edge_index: torch.Tensor,
    cell_offsets: torch.Tensor,
    cell: torch.Tensor,
    batch: torch.Tensor | None = None,
) -> torch.Tensor:
    """``vec = pos[j] - pos[i] + cell_offsets @ cell[batch[i]]``, differentiable in pos and cell.

    Args:
        pos: [N, 3] Angstrom.
        edge_index: [2, E] int64, rows (j, i).
        cell_offsets: [E, 3] integer image shifts.
        cell: [B, 3, 3] (or [3, 3]) Angstrom.
        batch: [N] graph index per atom (None: one graph).

    Returns:
        [E, 3] edge vectors in Angstrom, dtype of ``pos``.
    """
    j, i = edge_index[0], edge_index[1]
    cell = cell.reshape(-1, 3, 3).to(pos.dtype)
    offsets = cell_offsets.to(pos.dtype)
    if cell.shape[0] == 1:
        shift = offsets @ cell[0]  # [E, 3]
    else:  # [E, 1, 3] @ [E, 3, 3] -> [E, 3]
        shift = torch.bmm(offsets.unsqueeze(1), cell[batch[i]]).squeeze(1)
    return pos[j] - pos[i] + shift
