r"""Training through filter tables: the filter network on a distance grid every step, fused edge kernels.

The force loss of training needs the mixed second derivative of every interaction's sum
:math:`\mathbf{o}_i = \sum_j \mathbf{x}_j \odot W(d_{ji})`. Plain autograd
(:class:`~pbcgnn.model.aggregate.AutogradSum`) evaluates the filter network per edge and keeps
a dozen [E, F] tensors per interaction for the backward of the backward: most of a training
step is memory traffic over edges. Here the filter network runs on G grid distances
(1201 to a 6 A cutoff, against ~10^5 edges per batch), differentiably in its weights; per edge
:math:`W` is the cubic Hermite interpolant of those values and exact slopes
(:func:`hermite_cells`), and every level of differentiation is one fused kernel
per edge chunk with the derivatives in closed form:

.. math::
    \text{forward:}\ \mathbf{o}_i = \sum_{e=(j\to i)} \mathbf{x}_j \odot W_e, \qquad
    \text{first:}\ \bar{\mathbf{x}}_j = \sum_e \bar{\mathbf{o}}_i \odot W_e,\
    \bar d_e = \mathbf{v}_e \cdot W'_e,\ \bar T = \sum_e B(s_e) \otimes \mathbf{v}_e,

with :math:`\mathbf{v}_e = \bar{\mathbf{o}}_i \odot \mathbf{x}_j` (plus the reverse message
for a symmetric list), :math:`T` the cells (value, difference to the next value, and the two
slopes of each grid interval), :math:`B` the Hermite basis at the position :math:`s_e` of the
edge in its interval, and the second level (:func:`_second`) the derivative
of those three outputs, :math:`W''` included. Nothing of size [E, F] outlives a chunk.

The interpolant differs from the network by :math:`h^4 \max|W^{(4)}| / 384` (values) and
:math:`h^3 \max|W^{(4)}| / 72` (slopes): ~1e-7 relative at the default h = 5 mA, far below
float32 training noise (``tests/model/aggregate/test_grid.py`` checks energies, forces,
stress and every parameter gradient of an energy+force loss against plain autograd).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.nn import Module

from .._torch_compat import executed_inputs, recompile_limit
from . import chunked
from .base import Aggregation, Filter, plain_sum
from .kernels import edge_chunks, fuse_scatter, grid_constants, run_kernel
from .network import NetworkFilter

__all__ = ["GRID_SPACING", "GridFilter", "GridSum", "grid_sum", "hermite_cells", "interpolate"]

#: Grid spacing in Angstrom (1201 points to a 6 A cutoff): interpolation ~1e-7 relative, far below float32 rounding.
GRID_SPACING = 5e-3


def hermite_cells(filt, r: Tensor) -> Tensor:  # noqa: ANN001
    """Cells [G - 1, 4, F] of ``filt`` (distances [G] -> filters [G, F]) on the even grid ``r`` [G]:
    ``y_k``, ``y_k+1 - y_k``, ``m_k``, ``m_k+1`` per interval, slopes ``m = h W'`` exact by
    forward-mode autograd (differentiable in whatever ``filt`` closes over).

    Give ``r`` and ``filt`` in float64 and cast the result: the difference of neighbouring
    values, which the interpolant's slope needs, loses ~4 digits to cancellation in float32 at
    h = 5 mA.
    """
    y, dy = torch.func.jvp(filt, (r,), (torch.ones_like(r),))  # [G, F] each: W and dW/dd
    m = dy * (r[1] - r[0])  # slopes in grid units
    return torch.stack([y[:-1], y[1:] - y[:-1], m[:-1], m[1:]], dim=1)


class GridFilter(Filter):
    """``W(d)`` as the cubic Hermite interpolant of the filter network on a grid from 0 to the cutoff.

    :meth:`params` evaluates the network of a layer at the grid points with exact slopes
    (forward-mode autograd), differentiably in its weights: [G - 1, 4, F] cells per step.

    Args:
        network: the exact filter (its radial basis and envelope).
        cutoff: last grid point, Angstrom; every edge the model keeps is shorter.
        spacing: grid spacing h, Angstrom (rounded down to divide the cutoff).
        compile: fuse the edge kernels with ``torch.compile`` (eager if that fails).
    """

    def __init__(self, network: NetworkFilter, cutoff: float, spacing: float = GRID_SPACING,
                 compile: bool = True) -> None:
        if network.radial is None:
            raise ValueError("GridFilter: the network filter needs its radial basis (NetworkFilter(radial))")
        self.network = network
        self.points = max(2, math.ceil(cutoff / spacing) + 1)
        self.cutoff = float(cutoff)
        self.spacing = self.cutoff / (self.points - 1)
        self.compile = bool(compile)

    def inputs(self, d: Tensor) -> tuple[Tensor, ...]:
        return (d,)

    def params(self, conv: Module) -> tuple[Tensor, ...]:
        """The layer's cells [G - 1, 4, F] (:func:`hermite_cells`), built in float64 and cast."""
        weights = self.network.params(conv)
        dtype = weights[0].dtype
        weights = [w.double() for w in weights]
        r = torch.linspace(0.0, self.cutoff, self.points, dtype=torch.float64, device=weights[0].device)

        def filt(d: Tensor) -> Tensor:
            return self.network(*self.network.inputs(d), *weights)

        return (hermite_cells(filt, r).to(dtype),)

    @property
    def r_min(self) -> float:
        return 0.0

    def __call__(self, d: Tensor, cells: Tensor) -> Tensor:
        return interpolate(d, cells, self.r_min, 1.0 / self.spacing)  # [E, F]


def interpolate(d: Tensor, cells: Tensor, r_min: float, inv_h: float) -> Tensor:
    """Filters [E, F] at ``d`` [E] from ``cells`` [G - 1, 4, F] of a grid from ``r_min`` with
    spacing ``1 / inv_h`` (differentiable in ``d`` and ``cells`` by autograd: the reference)."""
    return _interpolate(d, cells, r_min, inv_h, order=0)[0][0]


def _interpolate(d, cells, r_min, inv_h, order: int, basis: bool = False):  # noqa: ANN001, ANN202
    """Hermite interpolation at ``d`` [C] from ``cells`` [G - 1, 4, F] (see :meth:`GridFilter.params`).

    Returns ``[W, W', ...]`` up to ``order`` ([C, F] each, per Angstrom), each edge's interval
    ``k`` [C] and, with ``basis``, ``[B, B', ...]``: the Hermite basis [C, 4] (``W = sum_c B_c
    cell_c``, so the cells' gradient is ``B (x) dL/dW``) and its derivatives, else ``None``.
    Without the basis the sums are written out per cell column, which compiles to ~25 % faster
    kernels (inference); with it, contracting the basis is as fast (training).
    """
    u = (d - r_min) * inv_h  # [C] grid units
    k = u.detach().floor().clamp(0, cells.shape[0] - 1)
    s = (u - k).unsqueeze(-1)  # [C, 1] in [0, 1]
    k = k.long()
    cell = cells.index_select(0, k)  # [C, 4, F]
    t, zero, one = 1.0 - s, torch.zeros_like(s), torch.ones_like(s)
    bases = [torch.cat([one, s * s * (3.0 - 2.0 * s), s * t * t, -s * s * t], dim=1)]  # [C, 4] each
    if order >= 1:
        bases.append(torch.cat([zero, 6.0 * s * t, t * (1.0 - 3.0 * s), s * (3.0 * s - 2.0)], 1) * inv_h)
    if order >= 2:
        bases.append(torch.cat([zero, 6.0 - 12.0 * s, 6.0 * s - 4.0, 6.0 * s - 2.0], 1) * (inv_h * inv_h))
    if basis:
        return [(b.unsqueeze(-1) * cell).sum(dim=1) for b in bases], k, bases
    y0, dy, m0, m1 = cell.unbind(1)  # [C, F] each
    return [b[:, :1] * y0 + b[:, 1:2] * dy + b[:, 2:3] * m0 + b[:, 3:] * m1 for b in bases], k, None


def _forward(x, a, b, d, valid, cells, grid, symmetric: bool):  # noqa: ANN001, ANN202
    """Messages of one chunk: x[a] * W to b and x[b] * W to a, [C, F] each (padded edges 0)."""
    w = _interpolate(d, cells, *grid, order=0)[0][0] * valid.unsqueeze(-1)
    return x.index_select(0, a) * w, x.index_select(0, b) * w if symmetric else None


def _first(g, x, a, b, d, valid, cells, grid, symmetric: bool, cell_grads: bool):  # noqa: ANN001, ANN202
    """First derivatives of one chunk from dL/do ``g``: dL/dx at a (and b) [C, F], dL/dd [C],
    dL/dT [C, 4, F] (``None`` unless ``cell_grads``) and the intervals it belongs to."""
    (w, dw), base, bases = _interpolate(d, cells, *grid, order=1, basis=cell_grads)
    valid = valid.unsqueeze(-1)
    w, dw = w * valid, dw * valid  # [C, F] W, dW/dd
    g_b, x_a = g.index_select(0, b), x.index_select(0, a)
    v = g_b * x_a  # [C, F] dL/dW
    at_b = None
    if symmetric:
        g_a = g.index_select(0, a)
        v = torch.addcmul(v, g_a, x.index_select(0, b))
        at_b = g_a * w
    t = (bases[0] * valid).unsqueeze(-1) * v.unsqueeze(1) if cell_grads else None
    return g_b * w, at_b, (v * dw).sum(dim=1), t, base


def _second(ggx, ggd, g, x, a, b, d, valid, cells, grid, symmetric: bool):  # noqa: ANN001, ANN202
    """Second level of one chunk, from dL/d(first outputs) ``ggx`` [N, F] and ``ggd`` [C]:
    dL/dg at b (and a), dL/dx at a (and b) [C, F], dL/dd [C], dL/dT [C, 4, F] and their intervals."""
    (w, dw, ddw), base, (basis, db, _) = _interpolate(d, cells, *grid, order=2, basis=True)
    valid = valid.unsqueeze(-1)
    w, dw, ddw = w * valid, dw * valid, ddw * valid  # [C, F] W, W', W''
    basis, db = basis * valid, db * valid  # [C, 4]
    x_a, x_b, g_b = x.index_select(0, a), x.index_select(0, b), g.index_select(0, b)
    q = ggd.unsqueeze(-1)  # [C, 1]
    h_a = ggx.index_select(0, a)  # [C, F] dL/d(dL/dx) at a
    dg_b = h_a * w + q * x_a * dw
    dx_a = q * g_b * dw
    u = h_a * g_b  # [C, F] dL/dW through dL/dx
    v = g_b * x_a  # [C, F] dL/dW of the first level
    dg_a = dx_b = None
    if symmetric:
        g_a, h_b = g.index_select(0, a), ggx.index_select(0, b)
        dg_a = h_b * w + q * x_b * dw
        dx_b = q * g_a * dw
        u = torch.addcmul(u, h_b, g_a)
        v = torch.addcmul(v, g_a, x_b)
    dd = (u * dw).sum(dim=1) + ggd * (v * ddw).sum(dim=1)
    dt = basis.unsqueeze(-1) * u.unsqueeze(1) + db.unsqueeze(-1) * (q * v).unsqueeze(1)  # [C, 4, F]
    return dg_b, dg_a, dx_a, dx_b, dd, dt, base


def _add_at(out: Tensor, i: Tensor, at_i: Tensor, j: Tensor, at_j: Tensor | None) -> None:
    """``out[i] += at_i`` and, for a symmetric list, ``out[j] += at_j`` ([C, F] each)."""
    out.index_add_(0, i, at_i)
    if at_j is not None:
        out.index_add_(0, j, at_j)


def _add_cells(grad: Tensor | None, k: Tensor, cells_c: Tensor | None) -> None:
    """Scatter [C, 4, F] contributions into the cells' gradient [G - 1, 4, F] at intervals ``k`` (if given)."""
    if grad is not None and cells_c is not None:
        grad.index_add_(0, k, cells_c)


# Scatters of each level; inside the compiled kernels where that is faster (fuse_scatter).
def _scatter_forward(out, a, b, res) -> None:  # noqa: ANN001
    _add_at(out, b, res[0], a, res[1])


def _scatter_first(gx, gcells, a, b, res):  # noqa: ANN001, ANN202
    at_a, at_b, gd, t, base = res
    _add_at(gx, a, at_a, b, at_b)
    _add_cells(gcells, base, t)
    return gd


def _scatter_second(dg, dx, dcells, a, b, res):  # noqa: ANN001, ANN202
    dg_b, dg_a, dx_a, dx_b, dd, t, base = res
    _add_at(dg, b, dg_b, a, dg_a)
    _add_at(dx, a, dx_a, b, dx_b)
    _add_cells(dcells, base, t)
    return dd


def _forward_fused(out, x, a, b, d, valid, cells, grid, symmetric: bool) -> None:  # noqa: ANN001
    _scatter_forward(out, a, b, _forward(x, a, b, d, valid, cells, grid, symmetric))


def _first_fused(gx, gcells, g, x, a, b, d, valid, cells, grid, symmetric: bool, cell_grads: bool):  # noqa: ANN001, ANN202
    return _scatter_first(gx, gcells, a, b, _first(g, x, a, b, d, valid, cells, grid, symmetric, cell_grads))


def _second_fused(dg, dx, dcells, ggx, q, g, x, a, b, d, valid, cells, grid, symmetric: bool):  # noqa: ANN001, ANN202
    return _scatter_second(dg, dx, dcells, a, b, _second(ggx, q, g, x, a, b, d, valid, cells, grid, symmetric))


_LEVELS = {"forward": (_forward, _forward_fused, _scatter_forward),
           "first": (_first, _first_fused, _scatter_first),
           "second": (_second, _second_fused, _scatter_second)}


def _level(name: str, filt: GridFilter, outs: tuple, a: Tensor, b: Tensor, args: tuple):  # noqa: ANN202
    """One level's kernel on one chunk; its scatter into ``outs`` inside the compiled kernel where that
    is faster (:func:`~pbcgnn.model.aggregate.kernels.fuse_scatter`), else by torch's ``index_add_``."""
    kernel, fused, scatter = _LEVELS[name]
    if fuse_scatter(outs[0]):
        return run_kernel(f"grid_{name}_fused", fused, filt.compile, *outs, *args)
    return scatter(*outs, a, b, run_kernel(f"grid_{name}", kernel, filt.compile, *args))


def _padded(t: Tensor, start: int, chunk: int) -> Tensor:
    """``t[start : start + chunk]`` [C], zero-padded to ``chunk`` entries."""
    part = t[start : start + chunk]
    return part if part.numel() == chunk else torch.cat([part, part.new_zeros(chunk - part.numel())])


class _GridSum(torch.autograd.Function):
    """Level 0: the sum; its backward is :class:`_GridFirst`, itself differentiable."""

    @staticmethod
    def forward(ctx, x, src, dst, d, cells, options):  # noqa: ANN001
        filt, symmetric = options
        grid = grid_constants(filt, d)
        out = torch.zeros_like(x)
        with recompile_limit(64):
            for _, a, b, dd, valid, _ in edge_chunks(src, dst, d, chunked.EDGE_CHUNK):
                _level("forward", filt, (out,), a, b, (x, a, b, dd, valid, cells, grid, symmetric))
        ctx.save_for_backward(x, src, dst, d, cells)
        ctx.options = options
        return out

    @staticmethod
    def backward(ctx, grad_out):  # noqa: ANN001
        x, src, dst, d, cells = ctx.saved_tensors
        # forces reach x and d only: the cells' gradients (the weights') are skipped then
        need_cells = executed_inputs(ctx.needs_input_grad, [0, 1, 2, 3, 4])[4]
        gx, gd, gcells = _GridFirst.apply(grad_out, x, d, cells, src, dst, (*ctx.options, need_cells))
        return gx, None, None, gd, gcells, None


class _GridFirst(torch.autograd.Function):
    """Level 1: dL/dx, dL/dd and dL/dcells of the sum; its backward (level 2) in closed form."""

    @staticmethod
    def forward(ctx, g, x, d, cells, src, dst, options):  # noqa: ANN001
        filt, symmetric, need_cells = options
        grid = grid_constants(filt, d)
        gx, gd = torch.zeros_like(x), torch.empty_like(d)
        gcells = torch.zeros_like(cells) if need_cells else None
        with recompile_limit(64):
            for start, a, b, dd, valid, n in edge_chunks(src, dst, d, chunked.EDGE_CHUNK):
                q = _level("first", filt, (gx, gcells), a, b, (g, x, a, b, dd, valid, cells, grid, symmetric, need_cells))
                gd[start : start + n] = q[:n]
        ctx.save_for_backward(g, x, d, cells, src, dst)
        ctx.options = options
        ctx.set_materialize_grads(False)
        return gx, gd, gcells

    @staticmethod
    def backward(ctx, ggx, ggd, ggcells):  # noqa: ANN001
        g, x, d, cells, src, dst = ctx.saved_tensors
        filt, symmetric, _ = ctx.options
        if ggcells is not None:  # a derivative of the weights' gradient: exact, by plain autograd
            return (*_plain_second(ctx, ggx, ggd, ggcells), None, None, None)
        ggx = torch.zeros_like(x) if ggx is None else ggx
        ggd = torch.zeros_like(d) if ggd is None else ggd
        grid = grid_constants(filt, d)
        dg, dx, dd, dcells = torch.zeros_like(g), torch.zeros_like(x), torch.empty_like(d), torch.zeros_like(cells)
        with recompile_limit(64):
            for start, a, b, di, valid, n in edge_chunks(src, dst, d, chunked.EDGE_CHUNK):
                q = _padded(ggd, start, chunked.EDGE_CHUNK)
                dd_c = _level("second", filt, (dg, dx, dcells), a, b,
                              (ggx, q, g, x, a, b, di, valid, cells, grid, symmetric))
                dd[start : start + n] = dd_c[:n]
        return dg, dx, dd, dcells, None, None, None


def _plain_second(ctx, ggx, ggd, ggcells):  # noqa: ANN001, ANN202
    """Level 2 by autograd of the plain level-1 formula (only for derivatives of weight gradients)."""
    g, x, d, cells, src, dst = ctx.saved_tensors
    filt, symmetric, _ = ctx.options
    with torch.enable_grad():
        g, x, d, cells = (t.detach().requires_grad_() for t in (g, x, d, cells))
        out = plain_sum(x, src, dst, filt(d, cells), symmetric)
        first = torch.autograd.grad(out, (x, d, cells), g, create_graph=True)
        pairs = [(f, gg) for f, gg in zip(first, (ggx, ggd, ggcells)) if gg is not None]
        return torch.autograd.grad([f for f, _ in pairs], (g, x, d, cells), [gg for _, gg in pairs],
                                   allow_unused=True)


def grid_sum(x: Tensor, src: Tensor, dst: Tensor, d: Tensor, cells: Tensor, filt: Filter, symmetric: bool) -> Tensor:
    """The sum through ``cells`` [G - 1, 4, F] in the fused kernels, every derivative in closed form.

    ``filt`` names the grid (``r_min``, ``spacing``), chooses ``compile`` and, called as
    ``filt(d, cells)``, is the formula that a derivative of the cells' gradient differentiates.
    """
    return _GridSum.apply(x, src, dst, d, cells, (filt, symmetric))


class GridSum(Aggregation):
    """The sum through a :class:`GridFilter` rebuilt from the weights at every forward pass, in fused
    kernels with every derivative a force loss needs in closed form: the training path."""

    def __init__(self, filter: GridFilter) -> None:
        if not isinstance(filter, GridFilter):
            raise TypeError(f"GridSum: expected a GridFilter, found {type(filter).__name__}")
        super().__init__(filter)

    def edge_attr(self, d: Tensor) -> tuple[Tensor, ...]:
        return (d,)

    def __call__(
        self, conv: Module, x: Tensor, edge_index: Tensor, edge_attr: tuple[Tensor, ...], symmetric: bool
    ) -> Tensor:
        (cells,) = self.filter.params(conv)  # [G - 1, 4, F], differentiable in the filter weights
        return grid_sum(x, edge_index[0], edge_index[1], edge_attr[0], cells, self.filter, symmetric)
