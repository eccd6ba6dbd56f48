"""SchNet energy model: embedding -> interactions -> atomwise MLP -> float64 scatter-add energy."""
from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import Embedding, Linear, ModuleList

from ..config import ModelConfig
from .aggregate import Aggregation, NetworkFilter, select
from .base import SPATIAL_ORDER_MIN_ATOMS, EnergyModel
from .cfconv import InteractionBlock, shifted_softplus
from .radial import CosineCutoff, GaussianRBF
from .reference import AtomicReference

__all__ = ["SchNet", "SPATIAL_ORDER_MIN_ATOMS"]

_DEFAULT = ModelConfig()  # the one set of default sizes


class SchNet(EnergyModel):
    r"""SchNet for periodic systems (Schuett et al., J. Chem. Phys. 148, 241722 (2018)).

    .. math::
        \mathbf{h}^{0}_i = \mathrm{Emb}(Z_i), \qquad
        \mathbf{h}^{t+1}_i = \mathbf{h}^{t}_i + \mathrm{Interaction}_t(\mathbf{h}^{t}, d)_i,

        E = \sum_i \left( s\, \mathrm{MLP}(\mathbf{h}^{T}_i) + E_0[Z_i] \right)

    Distances come from the graph's integer image shifts, ``d_ji = |pos[j] - pos[i] +
    cell_offsets @ cell|`` (:mod:`pbcgnn.neighbors`), recomputed here so autograd reaches
    positions and cell (forces, stress: :func:`pbcgnn.model.compute_properties`). Every
    edge the graph holds is used (no neighbour cap); the graph must be built with a cutoff
    of at least ``cutoff``. Edges beyond it contribute exactly zero and are dropped before
    the filters, so a list built with a Verlet skin costs little more than a fresh one.

    Speed without changing the function (results equal to float rounding): for a symmetric
    edge list (every edge with its mirror, as pbcgnn's neighbour lists are; checked by
    :func:`pbcgnn.neighbors.mirror_pairs`) distances, basis and filters are computed once
    per pair and each pair carries both messages; in eval mode the convolutions run in edge
    chunks with filters recomputed in the backward pass, so forces need ~250 bytes per edge;
    train mode evaluates the filter networks on a distance grid (5 mA) and interpolates
    them per edge in fused kernels with closed-form second derivatives, ~1e-7 relative of the
    exact filters (:meth:`aggregation`, :class:`pbcgnn.model.aggregate.GridSum`). From :data:`SPATIAL_ORDER_MIN_ATOMS` atoms the atoms are relabelled internally
    along a space-filling curve for cache locality; outputs keep the caller's order.

    dtype: the network runs in its parameters' dtype (float32 by default; ``.double()``
    for tests); ``pos`` and ``cell`` are cast inside :meth:`forward`, so gradients still
    reach float64 inputs. Atomic energies ``s y_i + E_0[Z_i]`` and their sum are float64
    (:class:`AtomicReference`).

    TorchScript (:mod:`pbcgnn.export`): ``torch.jit.script`` compiles
    :meth:`atomic_energies_plain`, the same function on one frame's edge vectors.

    Defaults are :class:`pbcgnn.config.ModelConfig`'s, as for a model trained from the CLI.

    Args:
        hidden_channels: atom feature size.
        num_filters: width of the continuous-filter convolutions.
        num_interactions: number of interaction blocks.
        num_rbf: number of Gaussians in the radial basis.
        cutoff: interaction cutoff in Angstrom.
        max_z: largest atomic number the embedding accepts.
    """

    architecture = "schnet"

    def __init__(
        self,
        hidden_channels: int = _DEFAULT.hidden_channels,
        num_filters: int = _DEFAULT.num_filters,
        num_interactions: int = _DEFAULT.num_interactions,
        num_rbf: int = _DEFAULT.num_rbf,
        cutoff: float = _DEFAULT.cutoff,
        max_z: int = 118,
    ) -> None:
        super().__init__()
        if hidden_channels < 2 or num_filters < 1 or num_interactions < 1 or cutoff <= 0:
            raise ValueError(
                "SchNet: expected hidden_channels >= 2, num_filters >= 1, num_interactions >= 1 "
                f"and cutoff > 0, found {hidden_channels}, {num_filters}, {num_interactions}, {cutoff}"
            )
        self.hidden_channels = int(hidden_channels)
        self.num_filters = int(num_filters)
        self.num_interactions = int(num_interactions)
        self.num_rbf = int(num_rbf)
        self.cutoff = float(cutoff)  # plain float for graph building; the envelope holds a buffer
        self.max_z = int(max_z)
        self.embedding = Embedding(max_z + 1, hidden_channels)
        self.rbf = GaussianRBF(num_rbf, cutoff)
        self.envelope = CosineCutoff(cutoff)
        self.interactions = ModuleList(
            InteractionBlock(hidden_channels, num_rbf, num_filters) for _ in range(num_interactions)
        )
        self.lin1 = Linear(hidden_channels, hidden_channels // 2)
        self.lin2 = Linear(hidden_channels // 2, 1)
        self.reference = AtomicReference(max_z)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Re-draw all weights. The fitted reference (e0, scale) is data, not weights: kept."""
        self.embedding.reset_parameters()
        for block in self.interactions:
            block.reset_parameters()
        torch.nn.init.xavier_uniform_(self.lin1.weight)
        torch.nn.init.zeros_(self.lin1.bias)
        # Zero readout: an untrained model predicts exactly the fitted reference (E0) energies,
        # instead of adding ~scale eV of noise per atom that training must first remove.
        torch.nn.init.zeros_(self.lin2.weight)
        torch.nn.init.zeros_(self.lin2.bias)

    @property
    def hparams(self) -> dict:
        """Constructor arguments as plain types: ``SchNet(**model.hparams)`` rebuilds the model."""
        return {
            "hidden_channels": self.hidden_channels,
            "num_filters": self.num_filters,
            "num_interactions": self.num_interactions,
            "num_rbf": self.num_rbf,
            "cutoff": self.cutoff,
            "max_z": self.max_z,
        }

    def edge_energies(self, z: Tensor, edge_index: Tensor, vec: Tensor, symmetric: bool) -> Tensor:
        """Per-atom energies [N] float64 eV from edge vectors; see :meth:`EnergyModel.edge_energies`."""
        edge_index, _, d = self.within_cutoff(edge_index, vec)  # [2, E'], [E'] Angstrom
        h = self.interact(self.embedding(z), edge_index, d, symmetric)  # [N, H]
        return self.reference(self.readout(h), z)  # [N] float64 eV

    @torch.jit.export
    def atomic_energies_plain(self, z: Tensor, edge_index: Tensor, vec: Tensor) -> Tensor:
        """:meth:`atomic_energies` [N] float64 eV of one frame, TorchScript-able, for exported models.

        The same layers and weights, with every convolution summed by ``index_add``
        (:meth:`pbcgnn.model.cfconv.CFConv.plain`): equal to :meth:`atomic_energies` to float
        rounding. Edges beyond the cutoff are dropped, so a list with a skin is fine.

        Args:
            z: [N] int64 atomic numbers.
            edge_index: [2, E] int64, rows (j, i) = (neighbour, centre), both edges of every pair.
            vec: [E, 3] edge vectors ``pos[j] - pos[i] + shift @ cell`` in Angstrom, in the
                parameters' dtype (gradients reach positions and cell through them).
        """
        edge_index, _, d = self.within_cutoff(edge_index, vec)  # [2, E'], [E']
        edge_rbf, edge_cutoff = self.radial(d)  # [E', K], [E']
        h = self.embedding(z)  # [N, H]
        for block in self.interactions:
            h = h + block.plain(h, edge_index, edge_rbf, edge_cutoff)
        return self.reference(self.readout(h), z)  # [N] float64 eV

    def readout(self, h: Tensor) -> Tensor:
        """The atomwise MLP: features [N, H] -> network outputs ``y`` [N] (before scale and E0)."""
        return self.lin2(shifted_softplus(self.lin1(h))).squeeze(-1)

    def radial(self, d: Tensor) -> tuple[Tensor, Tensor]:
        """The filters' inputs at edge lengths ``d`` [E] (Angstrom): radial basis [E, K], envelope [E]."""
        return self.rbf(d), self.envelope(d)

    def aggregation(self) -> Aggregation:
        """How the interactions sum their messages now: :func:`pbcgnn.model.aggregate.select` for the
        filter network in the current mode (through a grid in training, chunked in eval)."""
        return select(NetworkFilter(self.radial, self.cutoff), self.training)

    def interact(self, h: Tensor, edge_index: Tensor, d: Tensor, symmetric: bool) -> Tensor:
        """The interaction blocks: ``h`` [N, H] -> [N, H] given edges [2, E] of length ``d`` [E].

        The filters' per-edge inputs (``aggregation.edge_attr``) are computed once and shared by
        all blocks: the lengths alone for the grid (training) and the chunks (eval), so nothing
        of size [E, K] is kept; the radial basis and envelope for plain autograd.
        """
        aggregation = self.aggregation()
        edge_attr = aggregation.edge_attr(d)
        for block in self.interactions:
            h = h + block(h, edge_index, edge_attr, symmetric, aggregation)
        return h
