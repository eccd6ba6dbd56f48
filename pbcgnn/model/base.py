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

from ..neighbors import edge_vectors, mirror_pairs, spatial_order

__all__ = ["EnergyModel", "SPATIAL_ORDER_MIN_ATOMS"]

#: From this many atoms (all frames together) a model relabels atoms in Morton order
#: internally (:func:`pbcgnn.neighbors.spatial_order`); [N, F] features then exceed the CPU cache.
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
