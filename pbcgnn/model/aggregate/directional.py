r"""Directional sums through filter tables, every derivative in closed form: PaiNN's vector messages.

:mod:`.grid` sums :math:`\mathbf{o}_i = \sum_j \mathbf{x}_j \odot W(d_{ji})`; equivariant
models also send messages along the edge direction,

.. math::
    \mathbf{o}^\alpha_i = \sum_{e = (j \to i)} \mathbf{x}_j \odot W(d_e)\, n^\alpha_e
    \qquad [N, 3, F],

with :math:`\mathbf n_e` the unit vector from the centre to the neighbour (for a symmetric list the
mirror message :math:`\mathbf x_i \odot W(d_e)\,(-\mathbf n_e)` goes to :math:`j`). ``n`` enters as
its own input (the caller differentiates :math:`\mathbf n = \mathbf r / d` by autograd on [E, 3]).
With :math:`\mathbf p_e = \sum_\alpha \mathbf g^\alpha_i n^\alpha_e` (the upstream gradient
:math:`\mathbf g = \partial L / \partial \mathbf o` projected on the edge), the first level is

.. math::
    \bar{\mathbf x}_j = \sum_e \mathbf p_e \odot W_e, \quad
    \bar d_e = (\mathbf p_e \odot \mathbf x_j) \cdot W'_e, \quad
    \bar n^\alpha_e = \mathbf g^\alpha_i \cdot (\mathbf x_j \odot W_e), \quad
    \bar T = \sum_e B(s_e) \otimes (\mathbf p_e \odot \mathbf x_j),

and the second level (:func:`_second`) its derivative, written out in the same way. Filters are
the Hermite cells of :mod:`.grid` (its :func:`~pbcgnn.model.aggregate.grid.hermite_cells`); each
level runs per edge chunk in one kernel, fused by ``torch.compile`` where that works, so nothing
of size [E, 3, F] outlives a chunk. ``tests/model/test_painn_fast.py`` compares energies, forces,
stress and every parameter gradient of an energy+force loss with plain autograd in float64.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .._torch_compat import executed_inputs, recompile_limit
from . import chunked
from .grid import _add_at, _add_cells, _interpolate, _padded
from .kernels import edge_chunks, fuse_scatter, grid_constants, run_kernel

__all__ = ["directional_sum", "plain_directional_sum"]


def plain_directional_sum(x: Tensor, src: Tensor, dst: Tensor, W: Tensor, n: Tensor, symmetric: bool) -> Tensor:
    """The sum by ``index_add`` [N, 3, F] from per-edge filters ``W`` [E, F] and directions ``n`` [E, 3]
    (the reference, and the formula a derivative of the weights' gradient differentiates)."""
    out = torch.zeros(x.shape[0], 3, x.shape[1], dtype=x.dtype, device=x.device)
    out.index_add_(0, dst, n.unsqueeze(2) * (x.index_select(0, src) * W).unsqueeze(1))
    if symmetric:
        out.index_add_(0, src, -n.unsqueeze(2) * (x.index_select(0, dst) * W).unsqueeze(1))
    return out


def _project(g: Tensor, idx: Tensor, n: Tensor) -> Tensor:
    """``sum_alpha g[idx]^alpha n^alpha`` [C, F] from g [N, 3, F]."""
    return (g.index_select(0, idx) * n.unsqueeze(2)).sum(dim=1)


def _forward(x, a, b, d, n, valid, cells, grid, symmetric: bool):  # noqa: ANN001, ANN202
    """Messages of one chunk [C, 3, F]: to b, and (symmetric) the mirror to a. Per-chunk [C, 3] inputs
    travel flat ([3C]): the kernels mark the leading size of 2-d arguments dynamic, which a chunk's is not."""
    n = n.reshape(-1, 3)
    w = _interpolate(d, cells, *grid, order=0)[0][0] * valid.unsqueeze(-1)
    to_b = n.unsqueeze(2) * (x.index_select(0, a) * w).unsqueeze(1)
    to_a = -n.unsqueeze(2) * (x.index_select(0, b) * w).unsqueeze(1) if symmetric else None
    return to_b, to_a


def _first(g, x, a, b, d, n, valid, cells, grid, symmetric: bool, cell_grads: bool):  # noqa: ANN001, ANN202
    """First derivatives of one chunk from dL/do ``g`` [N, 3, F]: dL/dx at a (and b) [C, F], dL/dd [C],
    dL/dn [C, 3], dL/dT [C, 4, F] (``None`` unless ``cell_grads``) and the intervals."""
    n = n.reshape(-1, 3)
    (w, dw), base, bases = _interpolate(d, cells, *grid, order=1, basis=cell_grads)
    valid = valid.unsqueeze(-1)
    w, dw = w * valid, dw * valid
    x_a = x.index_select(0, a)
    p = _project(g, b, n)  # [C, F]
    v = p * x_a  # dL/dW
    gn = (g.index_select(0, b) * (x_a * w).unsqueeze(1)).sum(dim=2)  # [C, 3]
    at_b = None
    if symmetric:
        x_b, p_m = x.index_select(0, b), -_project(g, a, n)
        v = torch.addcmul(v, p_m, x_b)
        gn = gn - (g.index_select(0, a) * (x_b * w).unsqueeze(1)).sum(dim=2)
        at_b = p_m * w
    t = (bases[0] * valid).unsqueeze(-1) * v.unsqueeze(1) if cell_grads else None
    return p * w, at_b, (v * dw).sum(dim=1), gn, t, base


def _second_half(g, hx, q, m, x_src, w, dw, n, dst):  # noqa: ANN001, ANN202
    """One direction's second-level terms (messages x_src -> dst along n): dL/dg at dst [C, 3, F],
    dL/dx at src [C, F], dL/dn [C, 3], and its parts u, v of dL/dW, dL/dW' [C, F]."""
    g_d = g.index_select(0, dst)  # [C, 3, F]
    p = (g_d * n.unsqueeze(2)).sum(dim=1)  # [C, F]
    k = (g_d * m.unsqueeze(2)).sum(dim=1)  # [C, F]
    r = hx * w + q * x_src * dw  # [C, F]
    dg = n.unsqueeze(2) * r.unsqueeze(1) + m.unsqueeze(2) * (x_src * w).unsqueeze(1)
    dx = q * p * dw + k * w
    dn = (g_d * r.unsqueeze(1)).sum(dim=2)
    return dg, dx, dn, hx * p + k * x_src, p * x_src


def _second(ggx, q, m, g, x, a, b, d, n, valid, cells, grid, symmetric: bool):  # noqa: ANN001, ANN202
    """Second level of one chunk, from dL/d(first outputs) ``ggx`` [N, F], ``q`` [C], ``m`` [C, 3]:
    dL/dg at b (and a) [C, 3, F], dL/dx at a (and b) [C, F], dL/dd [C], dL/dn [C, 3], dL/dT and intervals."""
    n, m = n.reshape(-1, 3), m.reshape(-1, 3)
    (w, dw, ddw), base, (basis, db, _) = _interpolate(d, cells, *grid, order=2, basis=True)
    valid = valid.unsqueeze(-1)
    w, dw, ddw = w * valid, dw * valid, ddw * valid
    basis, db = basis * valid, db * valid
    qc = q.unsqueeze(-1)  # [C, 1]
    dg_b, dx_a, dn, u, v = _second_half(g, ggx.index_select(0, a), qc, m, x.index_select(0, a), w, dw, n, b)
    dg_a = dx_b = None
    if symmetric:  # the mirror: a <-> b, n -> -n, and dL/dn's upstream m -> -m
        dg_a, dx_b, dn_m, u_m, v_m = _second_half(g, ggx.index_select(0, b), qc, -m, x.index_select(0, b), w, dw,
                                                  -n, a)
        dn, u, v = dn - dn_m, u + u_m, v + v_m
    dd = (u * dw).sum(dim=1) + q * (v * ddw).sum(dim=1)
    dt = basis.unsqueeze(-1) * u.unsqueeze(1) + db.unsqueeze(-1) * (qc * v).unsqueeze(1)  # [C, 4, F]
    return dg_b, dg_a, dx_a, dx_b, dd, dn, dt, base


def _scatter_forward(out, a, b, res) -> None:  # noqa: ANN001
    _add_at(out, b, res[0], a, res[1])


def _scatter_first(gx, gcells, a, b, res):  # noqa: ANN001, ANN202
    at_a, at_b, gd, gn, t, base = res
    _add_at(gx, a, at_a, b, at_b)
    _add_cells(gcells, base, t)
    return gd, gn


def _scatter_second(dg, dx, dcells, a, b, res):  # noqa: ANN001, ANN202
    dg_b, dg_a, dx_a, dx_b, dd, dn, t, base = res
    _add_at(dg, b, dg_b, a, dg_a)
    _add_at(dx, a, dx_a, b, dx_b)
    _add_cells(dcells, base, t)
    return dd, dn


def _forward_fused(out, x, a, b, d, n, valid, cells, grid, symmetric: bool) -> None:  # noqa: ANN001
    _scatter_forward(out, a, b, _forward(x, a, b, d, n, valid, cells, grid, symmetric))


def _first_fused(gx, gcells, g, x, a, b, d, n, valid, cells, grid, symmetric: bool, cell_grads: bool):  # noqa: ANN001, ANN202
    return _scatter_first(gx, gcells, a, b, _first(g, x, a, b, d, n, valid, cells, grid, symmetric, cell_grads))


def _second_fused(dg, dx, dcells, ggx, q, m, g, x, a, b, d, n, valid, cells, grid, symmetric: bool):  # noqa: ANN001, ANN202
    return _scatter_second(dg, dx, dcells, a, b, _second(ggx, q, m, g, x, a, b, d, n, valid, cells, grid, symmetric))


_LEVELS = {"forward": (_forward, _forward_fused, _scatter_forward),
           "first": (_first, _first_fused, _scatter_first),
           "second": (_second, _second_fused, _scatter_second)}


def _level(name: str, compile: bool, outs: tuple, a: Tensor, b: Tensor, args: tuple):  # noqa: ANN202
    kernel, fused, scatter = _LEVELS[name]
    if fuse_scatter(outs[0]):
        return run_kernel(f"directional_{name}_fused", fused, compile, *outs, *args)
    return scatter(*outs, a, b, run_kernel(f"directional_{name}", kernel, compile, *args))


def _chunks(src: Tensor, dst: Tensor, d: Tensor, n: Tensor):
    """:func:`edge_chunks` with each chunk's directions, flat [3C] (padding 0)."""
    chunk = chunked.EDGE_CHUNK
    for start, a, b, dd, valid, count in edge_chunks(src, dst, d, chunk):
        yield start, a, b, dd, _rows(n, start, chunk), valid, count


def _rows(t: Tensor, start: int, chunk: int) -> Tensor:
    """``t[start : start + chunk]`` of [E, 3], zero-padded to ``chunk`` rows and flattened to [3C]."""
    part = t[start : start + chunk]
    if part.shape[0] < chunk:
        part = torch.cat([part, part.new_zeros(chunk - part.shape[0], 3)])
    return part.reshape(-1)


class _DirectionalSum(torch.autograd.Function):
    """Level 0; its backward is :class:`_DirectionalFirst`, itself differentiable."""

    @staticmethod
    def forward(ctx, x, src, dst, d, n, cells, options):  # noqa: ANN001
        filt, symmetric = options
        grid = grid_constants(filt, d)
        out = x.new_zeros(x.shape[0], 3, x.shape[1])
        with recompile_limit(64):
            for _, a, b, dd, nn, valid, _ in _chunks(src, dst, d, n):
                _level("forward", filt.compile, (out,), a, b, (x, a, b, dd, nn, valid, cells, grid, symmetric))
        ctx.save_for_backward(x, src, dst, d, n, cells)
        ctx.options = options
        return out

    @staticmethod
    def backward(ctx, grad_out):  # noqa: ANN001
        x, src, dst, d, n, cells = ctx.saved_tensors
        need_cells = executed_inputs(ctx.needs_input_grad, [0, 1, 2, 3, 4, 5])[5]
        gx, gd, gn, gcells = _DirectionalFirst.apply(grad_out, x, d, n, cells, src, dst, (*ctx.options, need_cells))
        return gx, None, None, gd, gn, gcells, None


class _DirectionalFirst(torch.autograd.Function):
    """Level 1: dL/dx, dL/dd, dL/dn and dL/dcells; its backward (level 2) in closed form."""

    @staticmethod
    def forward(ctx, g, x, d, n, cells, src, dst, options):  # noqa: ANN001
        filt, symmetric, need_cells = options
        grid = grid_constants(filt, d)
        gx, gd, gn = torch.zeros_like(x), torch.empty_like(d), torch.empty_like(n)
        gcells = torch.zeros_like(cells) if need_cells else None
        with recompile_limit(64):
            for start, a, b, dd, nn, valid, count in _chunks(src, dst, d, n):
                qd, qn = _level("first", filt.compile, (gx, gcells), a, b,
                                (g, x, a, b, dd, nn, valid, cells, grid, symmetric, need_cells))
                gd[start : start + count], gn[start : start + count] = qd[:count], qn[:count]
        ctx.save_for_backward(g, x, d, n, cells, src, dst)
        ctx.options = options
        ctx.set_materialize_grads(False)
        return gx, gd, gn, gcells

    @staticmethod
    def backward(ctx, ggx, ggd, ggn, ggcells):  # noqa: ANN001
        g, x, d, n, cells, src, dst = ctx.saved_tensors
        filt, symmetric, _ = ctx.options
        if ggcells is not None:  # a derivative of the weights' gradient: exact, by plain autograd
            return (*_plain_second(ctx, ggx, ggd, ggn, ggcells), None, None, None)
        ggx = torch.zeros_like(x) if ggx is None else ggx
        ggd = torch.zeros_like(d) if ggd is None else ggd
        ggn = torch.zeros_like(n) if ggn is None else ggn
        grid = grid_constants(filt, d)
        dg, dx, dcells = torch.zeros_like(g), torch.zeros_like(x), torch.zeros_like(cells)
        dd, dn = torch.empty_like(d), torch.empty_like(n)
        chunk = chunked.EDGE_CHUNK
        with recompile_limit(64):
            for start, a, b, di, nn, valid, count in _chunks(src, dst, d, n):
                q, m = _padded(ggd, start, chunk), _rows(ggn, start, chunk)
                qd, qn = _level("second", filt.compile, (dg, dx, dcells), a, b,
                                (ggx, q, m, g, x, a, b, di, nn, valid, cells, grid, symmetric))
                dd[start : start + count], dn[start : start + count] = qd[:count], qn[:count]
        return dg, dx, dd, dn, dcells, None, None, None


def _plain_second(ctx, ggx, ggd, ggn, ggcells):  # noqa: ANN001, ANN202
    """Level 2 by autograd of the plain level-1 formula (only for derivatives of weight gradients)."""
    g, x, d, n, cells, src, dst = ctx.saved_tensors
    filt, symmetric, _ = ctx.options
    with torch.enable_grad():
        g, x, d, n, cells = (t.detach().requires_grad_() for t in (g, x, d, n, cells))
        out = plain_directional_sum(x, src, dst, filt(d, cells), n, symmetric)
        first = torch.autograd.grad(out, (x, d, n, cells), g, create_graph=True)
        pairs = [(f, gg) for f, gg in zip(first, (ggx, ggd, ggn, ggcells)) if gg is not None]
        return torch.autograd.grad([f for f, _ in pairs], (g, x, d, n, cells), [gg for _, gg in pairs],
                                   allow_unused=True)


def directional_sum(x: Tensor, src: Tensor, dst: Tensor, d: Tensor, n: Tensor, cells: Tensor, filt,  # noqa: ANN001
                    symmetric: bool) -> Tensor:
    """:math:`\\sum_j \\mathbf x_j \\odot W(d) \\, \\mathbf n` [N, 3, F] through ``cells`` [G - 1, 4, F].

    ``filt`` names the grid (``r_min``, ``spacing``), chooses ``compile`` and, called as
    ``filt(d, cells)``, gives the per-edge filters (as :func:`pbcgnn.model.aggregate.grid.grid_sum`).
    ``src``/``dst`` are rows (j, i) of the edge list, ``d`` [E] the lengths, ``n`` [E, 3] the unit
    vectors from ``dst`` to ``src``.
    """
    return _DirectionalSum.apply(x, src, dst, d, n, cells, (filt, symmetric))
