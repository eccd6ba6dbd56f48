"""Tabulated filters: frozen cubic Hermite cells of ``W_t(d)``, summed in the grid's fused kernels (eval, MD).

A SchNet filter ``W_t(d) = MLP_t(e(d)) * f_c(d)`` [F] depends on the edge length only, so it
can be evaluated once on a grid and interpolated: per edge a table lookup and a cubic
polynomial replace the Gaussian basis and two dense layers (50 -> 128 -> 128). The table
holds the cells of :func:`~pbcgnn.model.aggregate.grid.hermite_cells` (values, their
difference and exact slopes per interval, built in float64), the layout that training uses
every step; here they are built once and kept. :class:`TableSum` sums through them in the
same fused kernels as :class:`~pbcgnn.model.aggregate.GridSum`, forces and their derivatives
in closed form. Building the table from a model and its error: :mod:`pbcgnn.model.tabulate`.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.nn import Module

from .base import Aggregation, Filter
from .grid import grid_sum, interpolate

__all__ = ["FilterTable", "TableFilter", "TableSum"]


class FilterTable(torch.nn.Module):
    r"""Cubic Hermite tables of the filters :math:`W_t(d)` of every interaction.

    With grid points :math:`r_k = r_{min} + k h`, values :math:`y_k = W_t(r_k)` and scaled
    slopes :math:`m_k = h\,W_t'(r_k)`, on :math:`r_k \le d \le r_{k+1}`, :math:`s = (d - r_k)/h`:

    .. math::
        W_t(d) = y_k + s^2 (3 - 2s)(y_{k+1} - y_k) + s (1 - s)\left((1 - s)\,m_k - s\,m_{k+1}\right)

    Each interval's cell holds :math:`(y_k, y_{k+1} - y_k, m_k, m_{k+1})`. :class:`TableSum`
    sums through them edge chunk by edge chunk (nothing of size [E, F] kept) and, with
    ``compile=True``, each chunk is one ``torch.compile``-fused kernel; if compilation fails it
    falls back to eager, with a warning. The first call compiles (seconds; PyTorch caches
    kernels on disk).

    Args:
        cells: [T, G - 1, 4, F] per interaction and interval.
        r_min: first grid point, Angstrom.
        spacing: grid spacing :math:`h`, Angstrom.
        compile: fuse the chunk kernels with ``torch.compile``.

    Shapes:
        - **input:** interaction index, distances :math:`(|\mathcal{E}|)` in Angstrom,
          all in :math:`[r_{min}, r_{min} + (G - 1) h]`
        - **output:** filters :math:`(|\mathcal{E}|, F)`
    """

    def __init__(self, cells: Tensor, r_min: float, spacing: float, compile: bool = True) -> None:
        super().__init__()
        if cells.dim() != 4 or cells.shape[1] < 1 or cells.shape[2] != 4:
            raise ValueError(f"FilterTable: expected cells [T, G - 1 >= 1, 4, F], found {tuple(cells.shape)}")
        self.register_buffer("cells", cells)  # [T, G - 1, 4, F]
        self.r_min = float(r_min)
        self.spacing = float(spacing)
        self.compile = bool(compile)

    @property
    def r_max(self) -> float:
        """Last grid point, Angstrom."""
        return self.r_min + self.cells.shape[1] * self.spacing

    def forward(self, interaction: int, d: Tensor) -> Tensor:
        """Filters [E, F] of interaction ``interaction`` at distances ``d`` [E] (differentiable in ``d``)."""
        return interpolate(d, self.cells[interaction], self.r_min, 1.0 / self.spacing)

    def extra_repr(self) -> str:
        t, g, _, f = self.cells.shape
        return (f"interactions={t}, points={g + 1}, filters={f}, r=[{self.r_min:g}, {self.r_max:g}] A, "
                f"h={self.spacing:g} A, compile={self.compile}")


class TableFilter(Filter):
    """``W_t(d)`` read from a :class:`FilterTable`: interaction t's filter is ``table.cells[t]``.

    Args:
        table: the tables of every interaction.
        convs: the model's layers in interaction order, so each finds its table.
    """

    def __init__(self, table: FilterTable, convs: Sequence[Module]) -> None:
        if len(convs) != table.cells.shape[0]:
            raise ValueError(f"TableFilter: expected one table per layer, found {table.cells.shape[0]} "
                             f"tables for {len(convs)} layers")
        self.table = table
        self._index = {id(conv): t for t, conv in enumerate(convs)}  # layer -> its interaction t

    # the grid the kernels read (kernels.grid_constants) and whether they compile
    r_min = property(lambda self: self.table.r_min)
    spacing = property(lambda self: self.table.spacing)
    compile = property(lambda self: self.table.compile)

    def inputs(self, d: Tensor) -> tuple[Tensor, ...]:
        """``(d,)``; distances below the table raise ``ValueError`` (never extrapolated)."""
        if d.numel() and float(d.detach().min()) < self.table.r_min:
            raise ValueError(
                f"TabulatedSchNet: an edge of length {float(d.detach().min()):.4g} A is below the table's "
                f"r_min = {self.table.r_min:g} A; tabulate with a smaller r_min"
            )
        return (d,)

    def params(self, conv: Module) -> tuple[Tensor, ...]:
        return (self.table.cells[self._index[id(conv)]],)  # [G - 1, 4, F]

    def __call__(self, d: Tensor, cells: Tensor) -> Tensor:
        return interpolate(d, cells, self.table.r_min, 1.0 / self.table.spacing)  # [E, F]


class TableSum(Aggregation):
    """The sum through a :class:`TableFilter` in the grid's fused, chunked kernels
    (:func:`~pbcgnn.model.aggregate.grid.grid_sum`): forces and their derivatives in closed form.

    Memory as :class:`pbcgnn.model.aggregate.ChunkedSum` without its recomputation of the
    filter network.
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
        (cells,) = self.filter.params(conv)
        return grid_sum(x, edge_index[0], edge_index[1], edge_attr[0], cells, self.filter, symmetric)
