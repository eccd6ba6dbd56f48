"""The contract every pbcgnn architecture meets: per-atom energies from a periodic PyG graph.

An architecture subclasses :class:`EnergyModel` and supplies :meth:`EnergyModel.edge_energies`
(per-atom energies from atomic numbers and edge vectors) and :meth:`EnergyModel.atomic_energies_plain`
(the same function, TorchScript-able, for :mod:`pbcgnn.export`). Everything else is shared:
edge vectors from the graph's integer image shifts (so autograd reaches positions and cell:
forces and stress by :func:`pbcgnn.model.compute_properties`), one edge per mirror pair,
space-filling-curve order for large systems, the float64 energy sum, and the attribute names
that training, transfer and freezing rely on (``embedding``, ``interactions``, ``lin1``,
``lin2``, ``reference``, ``cutoff``, ``hparams``).
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch_geometric.data import Data
from torch_geometric.utils import scatter

from ..neighbors import edge_vectors, mirror_pairs

__all__ = ["EnergyModel", "SPATIAL_ORDER_MIN_ATOMS", "spatial_order"]

#: From this many atoms (all frames together) a model relabels atoms in Morton order
#: internally (:func:`spatial_order`); [N, F] features then exceed the CPU cache.
SPATIAL_ORDER_MIN_ATOMS = 8192


class EnergyModel(torch.nn.Module):
    """Base of the architectures: graph in, float64 energies out.

    Subclasses set ``cutoff`` (float, Angstrom), ``embedding`` (whose weight dtype is the
    network's), ``interactions``, ``lin1``/``lin2`` (the readout; ``lin2``'s output times
    ``reference.scale`` is the atomic energy) and ``reference``
    (:class:`pbcgnn.model.AtomicReference`), and implement :meth:`edge_energies`.
    """

    __jit_unused_properties__ = ["hparams"]  # a plain dict: not for TorchScript

    #: The name ``pbcgnn train --model`` and checkpoints use for the architecture.
    architecture = "base"

    @property
    def hparams(self) -> dict:
        """Constructor arguments as plain types: ``type(model)(**model.hparams)`` rebuilds it."""
        raise NotImplementedError

    def edge_energies(self, z: Tensor, edge_index: Tensor, vec: Tensor, symmetric: bool) -> Tensor:
        """Per-atom energies [N] float64 eV from atomic numbers [N] and edge vectors [E, 3].

        ``edge_index`` [2, E] has rows (j, i) = (neighbour, centre) and ``vec = pos[j] - pos[i] +
        shift``; with ``symmetric`` it holds one edge per mirror pair and each edge stands for both.
        """
        raise NotImplementedError

    def atomic_energies(
        self,
        z: Tensor,
        pos: Tensor,
        edge_index: Tensor,
        cell_offsets: Tensor,
        cell: Tensor,
        batch: Tensor | None = None,
    ) -> Tensor:
        """Per-atom energies [N] float64 in eV; arguments as in :meth:`forward`."""
        dtype = self.embedding.weight.dtype
        cell = cell.reshape(-1, 3, 3)
        if batch is None:
            if cell.shape[0] != 1:
                raise ValueError(f"{type(self).__name__}: batch is required for {cell.shape[0]} cells")
            batch = torch.zeros_like(z)
        pairs = mirror_pairs(edge_index, cell_offsets)  # [E/2] one edge per mirror pair, or None
        symmetric = pairs is not None
        if symmetric:
            edge_index, cell_offsets = edge_index[:, pairs], cell_offsets[pairs]
        inverse = None
        if z.shape[0] >= SPATIAL_ORDER_MIN_ATOMS:  # relabel atoms in space-filling-curve order
            order = spatial_order(pos, cell, batch)  # [N]
            inverse = torch.empty_like(order)
            inverse[order] = torch.arange(order.numel(), device=order.device)
            z, pos, batch, edge_index = z[order], pos[order], batch[order], inverse[edge_index]
            by_centre = torch.argsort(edge_index[1], stable=True)  # chunks of edges around one place
            edge_index, cell_offsets = edge_index[:, by_centre], cell_offsets[by_centre]
        # Cast at the boundary; .to() is differentiable, so float64 pos/cell still get gradients.
        vec = edge_vectors(pos.to(dtype), edge_index, cell_offsets, cell.to(dtype), batch)  # [E, 3]
        energies = self.edge_energies(z, edge_index, vec, symmetric)  # [N] float64 eV
        return energies if inverse is None else energies[inverse]  # in the caller's atom order

    def within_cutoff(self, edge_index: Tensor, vec: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The edges [2, E'] shorter than the cutoff, their vectors [E', 3] and lengths [E'] (Angstrom)."""
        d = torch.linalg.vector_norm(vec, dim=-1)  # [E] Angstrom
        inside = d < self.envelope.cutoff.to(d.dtype)  # [E]; beyond: exactly zero message and gradient
        if not bool(inside.all()):
            keep = inside.nonzero().squeeze(1)
            edge_index, vec, d = edge_index[:, keep], vec[keep], d[keep]
        return edge_index, vec, d

    @torch.jit.unused  # TorchScript uses atomic_energies_plain()
    def forward(
        self,
        z: Tensor,
        pos: Tensor,
        edge_index: Tensor,
        cell_offsets: Tensor,
        cell: Tensor,
        batch: Tensor | None = None,
        num_graphs: int | None = None,
    ) -> Tensor:
        """Total energy per frame.

        Args:
            z: [N] int64 atomic numbers.
            pos: [N, 3] positions, Angstrom (any float dtype).
            edge_index: [2, E] int64, rows (j, i) = (neighbour, centre).
            cell_offsets: [E, 3] integer image shifts.
            cell: [B, 3, 3] lattice vectors as rows, Angstrom (zeros for non-periodic frames).
            batch: [N] int64 frame index per atom; None for a single frame.
            num_graphs: B; defaults to the number of cells.

        Returns:
            [B] float64 total energies, eV.
        """
        energies = self.atomic_energies(z, pos, edge_index, cell_offsets, cell, batch)  # [N]
        if num_graphs is None:
            num_graphs = cell.reshape(-1, 3, 3).shape[0]
        index = torch.zeros_like(z) if batch is None else batch
        return scatter(energies, index, dim=0, dim_size=num_graphs, reduce="sum")  # [B]

    def forward_data(self, data: Data) -> Tensor:
        """:meth:`forward` on a PyG ``Data`` (one frame) or ``Batch``; returns [B] float64 eV."""
        return self(data.z, data.pos, data.edge_index, data.cell_offsets, data.cell, data.batch)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.hparams.items())


def spatial_order(
    pos: torch.Tensor, cell: torch.Tensor, batch: torch.Tensor | None = None, bin_width: float = 3.0
) -> torch.Tensor:
    """A permutation of the atoms that puts spatial neighbours close together in memory.

    Atoms are binned on a grid of ``bin_width`` (wrapped into the cell when it has volume,
    else over their bounding box) and sorted by the Morton (Z-order) code of their bin,
    frame by frame. Gathering neighbour features then touches a few cache-sized blocks
    instead of rows scattered over the whole array: energy and forces of 10^5 atoms get
    ~25 % faster on a CPU. Any order gives the same physics; this is only about memory.

    Args:
        pos: [N, 3] Angstrom.
        cell: [B, 3, 3] (or [3, 3]) lattice vectors as rows (zeros: no cell).
        batch: [N] frame index per atom (None: one frame).
        bin_width: bin edge in Angstrom.

    Returns:
        [N] int64 ``order``: ``pos[order]`` is the sorted array (frames stay contiguous and in order).
    """
    pos = pos.detach().to(torch.float64)
    cell = cell.detach().reshape(-1, 3, 3).to(pos)
    n = pos.shape[0]
    if batch is None:
        batch = torch.zeros(n, dtype=torch.long, device=pos.device)
    volume = torch.linalg.det(cell).abs()  # [B]
    has_cell = (volume > 1e-6)[batch]  # [N]
    safe = torch.where((volume > 1e-6).view(-1, 1, 1), cell, torch.eye(3, dtype=pos.dtype, device=pos.device))
    frac = torch.bmm(pos.unsqueeze(1), torch.linalg.inv(safe)[batch]).squeeze(1)  # [N, 3]
    frac = frac - torch.floor(frac)
    lengths = torch.linalg.norm(safe, dim=2)[batch]  # [N, 3] Angstrom
    box = torch.where(has_cell.unsqueeze(1), frac * lengths, pos - pos.min(dim=0).values)  # [N, 3] >= 0
    frames = int(batch.max()) + 1 if n else 1
    bits = max(1, min(20, (62 - frames.bit_length()) // 3))
    bins = torch.clamp(torch.floor(box / bin_width).long(), 0, 2**bits - 1)  # [N, 3]
    code = torch.zeros(n, dtype=torch.long, device=pos.device)
    for bit in range(bits):
        for axis in range(3):
            code |= ((bins[:, axis] >> bit) & 1) << (3 * bit + axis)
    return torch.argsort(batch * 2 ** (3 * bits) + code, stable=True)
