"""The exact filter of a CFConv: its filter network on the radial basis, as a function of its weights."""
from __future__ import annotations

import math
from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor
from torch.nn import Module

from .base import Filter

__all__ = ["LOG2", "filter_network", "NetworkFilter"]

LOG2 = math.log(2.0)


def filter_network(
    edge_rbf: Tensor, edge_cutoff: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor
) -> Tensor:
    """``(W2 ssp(W1 e + b1) + b2) * f_c`` [E, F]: the filter of :class:`pbcgnn.model.CFConv` as a function of its weights.

    Args:
        edge_rbf: [E, K] radial basis of the edge lengths.
        edge_cutoff: [E] cutoff envelope (0 at and beyond the cutoff).
        w1, b1, w2, b2: the weights and biases of the two layers, [F, K], [F], [F, F], [F].

    The shift ``-log 2`` of the shifted softplus is folded into the second bias (one [E, F]
    pass less); equal to the layer-by-layer formula up to float rounding.
    """
    h = F.softplus(F.linear(edge_rbf, w1, b1))  # [E, F]
    shift = math.log(2.0)  # LOG2, spelled out: TorchScript (exported models) cannot read a global float
    return F.linear(h, w2, b2 - shift * w2.sum(dim=1)) * edge_cutoff.unsqueeze(-1)  # [E, F], 0 beyond rc


class NetworkFilter(Filter):
    """``W = filter_network(*radial(d), *conv.filter_params())``: the filter network itself.

    Args:
        radial: maps edge lengths [E] (Angstrom) to the network's inputs, the radial basis
            [E, K] and the cutoff envelope [E] (:meth:`pbcgnn.model.SchNet.radial`). ``None``
            when the caller passes the basis and envelope as ``edge_attr`` itself.
        cutoff: the envelope's cutoff in Angstrom, where every filter is zero; when given,
            training may evaluate the network on a grid up to it
            (:class:`pbcgnn.model.aggregate.GridSum`).
    """

    def __init__(self, radial: Callable[[Tensor], tuple[Tensor, Tensor]] | None = None,
                 cutoff: float | None = None) -> None:
        self.radial = radial
        self.cutoff = cutoff

    def inputs(self, d: Tensor) -> tuple[Tensor, ...]:
        if self.radial is None:
            raise ValueError("NetworkFilter: no radial basis given to expand edge lengths; "
                             "pass edge_attr = (radial basis, envelope) or NetworkFilter(radial)")
        return self.radial(d)

    def params(self, conv: Module) -> tuple[Tensor, ...]:
        return conv.filter_params()

    def __call__(self, *inputs_and_params: Tensor) -> Tensor:
        return filter_network(*inputs_and_params)
