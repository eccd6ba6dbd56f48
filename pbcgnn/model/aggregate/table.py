"""Tabulated filters: cubic Hermite tables of ``W_t(d)`` and fused kernels summing through them (eval, MD).

A SchNet filter ``W_t(d) = MLP_t(e(d)) * f_c(d)`` [F] depends on the edge length only, so it
can be evaluated once on a grid and interpolated: per edge a table lookup and a cubic
polynomial replace the Gaussian basis and two dense layers (50 -> 128 -> 128). The table
holds ``W_t`` and ``dW_t/dd`` at every grid point; between two points the filter is the cubic
Hermite polynomial matching both at both ends, so the interpolant and its derivative (the
forces) are continuous. :class:`TableSum` differentiates the polynomial in closed form, edge
chunk by edge chunk, with ``torch.compile``-fused kernels. Building the table from a model
and its error: :mod:`pbcgnn.model.tabulate`.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.nn import Module

from .._torch_compat import recompile_limit
from . import chunked
from .base import Aggregation, Filter, recompute_backward
from .kernels import edge_chunks, fuse_scatter, grid_constants, run_kernel

__all__ = ["FilterTable", "TableFilter", "TableSum"]


class FilterTable(torch.nn.Module):
    r"""Cubic Hermite tables of the filters :math:`W_t(d)` of every interaction.

    With grid points :math:`r_k = r_{min} + k h`, values :math:`y_k = W_t(r_k)` and scaled
    slopes :math:`m_k = h\,W_t'(r_k)`, on :math:`r_k \le d \le r_{k+1}`, :math:`s = (d - r_k)/h`:

    .. math::
        W_t(d) = y_k + s^2 (3 - 2s)(y_{k+1} - y_k) + s (1 - s)\left((1 - s)\,m_k - s\,m_{k+1}\right)

    :class:`TableSum` sums through it edge chunk by edge chunk with :math:`dW/dd` in closed
    form (no autograd, nothing of size [E, F] kept) and, with ``compile=True``, each chunk is
    one ``torch.compile``-fused kernel (lookup, polynomial, gathers, products, and the
    scatter on GPUs and single-threaded CPUs); if compilation fails it falls back to eager,
    with a warning. The first call compiles (seconds; PyTorch caches kernels on disk).

    Args:
        nodes: [T, G, 2, F] values :math:`y_k` and scaled slopes :math:`m_k` per interaction.
        r_min: first grid point, Angstrom.
        spacing: grid spacing :math:`h`, Angstrom.
        compile: fuse the chunk kernels with ``torch.compile``.

    Shapes:
        - **input:** interaction index, distances :math:`(|\mathcal{E}|)` in Angstrom,
          all in :math:`[r_{min}, r_{min} + (G - 1) h]`
        - **output:** filters :math:`(|\mathcal{E}|, F)`
    """

    def __init__(self, nodes: Tensor, r_min: float, spacing: float, compile: bool = True) -> None:
        super().__init__()
        if nodes.dim() != 4 or nodes.shape[1] < 2 or nodes.shape[2] != 2:
            raise ValueError(f"FilterTable: expected nodes [T, G >= 2, 2, F], found {tuple(nodes.shape)}")
        self.register_buffer("nodes", nodes)  # [T, G, 2, F]
        self.r_min = float(r_min)
        self.spacing = float(spacing)
        self.compile = bool(compile)

    @property
    def r_max(self) -> float:
        """Last grid point, Angstrom."""
        return self.r_min + (self.nodes.shape[1] - 1) * self.spacing

    def forward(self, interaction: int, d: Tensor) -> Tensor:
        """Filters [E, F] of interaction ``interaction`` at distances ``d`` [E] (differentiable in ``d``)."""
        return _hermite(d, self.nodes[interaction], self.r_min, 1.0 / self.spacing)[0]

    def extra_repr(self) -> str:
        t, g, _, f = self.nodes.shape
        return (f"interactions={t}, points={g}, filters={f}, r=[{self.r_min:g}, {self.r_max:g}] A, "
                f"h={self.spacing:g} A, compile={self.compile}")


def _hermite(d: Tensor, nodes: Tensor, r_min, inv_h, derivative: bool = False):  # noqa: ANN001, ANN202
    """Interpolated filters [E, F] at ``d`` [E] from ``nodes`` [G, 2, F]; and dW/dd when asked.

    ``r_min`` and ``inv_h`` (1 / spacing) may be floats or 0-d tensors (the compiled kernels
    take tensors, so a new grid does not recompile them).
    """
    u = (d - r_min) * inv_h  # [E] grid units
    k = u.detach().floor().clamp(0, nodes.shape[0] - 2)  # [E] interval, as float
    s = (u - k).unsqueeze(-1)  # [E, 1] in [0, 1]
    k = k.long()
    lo, hi = nodes.index_select(0, k), nodes.index_select(0, k + 1)  # [E, 2, F] each
    y0, m0, y1, m1 = lo[:, 0], lo[:, 1], hi[:, 0], hi[:, 1]
    w = y0 + s * s * (3.0 - 2.0 * s) * (y1 - y0) + s * (1.0 - s) * ((1.0 - s) * m0 - s * m1)
    if not derivative:
        return w, None
    dw = 6.0 * s * (1.0 - s) * (y1 - y0) + (1.0 - s) * (1.0 - 3.0 * s) * m0 + s * (3.0 * s - 2.0) * m1
    return w, dw * inv_h  # [E, F], [E, F] per Angstrom


def _messages(x, a, b, d, valid, nodes, grid, symmetric: bool):  # noqa: ANN001, ANN201
    """Messages x[a] * W(d) to b (and x[b] * W(d) to a) of one chunk, [C, F]; padded edges get 0."""
    w = _hermite(d, nodes, *grid)[0] * valid.unsqueeze(-1)  # [C, F]
    return x.index_select(0, a) * w, x.index_select(0, b) * w if symmetric else None


def _chunk_forward(x, a, b, d, valid, out, nodes, grid, symmetric: bool) -> None:  # noqa: ANN001
    """:func:`_messages` summed into ``out`` [N, F] inside the kernel."""
    to_b, to_a = _messages(x, a, b, d, valid, nodes, grid, symmetric)
    out.index_add_(0, b, to_b)
    if symmetric:
        out.index_add_(0, a, to_a)


def _gradients(g, x, a, b, d, valid, nodes, grid, symmetric: bool):  # noqa: ANN001, ANN201
    """One chunk's dL/dx contributions at a (and b), [C, F], and dL/dd [C], from dL/dout ``g``."""
    w, dw = _hermite(d, nodes, *grid, derivative=True)
    w, dw = w * valid.unsqueeze(-1), dw * valid.unsqueeze(-1)  # [C, F]
    g_b = g.index_select(0, b)
    grad_w = g_b * x.index_select(0, a)  # [C, F]
    at_b = None
    if symmetric:
        g_a = g.index_select(0, a)
        grad_w = torch.addcmul(grad_w, g_a, x.index_select(0, b))
        at_b = g_a * w
    return g_b * w, at_b, (grad_w * dw).sum(dim=1)


def _chunk_backward(g, x, a, b, d, valid, grad_x, nodes, grid, symmetric: bool) -> Tensor:  # noqa: ANN001
    """:func:`_gradients` summed into ``grad_x`` [N, F] inside the kernel; returns dL/dd [C]."""
    at_a, at_b, grad_d = _gradients(g, x, a, b, d, valid, nodes, grid, symmetric)
    grad_x.index_add_(0, a, at_a)
    if symmetric:
        grad_x.index_add_(0, b, at_b)
    return grad_d


class _TableSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, src, dst, d, options):  # noqa: ANN001
        filt, nodes, symmetric = options
        table = filt.table
        grid = grid_constants(table, d)
        fuse = fuse_scatter(x)
        out = torch.zeros_like(x)
        with recompile_limit(64):
            for _, a, b, dd, valid, _ in edge_chunks(src, dst, d, chunked.EDGE_CHUNK):
                if fuse:
                    run_kernel("forward", _chunk_forward, table.compile,
                               x, a, b, dd, valid, out, nodes, grid, symmetric)
                    continue
                to_b, to_a = run_kernel("messages", _messages, table.compile,
                                        x, a, b, dd, valid, nodes, grid, symmetric)
                out.index_add_(0, b, to_b)
                if symmetric:
                    out.index_add_(0, a, to_a)
        ctx.save_for_backward(x, src, dst, d)
        ctx.options = options
        return out

    @staticmethod
    def backward(ctx, grad_out):  # noqa: ANN001
        x, src, dst, d = ctx.saved_tensors
        filt, nodes, symmetric = ctx.options
        if torch.is_grad_enabled():  # create_graph: differentiate the plain formula
            need = [ctx.needs_input_grad[0], ctx.needs_input_grad[3], False]  # x, d, nodes
            gx, gd, _ = recompute_backward(grad_out, x, src, dst, filt, (d, nodes), need, symmetric)
            return gx, None, None, gd, None
        table = filt.table
        grid = grid_constants(table, d)
        fuse = fuse_scatter(x)
        grad_x = torch.zeros_like(x)
        grad_d = torch.empty_like(d)
        with recompile_limit(64):
            for start, a, b, dd, valid, n in edge_chunks(src, dst, d, chunked.EDGE_CHUNK):
                if fuse:
                    gd = run_kernel("backward", _chunk_backward, table.compile,
                              grad_out, x, a, b, dd, valid, grad_x, nodes, grid, symmetric)
                else:
                    at_a, at_b, gd = run_kernel("gradients", _gradients, table.compile,
                                          grad_out, x, a, b, dd, valid, nodes, grid, symmetric)
                    grad_x.index_add_(0, a, at_a)
                    if symmetric:
                        grad_x.index_add_(0, b, at_b)
                grad_d[start : start + n] = gd[:n]
        return grad_x, None, None, grad_d, None


class TableFilter(Filter):
    """``W_t(d)`` read from a :class:`FilterTable`: interaction t's filter is ``table.nodes[t]``.

    Args:
        table: the tables of every interaction.
        convs: the model's layers in interaction order, so each finds its table.
    """

    def __init__(self, table: FilterTable, convs: Sequence[Module]) -> None:
        if len(convs) != table.nodes.shape[0]:
            raise ValueError(f"TableFilter: expected one table per layer, found {table.nodes.shape[0]} "
                             f"tables for {len(convs)} layers")
        self.table = table
        self._index = {id(conv): t for t, conv in enumerate(convs)}  # layer -> its interaction t

    def inputs(self, d: Tensor) -> tuple[Tensor, ...]:
        """``(d,)``; distances below the table raise ``ValueError`` (never extrapolated)."""
        if d.numel() and float(d.detach().min()) < self.table.r_min:
            raise ValueError(
                f"TabulatedSchNet: an edge of length {float(d.detach().min()):.4g} A is below the table's "
                f"r_min = {self.table.r_min:g} A; tabulate with a smaller r_min"
            )
        return (d,)

    def params(self, conv: Module) -> tuple[Tensor, ...]:
        return (self.table.nodes[self._index[id(conv)]],)  # [G, 2, F]

    def __call__(self, d: Tensor, nodes: Tensor) -> Tensor:
        return _hermite(d, nodes, self.table.r_min, 1.0 / self.table.spacing)[0]  # [E, F]


class TableSum(Aggregation):
    """The sum through a :class:`TableFilter` in fused, chunked kernels with ``dW/dd`` in closed form.

    Memory as :class:`pbcgnn.model.aggregate.ChunkedSum` without its recomputation of the
    filter network; a second derivative recomputes the plain formula over every edge.
    """

    def __init__(self, filter: TableFilter) -> None:
        if not isinstance(filter, TableFilter):
            raise TypeError(f"TableSum: expected a TableFilter, found {type(filter).__name__}; "
                             "use ChunkedSum for other filters")
        super().__init__(filter)

    def edge_attr(self, d: Tensor) -> tuple[Tensor, ...]:
        return self.filter.inputs(d)

    def __call__(
        self, conv: Module, x: Tensor, edge_index: Tensor, edge_attr: tuple[Tensor, ...], symmetric: bool
    ) -> Tensor:
        (nodes,) = self.filter.params(conv)
        return _TableSum.apply(x, edge_index[0], edge_index[1], edge_attr[0], (self.filter, nodes, symmetric))
