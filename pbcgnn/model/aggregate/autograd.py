"""Plain autograd: every filter at once, summed by PyG's ``propagate`` (the training path)."""
from __future__ import annotations

from torch import Tensor
from torch.nn import Module

from .base import Aggregation

__all__ = ["AutogradSum"]


class AutogradSum(Aggregation):
    """``W`` [E, F] for every edge, then ``conv.propagate`` (``message = x_j * W``), under plain autograd.

    The fastest way to the second derivative a force loss needs, at the price of several
    [E, F] tensors kept per interaction: the training path. The per-edge inputs (radial basis
    and envelope) are computed once per forward pass and shared by every interaction.
    Bit-exact resumed training depends on this arithmetic: keep its order of operations.
    """

    def edge_attr(self, d: Tensor) -> tuple[Tensor, ...]:
        return self.filter.inputs(d)

    def __call__(
        self, conv: Module, x: Tensor, edge_index: Tensor, edge_attr: tuple[Tensor, ...], symmetric: bool
    ) -> Tensor:
        W = self.filter(*edge_attr, *self.filter.params(conv))  # [E, F]
        out = conv.propagate(edge_index, x=x, W=W)  # [N, F], summed at centres i
        if symmetric:  # the reverse message of every pair, summed at j
            out = out + conv.propagate(edge_index.flip(0), x=x, W=W)
        return out
