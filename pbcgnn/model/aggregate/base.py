"""The interface of the seam: a filter ``W(d)`` and an aggregation summing ``x_j * W(d_ji)`` at every centre."""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from torch.nn import Module

__all__ = ["Filter", "Aggregation", "plain_sum", "recompute_backward"]


class Filter(ABC):
    r"""A layer's continuous filter :math:`W(d)` [E, F] as a pure function of per-edge inputs and weights.

    ``W = filter(*filter.inputs(d), *filter.params(conv))``. Keeping the weights explicit
    lets an aggregation pass them to its own autograd Function (gradients reach them) and
    recompute the filter chunk by chunk.
    """

    @abstractmethod
    def inputs(self, d: Tensor) -> tuple[Tensor, ...]:
        """The filter's per-edge inputs [E, ...] from the edge lengths ``d`` [E] in Angstrom."""

    @abstractmethod
    def params(self, conv: Module) -> tuple[Tensor, ...]:
        """The weights of ``conv``'s filter, in the order :meth:`__call__` takes them."""

    @abstractmethod
    def __call__(self, *inputs_and_params: Tensor) -> Tensor:
        """The filters [E, F] from the per-edge inputs followed by the weights."""


class Aggregation(ABC):
    r"""One way to compute the continuous-filter sum of a :class:`pbcgnn.model.CFConv`.

    .. math::
        \mathbf{o}_i = \sum_{e = (j \to i)} \mathbf{x}_j \odot W(d_e)
        \;\Big[ + \sum_{e = (i \to k)} \mathbf{x}_k \odot W(d_e) \ \text{if symmetric} \Big]

    over the edges ``edge_index`` (row 0 the neighbour j, row 1 the centre i). With
    ``symmetric`` the list holds one edge per mirror pair (:func:`pbcgnn.neighbors.mirror_pairs`)
    and each edge also carries the reverse message to j, so ``W`` is evaluated once per pair.
    Every implementation gives the same values and derivatives to float rounding; they differ
    in speed and memory. :func:`pbcgnn.model.aggregate.select` picks one.

    Args:
        filter: what :math:`W` is (the filter network, or a table of it).

    Shapes:
        - **input:** node features :math:`(|\mathcal{V}|, F)` (after ``lin1``), edge indices
          :math:`(2, |\mathcal{E}|)`, ``edge_attr`` as returned by :meth:`edge_attr`
        - **output:** summed messages :math:`(|\mathcal{V}|, F)`
    """

    def __init__(self, filter: Filter) -> None:
        self.filter = filter

    def edge_attr(self, d: Tensor) -> tuple[Tensor, ...]:
        """Per-edge inputs from the edge lengths ``d`` [E] (Angstrom), computed once per forward
        pass and shared by every interaction; by default the lengths themselves."""
        return (d,)

    @abstractmethod
    def __call__(
        self, conv: Module, x: Tensor, edge_index: Tensor, edge_attr: tuple[Tensor, ...], symmetric: bool
    ) -> Tensor:
        """The sum [N, F] for layer ``conv`` (whose filter weights :attr:`filter` reads)."""

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.filter.__class__.__name__})"


def plain_sum(x: Tensor, src: Tensor, dst: Tensor, w: Tensor, symmetric: bool) -> Tensor:
    """``sum_e x[src_e] * w_e`` at ``dst`` (and the reverse), [N, F], all edges at once (differentiable)."""
    out = torch.zeros_like(x).index_add(0, dst, x.index_select(0, src) * w)
    return out.index_add(0, src, x.index_select(0, dst) * w) if symmetric else out


def recompute_backward(
    grad_out: Tensor,
    x: Tensor,
    src: Tensor,
    dst: Tensor,
    filter_fn: Callable[..., Tensor],
    tensors: Sequence[Tensor],
    need: Sequence[bool],
    symmetric: bool,
) -> list[Tensor | None]:
    """A custom aggregation's backward pass as a differentiable graph (double backward, ``create_graph``).

    Recomputes :func:`plain_sum` over every edge with ``W = filter_fn(*tensors)`` and
    differentiates it: exact, but without the chunking's memory bound.

    Args:
        grad_out: [N, F] gradient of the loss with respect to the sum.
        x: [N, F] node features; src, dst: [E] edge rows (j, i).
        filter_fn: the filter as a function of ``tensors``.
        tensors: its per-edge inputs and weights.
        need: which gradients are wanted, for ``x`` and then each of ``tensors``.
        symmetric: the sum carries the reverse messages.

    Returns:
        Gradients for ``x`` and each of ``tensors``; ``None`` where not wanted.
    """
    # Fresh aliases: x may depend on the tensors through earlier blocks, and the gradient
    # wanted here is the partial one, not the total derivative through x.
    inputs = [x.view_as(x), *(t.view_as(t) for t in tensors)]
    out = plain_sum(inputs[0], src, dst, filter_fn(*inputs[1:]), symmetric)
    wrt = [t for t, n in zip(inputs, need) if n]
    grads = list(torch.autograd.grad(out, wrt, grad_out, create_graph=True, allow_unused=True)) if wrt else []
    return [grads.pop(0) if n else None for n in need]
