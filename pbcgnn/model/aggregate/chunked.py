"""Memory-bounded aggregation: edges in chunks, filters recomputed in the backward pass (the eval path)."""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from torch.nn import Module

from .._torch_compat import executed_inputs
from .base import Aggregation, recompute_backward

__all__ = ["EDGE_CHUNK", "KEEP_GRAPH_BYTES", "ChunkedSum", "chunked_aggregate"]

#: Edges per chunk: [EDGE_CHUNK, F] temporaries stay in the CPU cache (2 MiB at F = 128,
#: float32) and the Python loop costs a few per cent at 192 atoms.
EDGE_CHUNK = 4096

#: Below this estimated size (6 [E, F] tensors) the chunks' filter graphs from the forward
#: pass are kept for the backward pass instead of recomputed: small systems (192 water
#: atoms: ~25 MiB per interaction) skip the recomputation, large ones keep O(chunk) memory.
KEEP_GRAPH_BYTES = 64 * 2**20


class ChunkedSum(Aggregation):
    """:func:`chunked_aggregate` with the layer's filter recomputed from the edge lengths per chunk.

    Nothing of size [E, K] or [E, F] outlives a chunk (above :data:`KEEP_GRAPH_BYTES`), so
    energy and forces of 10^5 atoms fit in a few GiB; a second derivative is exact but slow
    (it recomputes the unchunked graph): the eval path.
    """

    def __call__(
        self, conv: Module, x: Tensor, edge_index: Tensor, edge_attr: tuple[Tensor, ...], symmetric: bool
    ) -> Tensor:
        return chunked_aggregate(x, edge_index, self._weights, edge_attr, self.filter.params(conv), symmetric)

    def _weights(self, d: Tensor, *params: Tensor) -> Tensor:
        """Filters [C, F] of a chunk of edge lengths ``d`` [C] for the filter weights ``params``."""
        return self.filter(*self.filter.inputs(d), *params)


def chunked_aggregate(
    x: Tensor,
    edge_index: Tensor,
    filter_fn: Callable[..., Tensor],
    features: Sequence[Tensor],
    params: Sequence[Tensor] = (),
    symmetric: bool = False,
    chunk: int | None = None,
) -> Tensor:
    r"""``out_i = sum_{e = (j -> i)} x_j * W_e`` with ``W = filter_fn(*features, *params)``, in bounded memory.

    The same sum as :class:`pbcgnn.model.aggregate.AutogradSum` (``propagate`` with ``message = x_j * W``),
    evaluated ``chunk`` edges at a time. Above :data:`KEEP_GRAPH_BYTES` nothing of size
    [E, F] is kept for the backward pass: it saves ``x`` and the per-edge ``features`` and
    recomputes each chunk's filter there, so forces need O(N F + E K + chunk F) memory
    instead of several [E, F] tensors per interaction. A second derivative (a force loss,
    ``create_graph=True``) is exact too, but recomputes the whole unchunked graph: training
    uses :class:`~pbcgnn.model.aggregate.GridSum` instead.

    With ``symmetric``, every edge ``(j, i)`` also carries the reverse message ``x_i * W_e``
    to ``j`` (``edge_index`` holds one edge per mirror pair, :func:`pbcgnn.neighbors.mirror_pairs`),
    so the filter is evaluated once per pair.

    Args:
        x: [N, F] node features.
        edge_index: [2, E] int64, rows (j, i).
        filter_fn: ``filter_fn(*features_of_a_chunk, *params)`` -> filters [C, F]; a
            differentiable function of its arguments, using no other tensor that needs a gradient.
        features: per-edge tensors [E, ...] (e.g. radial basis and envelope, or distances);
            gradients reach them by autograd.
        params: the filter's weights, passed to ``filter_fn`` so gradients reach them too.
        symmetric: add the reverse message of every edge.
        chunk: edges per chunk (default :data:`EDGE_CHUNK`).

    Returns:
        [N, F] aggregated messages.
    """
    # Views give leaf parameters a graph node of their own, so the backward pass can ask the
    # engine whether their gradient is wanted at all (forces need none: skip those matmuls).
    tensors = [t.view_as(t) if t.requires_grad else t for t in (*features, *params)]
    options = (filter_fn, symmetric, int(chunk or EDGE_CHUNK), len(features))
    return _ChunkedAggregate.apply(x, edge_index[0], edge_index[1], options, *tensors)


_FIRST = 4  # position of the first feature among the inputs of _ChunkedAggregate.apply


def _wanted(ctx) -> list[bool]:  # noqa: ANN001
    """``ctx.needs_input_grad``, narrowed to the inputs this backward pass really reaches."""
    # The tensor inputs: x, src, dst, then the features/params (options is not a tensor).
    return executed_inputs(ctx.needs_input_grad, [0, 1, 2, *range(_FIRST, len(ctx.needs_input_grad))])


class _ChunkedAggregate(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, src, dst, options, *tensors):  # noqa: ANN001
        filter_fn, symmetric, chunk, n_features = options
        features, params = tensors[:n_features], tensors[n_features:]
        need_features = ctx.needs_input_grad[_FIRST : _FIRST + n_features]
        keep = any(ctx.needs_input_grad) and 6 * src.numel() * x.shape[1] * x.element_size() <= KEEP_GRAPH_BYTES
        graphs = [] if keep else None
        out = torch.zeros_like(x)  # [N, F]
        for start in range(0, src.numel(), chunk):
            a, b = src[start : start + chunk], dst[start : start + chunk]  # [C]
            part = [f[start : start + chunk] for f in features]
            if keep:  # build the filter's graph now, for the backward pass
                with torch.enable_grad():
                    part = [f.detach().requires_grad_(n) for f, n in zip(part, need_features)]
                    w = filter_fn(*part, *params)  # [C, F]
                graphs.append((part, w))
                w = w.detach()
            else:
                w = filter_fn(*part, *params)  # [C, F]
            out.index_add_(0, b, x.index_select(0, a) * w)
            if symmetric:
                out.index_add_(0, a, x.index_select(0, b) * w)
        ctx.save_for_backward(x, src, dst, *tensors)
        ctx.options, ctx.graphs = options, graphs
        return out

    @staticmethod
    def backward(ctx, grad_out):  # noqa: ANN001
        x, src, dst, *tensors = ctx.saved_tensors
        filter_fn, symmetric, chunk, n_features = ctx.options
        features, params = tensors[:n_features], tensors[n_features:]
        need = _wanted(ctx)
        graphs, ctx.graphs = ctx.graphs, None  # used once (a second backward recomputes)
        if torch.is_grad_enabled():  # create_graph: differentiate an unchunked recomputation
            grads = recompute_backward(grad_out, x, src, dst, filter_fn, tensors, [need[0], *need[_FIRST:]], symmetric)
            return (grads[0], None, None, None, *grads[1:])
        need_x, need_features, need_params = need[0], need[_FIRST : _FIRST + n_features], need[_FIRST + n_features :]
        grad_x = torch.zeros_like(x) if need_x else None
        grad_features = [torch.empty_like(f) if n else None for f, n in zip(features, need_features)]
        grad_params = [torch.zeros_like(p) if n else None for p, n in zip(params, need_params)]
        wrt_params = [p for p, n in zip(params, need_params) if n]
        for index, start in enumerate(range(0, src.numel(), chunk)):
            stop = start + chunk
            a, b = src[start:stop], dst[start:stop]
            if graphs is not None:
                part, w = graphs[index]
            else:
                with torch.enable_grad():  # recompute this chunk's filter with its graph
                    part = [f[start:stop].detach().requires_grad_(n) for f, n in zip(features, need_features)]
                    w = filter_fn(*part, *params)  # [C, F]
            g_b = grad_out.index_select(0, b)  # [C, F] gradient at the receiving centres
            x_a = x.index_select(0, a)
            if symmetric:
                g_a = grad_out.index_select(0, a)
                grad_w = torch.addcmul(g_b * x_a, g_a, x.index_select(0, b))  # [C, F]
            else:
                grad_w = g_b * x_a
            if need_x:
                grad_x.index_add_(0, a, g_b * w.detach())
                if symmetric:
                    grad_x.index_add_(0, b, g_a * w.detach())
            wrt = [p for p, n in zip(part, need_features) if n] + wrt_params
            if not wrt:
                continue
            grads = list(torch.autograd.grad(w, wrt, grad_w, allow_unused=True)) if w.requires_grad else [None] * len(wrt)
            for k, n in enumerate(need_features):
                if n:
                    g = grads.pop(0)
                    grad_features[k][start:stop] = 0.0 if g is None else g
            for k, n in enumerate(need_params):
                if n:
                    g = grads.pop(0)
                    if g is not None:
                        grad_params[k] += g
        return (grad_x, None, None, None, *grad_features, *grad_params)

