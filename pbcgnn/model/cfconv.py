"""CFConv, SchNet's continuous-filter convolution as a PyG layer, and the interaction block."""
from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn import Linear
from torch_geometric.nn import MessagePassing

from .aggregate import Aggregation, AutogradSum, NetworkFilter
from .aggregate.base import plain_sum
from .aggregate.network import filter_network

__all__ = ["shifted_softplus", "filter_network", "CFConv", "InteractionBlock"]


def shifted_softplus(x: Tensor) -> Tensor:
    """``softplus(x) - log 2``: smooth, and 0 at x = 0 so an untrained network starts near zero."""
    return F.softplus(x) - math.log(2.0)  # inline: TorchScript cannot read a global float


#: A layer called without an aggregation sums its messages by plain autograd.
_PLAIN = AutogradSum(NetworkFilter())


class CFConv(MessagePassing):
    r"""The continuous-filter convolution from `"SchNet - A deep learning architecture for
    molecules and materials" <https://doi.org/10.1063/1.5019779>`_ (Schuett et al.,
    J. Chem. Phys. 148, 241722 (2018)).

    .. math::
        \mathbf{x}^{\prime}_i = \mathbf{W}_2 \sum_{j \in \mathcal{N}(i)}
        \left(\mathbf{W}_1 \mathbf{x}_j\right) \odot
        \mathrm{MLP}\left(\mathbf{e}(d_{ji})\right) f_c(d_{ji}) + \mathbf{b}_2

    where :math:`\mathbf{e}(d)` is the radial basis of the edge length, the filter network
    :math:`\mathrm{MLP}` is Linear -> shifted softplus -> Linear, and :math:`f_c` is the
    cosine cutoff, which makes every message vanish smoothly at the cutoff. The sum runs
    over edges with centre :math:`i` = ``edge_index[1]`` and neighbour :math:`j` =
    ``edge_index[0]`` (PyG ``source_to_target``); periodic images are separate edges.

    The sum is delegated to an :class:`~pbcgnn.model.aggregate.Aggregation` (same result to
    float rounding): plain autograd through :meth:`propagate` and :meth:`message` by default
    and in training, chunked in bounded memory or through a table in evaluation, as
    :func:`pbcgnn.model.aggregate.select` decides for the model (:meth:`plain`: the same
    sum by ``index_add``, for TorchScript). With ``symmetric=True`` the
    edge list holds one edge per mirror pair (:func:`pbcgnn.neighbors.mirror_pairs`) and
    each edge also sends :math:`\mathbf{W}_1 \mathbf{x}_i` to :math:`j`: the filter, a
    function of the distance only, is evaluated once per pair.

    Args:
        in_channels: size of the input node features.
        out_channels: size of the output node features.
        num_filters: width :math:`F` of the filter and of the convolution.
        num_rbf: size :math:`K` of the radial basis the filter network reads.

    Shapes:
        - **input:** node features :math:`(|\mathcal{V}|, F_{in})`,
          edge indices :math:`(2, |\mathcal{E}|)`, ``edge_attr``: radial basis
          :math:`(|\mathcal{E}|, K)` and cutoff envelope :math:`(|\mathcal{E}|)` (or the
          per-edge inputs ``aggregation.edge_attr(d)`` returned)
        - **output:** node features :math:`(|\mathcal{V}|, F_{out})`
    """

    #: The arguments of :meth:`propagate` (called by the aggregation, not in this class's
    #: source, where PyG would otherwise look for them): features [N, F] and filters [E, F].
    propagate_type: ClassVar[dict[str, type]] = {"x": Tensor, "W": Tensor}

    def __init__(self, in_channels: int, out_channels: int, num_filters: int, num_rbf: int) -> None:
        super().__init__(aggr="add")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.num_filters = num_filters
        self.num_rbf = num_rbf
        self.filter1 = Linear(num_rbf, num_filters)
        self.filter2 = Linear(num_filters, num_filters)
        self.lin1 = Linear(in_channels, num_filters, bias=False)
        self.lin2 = Linear(num_filters, out_channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        for lin in (self.filter1, self.filter2, self.lin1, self.lin2):
            torch.nn.init.xavier_uniform_(lin.weight)
            if lin.bias is not None:
                torch.nn.init.zeros_(lin.bias)

    def filter(self, edge_rbf: Tensor, edge_cutoff: Tensor) -> Tensor:
        """The filters ``MLP(e(d)) * f_c(d)`` [E, F] from the basis [E, K] and envelope [E]."""
        return filter_network(edge_rbf, edge_cutoff, *self.filter_params())

    def filter_params(self) -> tuple[Tensor, ...]:
        """The parameters of the filter network, in :func:`filter_network`'s order."""
        return (self.filter1.weight, self.filter1.bias, self.filter2.weight, self.filter2.bias)

    @torch.jit.unused  # the aggregation seam is plain Python; TorchScript uses plain()
    def forward(
        self,
        x: Tensor,
        edge_index: Tensor,
        edge_attr: tuple[Tensor, ...],
        symmetric: bool = False,
        aggregation: Aggregation | None = None,
    ) -> Tensor:
        """``lin2(sum_j lin1(x)_j * W(d_ji))`` [N, F_out].

        Args:
            x: [N, F_in] node features.
            edge_index: [2, E] int64, rows (j, i) = (neighbour, centre).
            edge_attr: the filter's per-edge inputs: (radial basis [E, K], envelope [E]) for
                the default aggregation, else what ``aggregation.edge_attr(d)`` returned.
            symmetric: every edge also carries the reverse message (one edge per mirror pair).
            aggregation: how to compute the sum; default plain autograd on the filter network.
        """
        aggregation = _PLAIN if aggregation is None else aggregation
        return self.lin2(aggregation(self, self.lin1(x), edge_index, edge_attr, symmetric))  # [N, F_out]

    def plain(self, x: Tensor, edge_index: Tensor, edge_rbf: Tensor, edge_cutoff: Tensor) -> Tensor:
        """:meth:`forward` [N, F_out] with the sum by ``index_add`` over every edge (TorchScript-able).

        The plain sum of the seam (:func:`pbcgnn.model.aggregate.base.plain_sum`) on a list
        with both edges of every pair (no ``symmetric``), for exported models
        (:mod:`pbcgnn.export`); equal to :meth:`forward` to float rounding.

        Args:
            x: [N, F_in] node features.
            edge_index: [2, E] int64, rows (j, i) = (neighbour, centre).
            edge_rbf: [E, K] radial basis; edge_cutoff: [E] envelope.
        """
        W = filter_network(edge_rbf, edge_cutoff, self.filter1.weight, self.filter1.bias,
                           self.filter2.weight, self.filter2.bias)  # [E, F]
        return self.lin2(plain_sum(self.lin1(x), edge_index[0], edge_index[1], W, False))  # [N, F_out]

    def message(self, x_j: Tensor, W: Tensor) -> Tensor:
        return x_j * W

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}({self.in_channels}, {self.out_channels}, "
            f"num_filters={self.num_filters}, num_rbf={self.num_rbf})"
        )


class InteractionBlock(torch.nn.Module):
    r"""SchNet interaction: :math:`\mathbf{v}_i = \mathbf{W}\,\mathrm{ssp}(\mathrm{CFConv}(\mathbf{x})_i)
    + \mathbf{b}`. Returns the update :math:`\mathbf{v}`; the caller adds the residual.

    Each block owns its filter network; the radial basis and cutoff envelope are shared
    inputs, computed once per forward pass by the model.

    Args:
        hidden_channels: node feature size (input and output).
        num_rbf: size of the radial basis.
        num_filters: width of the convolution.

    Shapes:
        - **input:** as :class:`CFConv` with :math:`F_{in}` = ``hidden_channels``
        - **output:** :math:`(|\mathcal{V}|, \mathrm{hidden\_channels})`
    """

    def __init__(self, hidden_channels: int, num_rbf: int, num_filters: int) -> None:
        super().__init__()
        self.conv = CFConv(hidden_channels, hidden_channels, num_filters, num_rbf)
        self.lin = Linear(hidden_channels, hidden_channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.conv.reset_parameters()
        torch.nn.init.xavier_uniform_(self.lin.weight)
        torch.nn.init.zeros_(self.lin.bias)

    @torch.jit.unused  # the aggregation seam is plain Python; TorchScript uses plain()
    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: tuple[Tensor, ...], symmetric: bool = False,
                aggregation: Aggregation | None = None) -> Tensor:
        """The update [N, H]; arguments as :meth:`CFConv.forward`."""
        return self.update(self.conv(x, edge_index, edge_attr, symmetric, aggregation))

    def plain(self, x: Tensor, edge_index: Tensor, edge_rbf: Tensor, edge_cutoff: Tensor) -> Tensor:
        """:meth:`forward` [N, H] through :meth:`CFConv.plain` (TorchScript-able); arguments as there."""
        return self.update(self.conv.plain(x, edge_index, edge_rbf, edge_cutoff))

    def update(self, conv: Tensor) -> Tensor:
        """``lin(ssp(conv))`` [N, H] from the convolution's output ``conv`` [N, F]."""
        return self.lin(shifted_softplus(conv))
