"""CFConv, SchNet's continuous-filter convolution as a PyG layer, and the interaction block."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn import Linear
from torch_geometric.nn import MessagePassing

__all__ = ["shifted_softplus", "CFConv", "InteractionBlock"]

_LOG2 = math.log(2.0)


def shifted_softplus(x: Tensor) -> Tensor:
    """``softplus(x) - log 2``: smooth, and 0 at x = 0 so an untrained network starts near zero."""
    return F.softplus(x) - _LOG2


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

    def forward(self, x: Tensor, edge_index: Tensor, edge_rbf: Tensor, edge_cutoff: Tensor) -> Tensor:
        W = self.filter2(shifted_softplus(self.filter1(edge_rbf)))  # [E, F]
        W = W * edge_cutoff.unsqueeze(-1)  # [E, F], 0 at and beyond the cutoff
        x = self.lin1(x)  # [N, F]
        x = self.propagate(edge_index, x=x, W=W)  # [N, F], summed at centres i
        return self.lin2(x)  # [N, F_out]

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

    def forward(self, x: Tensor, edge_index: Tensor, edge_rbf: Tensor, edge_cutoff: Tensor) -> Tensor:
        return self.lin(shifted_softplus(self.conv(x, edge_index, edge_rbf, edge_cutoff)))
