"""CFConv, SchNet's continuous-filter convolution as a PyG layer, and the interaction block."""
from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn import Linear
from torch_geometric.nn import MessagePassing

from .chunked import chunked_aggregate

__all__ = ["shifted_softplus", "filter_network", "CFConv", "InteractionBlock"]

_LOG2 = math.log(2.0)


def shifted_softplus(x: Tensor) -> Tensor:
    """``softplus(x) - log 2``: smooth, and 0 at x = 0 so an untrained network starts near zero."""
    return F.softplus(x) - _LOG2


def filter_network(
    edge_rbf: Tensor, edge_cutoff: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor
) -> Tensor:
    """``(W2 ssp(W1 e + b1) + b2) * f_c`` [E, F]: the filter of :class:`CFConv` as a function of its weights.

    The shift ``-log 2`` of the shifted softplus is folded into the second bias (one [E, F]
    pass less); equal to the layer-by-layer formula up to float rounding.
    """
    h = F.softplus(F.linear(edge_rbf, w1, b1))  # [E, F]
    return F.linear(h, w2, b2 - _LOG2 * w2.sum(dim=1)) * edge_cutoff.unsqueeze(-1)  # [E, F], 0 beyond rc


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

    Execution (same result to float rounding): in training mode the sum is PyG's
    ``propagate`` under plain autograd, the fastest way to the second derivative a force
    loss needs. In eval mode it is :func:`pbcgnn.model.chunked.chunked_aggregate`: edges in
    chunks, filters recomputed in the backward pass, so energy and forces of 10^5 atoms fit
    in a few GiB (a second derivative still works, recomputing the whole graph). With
    ``symmetric=True`` the edge list holds one edge per mirror pair
    (:func:`pbcgnn.neighbors.mirror_pairs`) and each edge also sends :math:`\mathbf{x}_i`
    to :math:`j`: the filter, a function of the distance only, is evaluated once per pair.

    Args:
        in_channels: size of the input node features.
        out_channels: size of the output node features.
        num_filters: width :math:`F` of the filter and of the convolution.
        num_rbf: size of the radial basis the filter network reads.

    Shapes:
        - **input:** node features :math:`(|\mathcal{V}|, F_{in})`,
          edge indices :math:`(2, |\mathcal{E}|)`,
          radial basis :math:`(|\mathcal{E}|, K)`,
          cutoff envelope :math:`(|\mathcal{E}|)`
        - **output:** node features :math:`(|\mathcal{V}|, F_{out})`
    """

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

    def forward(
        self, x: Tensor, edge_index: Tensor, edge_rbf: Tensor, edge_cutoff: Tensor, symmetric: bool = False
    ) -> Tensor:
        filter_sum = partial(self.filter_sum, edge_rbf=edge_rbf, edge_cutoff=edge_cutoff, symmetric=symmetric)
        return self.convolve(x, edge_index, filter_sum)

    def convolve(self, x: Tensor, edge_index: Tensor, filter_sum: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
        """``lin2(filter_sum(lin1(x), edge_index))``: the layer with another filter sum.

        :meth:`forward` passes :meth:`filter_sum`; a tabulated model passes a table-based
        sum (:meth:`pbcgnn.model.tabulate.FilterTable.filter_sum`).
        """
        return self.lin2(filter_sum(self.lin1(x), edge_index))  # [N, F_out]

    def filter_sum(
        self, x: Tensor, edge_index: Tensor, edge_rbf: Tensor, edge_cutoff: Tensor, symmetric: bool = False
    ) -> Tensor:
        """``sum_j x_j * W_ji`` at every centre i, [N, F], for ``x`` [N, F] after ``lin1``."""
        if self.training:
            W = self.filter(edge_rbf, edge_cutoff)  # [E, F]
            out = self.propagate(edge_index, x=x, W=W)  # [N, F], summed at centres i
            if symmetric:  # the reverse message of every pair, summed at j
                out = out + self.propagate(edge_index.flip(0), x=x, W=W)
            return out
        return chunked_aggregate(x, edge_index, filter_network, (edge_rbf, edge_cutoff), self.filter_params(), symmetric)

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

    def forward(
        self, x: Tensor, edge_index: Tensor, edge_rbf: Tensor, edge_cutoff: Tensor, symmetric: bool = False
    ) -> Tensor:
        return self.lin(shifted_softplus(self.conv(x, edge_index, edge_rbf, edge_cutoff, symmetric)))

    def convolve(self, x: Tensor, edge_index: Tensor, filter_sum: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
        """:meth:`forward` with another filter sum, as :meth:`CFConv.convolve`."""
        return self.lin(shifted_softplus(self.conv.convolve(x, edge_index, filter_sum)))
