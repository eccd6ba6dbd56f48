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

Both lists are symmetric: with every edge ``(j, i, S)`` they hold its mirror
``(i, j, -S)``, which has the same length. :func:`mirror_pairs` checks this and picks
one edge per pair, so a model can evaluate functions of the distance once per pair.

Before building, both estimate the edge count from the density (:func:`estimate_edges`) and
refuse a cutoff whose list would not fit in the memory available (:func:`check_list_memory`),
instead of growing until the operating system kills the process.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from matscipy.neighbours import neighbour_list as _matscipy_neighbour_list

from .device import available_memory
from .errors import InputError

__all__ = ["neighbor_list", "radius_graph_pbc", "edge_vectors", "mirror_pairs", "estimate_edges",
           "check_list_memory", "BYTES_PER_EDGE", "STORED_BYTES_PER_EDGE"]

#: Peak bytes per edge of building a list and its graph, measured: matscipy ~60 B (int32 i, j,
#: S and its growing buffers), torch-cluster ~250 B (candidates, int64 indices, float64 image
#: shifts); then int64 ``edge_index`` and ``cell_offsets`` (40 B) and graph.py's float64 overlap
#: check (~100 B). Training needs several times more per edge, so a list refused at this rate
#: could never have been used.
BYTES_PER_EDGE = 256
#: Bytes per edge of a list kept in a dataset: int64 ``edge_index`` and ``cell_offsets`` (40 B),
#: twice, as collating a dataset copies every frame's list once.
STORED_BYTES_PER_EDGE = 80
#: Lists smaller than this are built without asking the system for its free memory.
_SMALL_LIST_BYTES = 1 << 26


def estimate_edges(
    positions: np.ndarray | torch.Tensor | None, cell: np.ndarray, pbc: np.ndarray, cutoff: float, natoms: int
) -> float:
    """Expected number of edges: ``N * (4/3 pi rc^3) * N / V``, every periodic image included.

    Along a non-periodic direction the atoms' extent (plus 1 A) replaces the cell, and the
    sphere (taken as a cube of the same volume) is clipped to that extent, so a molecule never
    has more than ``N^2`` edges. Exact on average for a uniform density; a real structure is
    within a small factor of it.

    Args:
        positions: [N, 3] Angstrom (numpy or torch on any device); only read when a direction is
            not periodic, may be None otherwise.
        cell: [3, 3] lattice vectors as rows, Angstrom.
        pbc: [3] bool.
        cutoff: radius in Angstrom.
        natoms: N.
    """
    cell = np.asarray(cell, dtype=np.float64).reshape(3, 3)
    pbc = np.asarray(pbc, dtype=bool).reshape(3)
    periodic = cell[pbc]  # [k, 3]
    side = (4.0 / 3.0 * math.pi) ** (1.0 / 3.0) * cutoff  # cube with the sphere's volume
    if pbc.all():
        measure, spans = abs(float(np.linalg.det(cell))), np.zeros(0)
    else:
        measure = float(np.sqrt(abs(np.linalg.det(periodic @ periodic.T)))) if len(periodic) else 1.0
        # orthonormal directions perpendicular to the periodic vectors: [3, 3 - k]
        free = np.linalg.qr(periodic.T, mode="complete")[0][:, len(periodic):] if len(periodic) else np.eye(3)
        if isinstance(positions, torch.Tensor):
            proj = positions.detach().to(torch.float64) @ torch.as_tensor(free, device=positions.device)
            spans = (proj.amax(0) - proj.amin(0)).cpu().numpy() if natoms else np.zeros(free.shape[1])
        else:
            proj = np.asarray(positions, dtype=np.float64).reshape(-1, 3) @ free
            spans = np.ptp(proj, axis=0) if natoms else np.zeros(free.shape[1])
        spans = spans + 1.0  # a plane or line of atoms still takes up room
    if measure <= 1e-12:
        return float(natoms) ** 2
    volume = measure * float(np.prod(spans))
    clipped = side ** len(periodic) * float(np.prod(np.minimum(side, spans)))
    return float(natoms) * float(natoms) * clipped / volume


def check_list_memory(
    edges: float, cutoff: float, natoms: int, device: str | torch.device = "cpu", bytes_per_edge: int = BYTES_PER_EDGE,
    name: str = "cutoff",
) -> None:
    """Refuse a neighbour list of about ``edges`` edges that would not fit in ``device``'s free memory.

    Args:
        edges: the estimate (:func:`estimate_edges`; summed over frames for a dataset).
        cutoff: radius in Angstrom (for the message).
        natoms: atoms the edges belong to (for the message).
        device: where the list is built.
        bytes_per_edge: :data:`BYTES_PER_EDGE` to build one list, :data:`STORED_BYTES_PER_EDGE`
            for the lists a dataset keeps.
        name: what the radius is called where the user gave it (``"--r-max"`` for the RDF).

    Raises:
        InputError: with the estimate, the memory it needs and what is free.
    """
    need = edges * bytes_per_edge
    if need < _SMALL_LIST_BYTES:
        return
    free = available_memory(device)
    if free is None or need <= free:
        return
    raise InputError(
        f"expected a neighbour list that fits in memory ({free / 2**30:.3g} GiB free), found about {edges:.3g} "
        f"edges ({edges / max(natoms, 1):.3g} neighbours per atom, images included) for {name} {cutoff:g} A, "
        f"needing ~{need / 2**30:.3g} GiB: use a smaller {name}"
    )


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


def _wrap(positions: np.ndarray, cell: np.ndarray, box: np.ndarray, pbc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(positions wrapped into the cell along periodic directions, [N, 3] int64 lattice vectors taken
    off)``; ``box`` is :func:`_finite_box`'s. matscipy's cost grows with how far atoms lie outside the
    cell (a second per build at 1e8 A, as in MD that blew up)."""
    wrap = np.zeros(positions.shape)
    if pbc.any() and np.array_equal(box[pbc], cell[pbc]):
        wrap = np.where(pbc, np.floor(positions @ np.linalg.inv(box)), 0.0)  # [N, 3]
    # atoms already in the cell: the very same input as before
    return (positions - wrap @ box if wrap.any() else positions), wrap.astype(np.int64)


def neighbor_list(
    positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float, name: str = "cutoff"
) -> tuple[np.ndarray, np.ndarray]:
    """All pairs closer than ``cutoff``, over every periodic image (matscipy, on wrapped positions).

    Args:
        positions: [N, 3] Angstrom; need not be wrapped into the cell.
        cell: [3, 3] lattice vectors as rows, Angstrom (ignored along non-periodic directions).
        pbc: [3] bool periodicity per lattice direction.
        cutoff: radius in Angstrom.
        name: what ``cutoff`` is called where the user gave it, for the memory error.

    Returns:
        edge_index: [2, E] int64, rows (j, i), sorted by centre i.
        cell_offsets: [E, 3] int64 image shifts S with vec = pos[j] - pos[i] + S @ cell.

    Raises:
        InputError: the list would not fit in the free memory (see :func:`check_list_memory`).
    """
    positions = np.ascontiguousarray(positions, dtype=np.float64)
    pbc = np.asarray(pbc, dtype=bool).reshape(3)
    cell = np.asarray(cell, dtype=np.float64).reshape(3, 3)
    check_list_memory(estimate_edges(positions, cell, pbc, cutoff, len(positions)), cutoff, len(positions),
                      name=name)
    wrapped, wrap = _wrap(positions, cell, _finite_box(positions, cell, pbc, cutoff), pbc)
    box = _finite_box(wrapped, cell, pbc, cutoff)
    i, j, shifts = _matscipy_neighbour_list(
        "ijS", positions=wrapped, cell=box, pbc=pbc, cutoff=float(cutoff)
    )
    edge_index = np.stack([j, i]).astype(np.int64)  # [2, E]
    # wrapped = positions - wrap @ cell, so S = S' - wrap[j] + wrap[i] for the given positions
    return edge_index, shifts.astype(np.int64) - wrap[j] + wrap[i]  # [E, 3]


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
        frac_w = frac - wrap  # [N, 3] in [0, 1) along periodic directions
        reach = _image_range(cell64, pbc, cutoff)
        ranges = [torch.arange(-m, m + 1, device=pos.device) for m in reach]
        images = torch.cartesian_prod(*ranges).to(dtype)  # [I, 3]
        # Keep an image atom only if it lies within the cutoff of every face plane of the cell
        # it was shifted across (a necessary condition for being within the cutoff of any atom
        # in the cell), so a large box replicates a thin shell, not 27 copies of itself.
        spacing = 1.0 / torch.linalg.norm(torch.linalg.inv(cell64), dim=0)  # [3] Angstrom
        shifted = frac_w.unsqueeze(0) + images.unsqueeze(1)  # [I, N, 3] fractional
        outside = torch.clamp(torch.maximum(shifted - 1.0, -shifted), min=0.0)  # [I, N, 3]
        near = ((outside * spacing) < cutoff).all(dim=2)  # [I, N]
        image_id, atom_id = near.nonzero(as_tuple=True)  # candidates, image-major
    else:
        cell64 = torch.zeros(3, 3, dtype=dtype, device=pos.device)
        wrap = torch.zeros(n, 3, dtype=dtype, device=pos.device)
        pos_w = pos64
        images = torch.zeros(1, 3, dtype=dtype, device=pos.device)
        image_id = torch.zeros(n, dtype=torch.long, device=pos.device)
        atom_id = torch.arange(n, device=pos.device)
    # Candidate neighbours: the atoms of the cell and the images near it, [M, 3].
    cand = pos_w[atom_id] + images[image_id] @ cell64
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
    j = atom_id[nb]
    image = images[image_id[nb]]
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

    Raises:
        InputError: the list would not fit in the free memory (see :func:`check_list_memory`).
    """
    cell = cell.reshape(-1, 3, 3)
    pbc = pbc.reshape(-1, 3).to(torch.bool)
    if batch is None:
        batch = torch.zeros(pos.shape[0], dtype=torch.long, device=pos.device)
    counts = torch.bincount(batch, minlength=cell.shape[0]).tolist()
    cells, periodic, starts = cell.detach().double().cpu().numpy(), pbc.cpu().numpy(), np.cumsum([0] + counts)
    total = sum(estimate_edges(None if periodic[b].all() else pos[starts[b]:starts[b] + n], cells[b], periodic[b],
                               cutoff, n) for b, n in enumerate(counts))
    check_list_memory(total, cutoff, pos.shape[0], pos.device)
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


def mirror_pairs(edge_index: torch.Tensor, cell_offsets: torch.Tensor) -> torch.Tensor | None:
    """One edge of every mirror pair, if the list is symmetric; else None.

    An edge ``(j, i, S)`` and its mirror ``(i, j, -S)`` have opposite vectors, so the same
    distance. Of each pair this keeps the *canonical* edge: ``i < j``, or ``i == j`` (an
    atom and its own image) with the first non-zero component of ``S`` positive. The list
    is symmetric when the mirrored non-canonical edges are exactly the canonical ones (as
    multisets); this is checked by sorting integer keys, O(E log E) on the tensors' device.

    Args:
        edge_index: [2, E] int64, rows (j, i).
        cell_offsets: [E, 3] integer image shifts.

    Returns:
        [E / 2] int64 indices of the canonical edges in their original order, or None when
        some edge has no mirror (a list built by other means; use every edge then).
    """
    num_edges = edge_index.shape[1]
    if num_edges % 2:
        return None
    if num_edges == 0:
        return torch.zeros(0, dtype=torch.long, device=edge_index.device)
    j, i = edge_index[0], edge_index[1]
    low, high = torch.aminmax(cell_offsets)
    reach = max(int(high), -int(low))
    width = 2 * reach + 1  # shift components lie in [-reach, reach]
    nodes = int(edge_index.max()) + 1
    if float(nodes) ** 2 * float(width) ** 3 >= 2.0**62 or width**3 >= 2**31:
        return None  # keys would overflow int64; treat as unpaired (never for real systems)
    s0, s1, s2 = (cell_offsets.to(torch.int32) + reach).unbind(1)  # [E] each, in [0, width)
    code = (s0 * width + s1) * width + s2  # [E] int32; the mirror's code is width^3 - 1 - code
    positive = (s0 > reach) | ((s0 == reach) & ((s1 > reach) | ((s1 == reach) & (s2 > reach))))
    canonical = (i < j) | ((i == j) & positive)  # [E] bool
    first = canonical.nonzero().squeeze(1)  # [E/2] if symmetric
    if 2 * first.numel() != num_edges:
        return None
    # Key of each edge in its canonical orientation (centre, neighbour, shift): a mirror pair
    # shares one key, so the list is symmetric iff both halves hold the same multiset of keys.
    centre = torch.where(canonical, i, j)
    neighbour = torch.where(canonical, j, i)
    code = torch.where(canonical, code, width**3 - 1 - code)
    key = (centre * nodes + neighbour) * width**3 + code  # [E] int64
    mine, theirs = key[first], key[~canonical]
    if not torch.equal(torch.sort(mine).values, torch.sort(theirs).values):
        return None
    return first

