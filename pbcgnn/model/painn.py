"""PaiNN: equivariant message passing with scalar and vector features (Schuett et al., ICML 2021)."""
from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn import Embedding, Linear, ModuleList
from torch_geometric.nn import MessagePassing

from .base import EnergyModel
from .painn_grid import FilterGrid, filter_cells, grid_message
from .radial import BesselRBF, CosineCutoff
from .reference import AtomicReference

__all__ = ["PaiNN", "PaiNNMessage", "PaiNNUpdate", "PaiNNInteraction"]

def _reset(*layers: Linear) -> None:
    for lin in layers:
        torch.nn.init.xavier_uniform_(lin.weight)
        if lin.bias is not None:
            torch.nn.init.zeros_(lin.bias)


class PaiNNMessage(MessagePassing):
    r"""PaiNN's message block (eqs. 7-8 of `"Equivariant message passing for the prediction of
    tensorial properties and molecular spectra" <https://arxiv.org/abs/2102.03150>`_).

    .. math::
        \Delta s_i = \sum_{j} \phi_s(s_j) \circ \mathcal{W}_s(d_{ij}), \qquad
        \Delta \vec v_i = \sum_{j} \vec v_j \circ \phi_{vv}(s_j) \circ \mathcal{W}_{vv}(d_{ij})
        + \phi_{vs}(s_j) \circ \mathcal{W}_{vs}(d_{ij}) \, \frac{\vec r_{ij}}{d_{ij}}

    with :math:`\phi` = Linear -> SiLU -> Linear (F -> 3F) and the filter :math:`\mathcal{W}`
    = Linear(radial basis) times the cosine envelope (3F). :math:`\vec r_{ij}` points from the
    centre :math:`i` = ``edge_index[1]`` to the neighbour :math:`j` = ``edge_index[0]``. The
    filters are computed by the model (one matrix product for all blocks) and passed in.

    The per-atom parts are formed before the gather, so each edge multiplies a packed
    [5F] row (:meth:`features`) by its filter once (:meth:`message`).

    Args:
        channels: feature size :math:`F`.
        num_rbf: size :math:`K` of the radial basis the filter reads.

    Shapes:
        - **input:** scalars :math:`(|\mathcal{V}|, F)`, vectors :math:`(|\mathcal{V}|, 3, F)`,
          edge indices :math:`(2, |\mathcal{E}|)`, filters :math:`(|\mathcal{E}|, 3F)`, unit
          vectors :math:`(|\mathcal{E}|, 3)`
        - **output:** :math:`\Delta s` :math:`(|\mathcal{V}|, F)`, :math:`\Delta \vec v`
          :math:`(|\mathcal{V}|, 3, F)`
    """

    propagate_type: ClassVar[dict[str, type]] = {"x": Tensor, "W": Tensor, "u": Tensor}

    def __init__(self, channels: int, num_rbf: int) -> None:
        super().__init__(aggr="add")
        self.channels = channels
        self.phi1 = Linear(channels, channels)
        self.phi2 = Linear(channels, 3 * channels)
        self.filter = Linear(num_rbf, 3 * channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        _reset(self.phi1, self.phi2, self.filter)

    def features(self, s: Tensor, v: Tensor) -> Tensor:
        """Per-atom rows [N, 5F]: :math:`\\phi_s(s)`, :math:`\\phi_{vs}(s)`, :math:`\\vec v \\circ \\phi_{vv}(s)`."""
        n, f = s.shape[0], self.channels
        x = self.phi2(F.silu(self.phi1(s)))  # [N, 3F]
        vv = v * x[:, 2 * f:].unsqueeze(1)  # [N, 3, F]
        return torch.cat([x[:, : 2 * f], vv.reshape(n, 3 * f)], dim=1)

    def message(self, x_j: Tensor, W: Tensor, u: Tensor) -> Tensor:
        """Rows [E, 4F] (scalar part, then the three vector components) from gathered features [E, 5F]."""
        e, f = x_j.shape[0], self.channels
        ds = x_j[:, :f] * W[:, :f]  # [E, F]
        radial = (x_j[:, f:2 * f] * W[:, f:2 * f]).unsqueeze(1) * u.unsqueeze(2)  # [E, 3, F]
        dv = x_j[:, 2 * f:].reshape(e, 3, f) * W[:, 2 * f:].unsqueeze(1) + radial  # [E, 3, F]
        return torch.cat([ds, dv.reshape(e, 3 * f)], dim=1)

    @torch.jit.unused  # PyG's propagate is plain Python here; TorchScript uses plain()
    def forward(self, s: Tensor, v: Tensor, edge_index: Tensor, W: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
        """``(Delta s [N, F], Delta v [N, 3, F])``; edge_index [2, E] rows (j, i), W [E, 3F], u [E, 3]."""
        out = self.propagate(edge_index, x=self.features(s, v), W=W, u=u, size=(s.shape[0], s.shape[0]))
        return self._split(out)

    def plain(self, s: Tensor, v: Tensor, edge_index: Tensor, W: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
        """:meth:`forward` with the sum by ``index_add`` (TorchScript-able, for exported models)."""
        x = self.features(s, v)
        rows = self.message(x.index_select(0, edge_index[0]), W, u)  # [E, 4F]
        out = torch.zeros(s.shape[0], rows.shape[1], dtype=rows.dtype, device=rows.device)
        return self._split(out.index_add_(0, edge_index[1], rows))

    def _split(self, out: Tensor) -> tuple[Tensor, Tensor]:
        f = self.channels
        return out[:, :f], out[:, f:].reshape(out.shape[0], 3, f)


class PaiNNUpdate(torch.nn.Module):
    r"""PaiNN's update block (eqs. 9-11): atom-wise mixing of scalar and vector channels.

    .. math::
        \vec u = U \vec v, \quad \vec w = V \vec v, \quad
        (a_{vv}, a_{sv}, a_{ss}) = \mathrm{MLP}\left(s, \lVert \vec w \rVert\right),

        \Delta \vec v = a_{vv} \circ \vec u, \qquad
        \Delta s = a_{sv} \circ \langle \vec u, \vec w \rangle + a_{ss}

    :math:`U, V` act on the feature index only (no bias), so vectors stay vectors; the norm is
    :math:`\sqrt{\sum_\alpha w_\alpha^2 + \epsilon}` (:math:`\epsilon` = 1e-8), smooth where
    :math:`\vec w = 0`.

    Shapes:
        - **input:** :math:`s` :math:`(|\mathcal{V}|, F)`, :math:`\vec v` :math:`(|\mathcal{V}|, 3, F)`
        - **output:** :math:`\Delta s`, :math:`\Delta \vec v` of the same shapes
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.U = Linear(channels, channels, bias=False)
        self.V = Linear(channels, channels, bias=False)
        self.mlp1 = Linear(2 * channels, channels)
        self.mlp2 = Linear(channels, 3 * channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _reset(self.U, self.V, self.mlp1, self.mlp2)

    def forward(self, s: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        f = self.channels
        uv, wv = self.U(v), self.V(v)  # [N, 3, F] each
        norm = torch.sqrt(wv.square().sum(1) + 1e-8)  # [N, F]; eps keeps d/dw finite at w = 0
        a = self.mlp2(F.silu(self.mlp1(torch.cat([s, norm], dim=1))))  # [N, 3F]
        ds = a[:, f:2 * f] * (uv * wv).sum(1) + a[:, 2 * f:]  # [N, F]
        return ds, a[:, :f].unsqueeze(1) * uv


class PaiNNInteraction(torch.nn.Module):
    """One PaiNN layer: message then update, each added to the features (freeze group ``interactions:I``)."""

    def __init__(self, channels: int, num_rbf: int) -> None:
        super().__init__()
        self.message = PaiNNMessage(channels, num_rbf)
        self.update = PaiNNUpdate(channels)

    def reset_parameters(self) -> None:
        self.message.reset_parameters()
        self.update.reset_parameters()

    @torch.jit.unused  # TorchScript uses plain()
    def forward(self, s: Tensor, v: Tensor, edge_index: Tensor, W: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
        ds, dv = self.message(s, v, edge_index, W, u)
        return self._update(s + ds, v + dv)

    def plain(self, s: Tensor, v: Tensor, edge_index: Tensor, W: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
        ds, dv = self.message.plain(s, v, edge_index, W, u)
        return self._update(s + ds, v + dv)

    @torch.jit.unused
    def grid(self, s: Tensor, v: Tensor, edge_index: Tensor, d: Tensor, u: Tensor, cells: Tensor,
             grid: FilterGrid, symmetric: bool) -> tuple[Tensor, Tensor]:
        """:meth:`forward` through the filter grid (:func:`pbcgnn.model.painn_grid.grid_message`)."""
        ds, dv = grid_message(self.message, s, v, edge_index[0], edge_index[1], d, u, cells, grid, symmetric)
        return self._update(s + ds, v + dv)

    def _update(self, s: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        ds, dv = self.update(s, v)
        return s + ds, v + dv


class PaiNN(EnergyModel):
    r"""PaiNN for periodic systems (Schuett, Unke, Gastegger, ICML 2021): rotationally
    equivariant message passing with scalar features :math:`s_i` [F] and vector features
    :math:`\vec v_i` [3, F].

    .. math::
        s^0_i = \mathrm{Emb}(Z_i), \quad \vec v^0_i = 0, \qquad
        (s, \vec v)^{t+1} = \mathrm{Update}_t\big((s, \vec v)^t + \mathrm{Message}_t\big),

        E = \sum_i \left( s\, \mathrm{MLP}(s^T_i) + E_0[Z_i] \right)

    Messages see the direction of every edge, so angular information enters through the
    vector channels, which pairwise-invariant filters (SchNet) cannot represent. The radial
    basis is the paper's :class:`~pbcgnn.model.radial.BesselRBF` times a cosine envelope;
    every block owns its filter (Linear, :math:`K \to 3F`), evaluated for all blocks in one
    matrix product. The energy is invariant, forces and stress equivariant, by construction
    (tested in float64 to 1e-10). For a symmetric edge list (every edge with its mirror) the
    distance, basis and filters are computed once per pair. Training (train mode, with
    ``grid_training``) evaluates the filters on a 5 mA distance grid and sums the messages in
    fused kernels with closed-form derivatives (:mod:`pbcgnn.model.painn_grid`), equal to the
    network to ~1e-7 relative; evaluation, MD and export use the network itself.

    Graph, dtype and output conventions are :class:`pbcgnn.model.base.EnergyModel`'s, as for
    :class:`pbcgnn.model.SchNet`; :meth:`atomic_energies_plain` is the TorchScript-able path.

    Args:
        hidden_channels: feature size :math:`F` (scalar and vector).
        num_interactions: number of message + update layers.
        num_rbf: number of radial basis functions.
        cutoff: interaction cutoff in Angstrom.
        max_z: largest atomic number the embedding accepts.
    """

    architecture = "painn"

    def __init__(self, hidden_channels: int = 64, num_interactions: int = 3, num_rbf: int = 20,
                 cutoff: float = 5.0, max_z: int = 118) -> None:
        super().__init__()
        if hidden_channels < 2 or num_interactions < 1 or num_rbf < 1 or cutoff <= 0:
            raise ValueError(
                "PaiNN: expected hidden_channels >= 2, num_interactions >= 1, num_rbf >= 1 and cutoff > 0, "
                f"found {hidden_channels}, {num_interactions}, {num_rbf}, {cutoff}"
            )
        self.hidden_channels = int(hidden_channels)
        self.num_interactions = int(num_interactions)
        self.num_rbf = int(num_rbf)
        self.cutoff = float(cutoff)
        self.max_z = int(max_z)
        self.embedding = Embedding(max_z + 1, hidden_channels)
        self.rbf = BesselRBF(num_rbf, cutoff)
        self.envelope = CosineCutoff(cutoff)
        self.interactions = ModuleList(PaiNNInteraction(hidden_channels, num_rbf) for _ in range(num_interactions))
        self.lin1 = Linear(hidden_channels, hidden_channels // 2)
        self.lin2 = Linear(hidden_channels // 2, 1)
        self.reference = AtomicReference(max_z)
        self.grid_training = True  # train mode sums through the filter grid (False: plain autograd)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Re-draw all weights; the fitted reference (e0, scale) is data, not weights: kept."""
        self.embedding.reset_parameters()
        for block in self.interactions:
            block.reset_parameters()
        _reset(self.lin1)
        torch.nn.init.zeros_(self.lin2.weight)  # an untrained model predicts the reference energies
        torch.nn.init.zeros_(self.lin2.bias)

    @property
    def hparams(self) -> dict:
        return {"hidden_channels": self.hidden_channels, "num_interactions": self.num_interactions,
                "num_rbf": self.num_rbf, "cutoff": self.cutoff, "max_z": self.max_z}

    def filter_weights(self) -> tuple[Tensor, Tensor]:
        """Every block's filter weight [3FT, K] and bias [3FT], stacked (one matrix product for all)."""
        weights, biases = [], []
        for block in self.interactions:  # a loop, not a comprehension: TorchScript
            weights.append(block.message.filter.weight)
            biases.append(block.message.filter.bias)
        return torch.cat(weights), torch.cat(biases)

    def filter_values(self, d: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        """``(A e(d) + b) f_c(d)`` [E, 3FT] at edge lengths ``d`` [E] for stacked weights (:meth:`filter_weights`)."""
        return F.linear(self.rbf(d), weight, bias) * self.envelope(d).unsqueeze(1)

    def filters(self, d: Tensor) -> list[Tensor]:
        """Every block's filter [E, 3F] at edge lengths ``d`` [E]."""
        weight, bias = self.filter_weights()
        return list(self.filter_values(d, weight, bias).split(3 * self.hidden_channels, dim=1))

    def edge_energies(self, z: Tensor, edge_index: Tensor, vec: Tensor, symmetric: bool) -> Tensor:
        """Per-atom energies [N] float64 eV; see :meth:`EnergyModel.edge_energies`."""
        edge_index, vec, d = self.within_cutoff(edge_index, vec)  # [2, E'], [E', 3], [E']
        u = vec / d.unsqueeze(1)  # [E', 3] unit vectors, centre -> neighbour
        if self.training and self.grid_training:
            return self.grid_energies(z, edge_index, d, u, symmetric)
        filters = self.filters(d)
        if symmetric:  # each pair's second edge: the mirror, with the same filter and -u
            edge_index = torch.cat([edge_index, edge_index.flip(0)], dim=1)
            u = torch.cat([u, -u])
            filters = [torch.cat([W, W]) for W in filters]
        s, v = self.embedding(z), self.initial_vectors(z, u.dtype)
        for block, W in zip(self.interactions, filters):
            s, v = block(s, v, edge_index, W, u)
        return self.reference(self.readout(s), z)  # [N] float64 eV

    @torch.jit.unused
    def grid_energies(self, z: Tensor, edge_index: Tensor, d: Tensor, u: Tensor, symmetric: bool,
                      cells: list[Tensor] | None = None) -> Tensor:
        """:meth:`edge_energies` through the filter grid: each block's ``cells`` [G - 1, 4, 3F] on
        :class:`FilterGrid`'s grid, built from the weights when not given (training)."""
        grid = FilterGrid(self.cutoff)
        s, v = self.embedding(z), self.initial_vectors(z, u.dtype)
        for block, layer in zip(self.interactions, filter_cells(self, grid) if cells is None else cells):
            s, v = block.grid(s, v, edge_index, d, u, layer, grid, symmetric)
        return self.reference(self.readout(s), z)

    @torch.jit.export
    def atomic_energies_plain(self, z: Tensor, edge_index: Tensor, vec: Tensor) -> Tensor:
        """Per-atom energies [N] float64 eV of one frame with both edges of every pair, TorchScript-able.

        Equal to :meth:`atomic_energies` to float rounding (sums by ``index_add``); arguments as
        :meth:`pbcgnn.model.SchNet.atomic_energies_plain`.
        """
        edge_index, vec, d = self.within_cutoff(edge_index, vec)
        u = vec / d.unsqueeze(1)
        s, v = self.embedding(z), self.initial_vectors(z, u.dtype)
        filters = self.filters(d)
        for t, block in enumerate(self.interactions):
            s, v = block.plain(s, v, edge_index, filters[t], u)
        return self.reference(self.readout(s), z)

    def initial_vectors(self, z: Tensor, dtype: torch.dtype) -> Tensor:
        """Zero vector features [N, 3, F]."""
        return torch.zeros(z.shape[0], 3, self.hidden_channels, dtype=dtype, device=z.device)

    def readout(self, s: Tensor) -> Tensor:
        """The atomwise MLP: scalar features [N, F] -> network outputs ``y`` [N] (before scale and E0)."""
        return self.lin2(F.silu(self.lin1(s))).squeeze(-1)
