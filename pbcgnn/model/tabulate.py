"""Tabulated SchNet for fast inference: every filter network as a cubic Hermite table in distance.

A SchNet filter ``W_t(d) = MLP_t(e(d)) * f_c(d)`` [F] depends on the edge length only, so it
can be evaluated once on a grid and interpolated: per edge a table lookup and a cubic
polynomial replace the Gaussian basis and two dense layers (50 -> 128 -> 128). The table
holds ``W_t`` and ``dW_t/dd`` (exact, by forward-mode autograd) at every grid point; between
two points the filter is the cubic Hermite polynomial matching both at both ends, so the
interpolant and its derivative (the forces) are continuous, and it reaches the envelope's
zero at the cutoff with zero slope. Interpolation error: ``h^4 max|W^(4)| / 384`` in the
filter, about ``h^3 max|W^(4)| / 72`` in its derivative.

Default grid: ``n_points=2401`` from 0 to the cutoff (h = 2.5 mA at 6 A; 15 MiB at F = 128,
6 interactions, float32). On real water frames (``tests/speed/test_speed_tabulate.py``,
tolerance 1e-5) the tabulated model's energy and forces agree with the exact model to
~1e-9 relative in float64 for random weights and ~2e-7 for a trained model (energy relative
to ``E - sum E0``, forces and stress as max |difference| / max |exact|); ``n_points=1201``
gives ~2e-6. In float32 the difference is the float32 rounding of the exact model (~1e-6).

Use it for MD and evaluation, not for training (the table has no weights)::

    from pbcgnn.model.tabulate import tabulate
    fast = tabulate(model)            # a TabulatedSchNet in eval mode, same dtype and device
    atoms.calc = PbcgnnCalculator(fast)
"""
from __future__ import annotations

import logging
import math
from functools import partial

import torch
from torch import Tensor

from . import chunked
from .schnet import SchNet

__all__ = ["tabulate", "TabulatedSchNet", "FilterTable"]

log = logging.getLogger(__name__)


class FilterTable(torch.nn.Module):
    r"""Cubic Hermite tables of the filters :math:`W_t(d)` of every interaction.

    With grid points :math:`r_k = r_{min} + k h`, values :math:`y_k = W_t(r_k)` and scaled
    slopes :math:`m_k = h\,W_t'(r_k)`, on :math:`r_k \le d \le r_{k+1}`, :math:`s = (d - r_k)/h`:

    .. math::
        W_t(d) = y_k + s^2 (3 - 2s)(y_{k+1} - y_k) + s (1 - s)\left((1 - s)\,m_k - s\,m_{k+1}\right)

    In eval mode :meth:`filter_sum` runs edge chunk by edge chunk with :math:`dW/dd` in
    closed form (no autograd, nothing of size [E, F] kept) and, with ``compile=True``, each
    chunk is one ``torch.compile``-fused kernel (lookup, polynomial, gathers, products, and
    the scatter on GPUs and single-threaded CPUs); if compilation fails it falls back to
    eager, with a warning. The first call compiles (seconds; PyTorch caches kernels on disk).

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

    def filter_sum(self, interaction: int, x: Tensor, edge_index: Tensor, d: Tensor, symmetric: bool) -> Tensor:
        """``sum_j x_j * W_t(d_ji)`` at every centre, [N, F] (as :meth:`pbcgnn.model.CFConv.filter_sum`)."""
        if self.training:
            w = self(interaction, d)  # [E, F]
            j, i = edge_index
            out = torch.zeros_like(x).index_add(0, i, x.index_select(0, j) * w)
            return out.index_add(0, j, x.index_select(0, i) * w) if symmetric else out
        return _TableSum.apply(x, edge_index[0], edge_index[1], d, (self, interaction, symmetric))

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


_KERNELS: dict[str, object] = {}  # name -> compiled function, or None once compilation failed


def _run(name: str, fn, use_compile: bool, *args):  # noqa: ANN001, ANN202
    """``fn(*args)``, through ``torch.compile`` when asked and possible (eager after a failure).

    Grid constants travel as 0-d tensors and the leading sizes of the [N, F] and [G, 2, F]
    arguments are marked dynamic, so a kernel serves every system size and grid; dtype,
    device, width F, chunk size, ``symmetric`` and the table's storage offset (first
    interaction or not) specialise it: a few variants, so :class:`_TableSum` raises
    dynamo's recompile limit for its loops only.
    """
    kernel = _KERNELS.get(name, ...) if use_compile else None
    if kernel is ...:
        kernel = _KERNELS[name] = torch.compile(fn)
    if kernel is not None:
        try:
            args = [a.detach() if isinstance(a, Tensor) else a for a in args]
            for t in args:
                if isinstance(t, Tensor) and t.dim() >= 2:
                    torch._dynamo.mark_dynamic(t, 0)
            return kernel(*args)
        except Exception as err:  # noqa: BLE001 (no compiler, unsupported backend: run eagerly)
            log.warning("torch.compile of the table kernel %s failed (%s: %s); running eagerly",
                        name, type(err).__name__, str(err).splitlines()[0] if str(err) else "")
            _KERNELS[name] = None
    return fn(*args)


def _chunks(src: Tensor, dst: Tensor, d: Tensor, chunk: int):
    """(start, a, b, d, valid, n) per chunk of ``chunk`` edges; the last one padded with valid = 0."""
    ones = torch.ones(chunk, dtype=d.dtype, device=d.device)
    for start in range(0, src.numel(), chunk):
        a, b, dd = src[start : start + chunk], dst[start : start + chunk], d[start : start + chunk]
        n = a.numel()
        if n < chunk:  # one kernel shape for every chunk: no recompilation for the tail
            pad = chunk - n
            a, b = torch.cat([a, a.new_zeros(pad)]), torch.cat([b, b.new_zeros(pad)])
            dd = torch.cat([dd, dd[:1].expand(pad)])
            yield start, a, b, dd, torch.cat([ones[:n], ones.new_zeros(pad)]), n
        else:
            yield start, a, b, dd, ones, n


def _grid(table: FilterTable, t: int, like: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """The table [G, 2, F] of interaction t, and (r_min, 1 / spacing) as 0-d tensors."""
    grid = (torch.tensor(table.r_min, dtype=like.dtype, device=like.device),
            torch.tensor(1.0 / table.spacing, dtype=like.dtype, device=like.device))
    return table.nodes[t], grid


def _fuse_scatter(x: Tensor) -> bool:
    """Scatter inside the compiled kernel? Yes on GPUs and on one CPU thread; with several CPU
    threads the generated code adds atomically and gets ~5x slower, so torch's index_add_ does it."""
    return x.device.type != "cpu" or torch.get_num_threads() == 1


class _TableSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, src, dst, d, options):  # noqa: ANN001
        table, t, symmetric = options
        nodes, grid = _grid(table, t, d)
        fuse = _fuse_scatter(x)
        out = torch.zeros_like(x)
        with torch._dynamo.config.patch(recompile_limit=64):
            for _, a, b, dd, valid, _ in _chunks(src, dst, d, chunked.EDGE_CHUNK):
                if fuse:
                    _run("forward", _chunk_forward, table.compile, x, a, b, dd, valid, out, nodes, grid, symmetric)
                    continue
                to_b, to_a = _run("messages", _messages, table.compile, x, a, b, dd, valid, nodes, grid, symmetric)
                out.index_add_(0, b, to_b)
                if symmetric:
                    out.index_add_(0, a, to_a)
        ctx.save_for_backward(x, src, dst, d)
        ctx.options = options
        return out

    @staticmethod
    def backward(ctx, grad_out):  # noqa: ANN001
        x, src, dst, d = ctx.saved_tensors
        table, t, symmetric = ctx.options
        if torch.is_grad_enabled():  # create_graph: differentiate the plain formula
            # Fresh aliases: x itself depends on d through earlier blocks, and the gradient
            # wanted here is the partial one, not the total derivative through x.
            x, d = x.view_as(x), d.view_as(d)
            w = table(t, d)
            out = torch.zeros_like(x).index_add(0, dst, x.index_select(0, src) * w)
            if symmetric:
                out = out.index_add(0, src, x.index_select(0, dst) * w)
            wrt = [v for v, n in zip((x, d), ctx.needs_input_grad[::3]) if n]
            grads = list(torch.autograd.grad(out, wrt, grad_out, create_graph=True, allow_unused=True))
            gx = grads.pop(0) if ctx.needs_input_grad[0] else None
            gd = grads.pop(0) if ctx.needs_input_grad[3] else None
            return gx, None, None, gd, None
        nodes, grid = _grid(table, t, d)
        fuse = _fuse_scatter(x)
        grad_x = torch.zeros_like(x)
        grad_d = torch.empty_like(d)
        with torch._dynamo.config.patch(recompile_limit=64):
            for start, a, b, dd, valid, n in _chunks(src, dst, d, chunked.EDGE_CHUNK):
                if fuse:
                    gd = _run("backward", _chunk_backward, table.compile,
                              grad_out, x, a, b, dd, valid, grad_x, nodes, grid, symmetric)
                else:
                    at_a, at_b, gd = _run("gradients", _gradients, table.compile,
                                          grad_out, x, a, b, dd, valid, nodes, grid, symmetric)
                    grad_x.index_add_(0, a, at_a)
                    if symmetric:
                        grad_x.index_add_(0, b, at_b)
                grad_d[start : start + n] = gd[:n]
        return grad_x, None, None, grad_d, None


class TabulatedSchNet(SchNet):
    """A :class:`SchNet` whose filters come from a :class:`FilterTable` (build it with :func:`tabulate`).

    Everything else (embedding, atom-wise layers, readout, reference energies) is the exact
    model's. Distances below the table's first point raise ``ValueError`` (never
    extrapolated); edges at or beyond the cutoff are dropped as in :class:`SchNet`.
    The table is derived data: save and train the exact model, tabulate after loading.
    """

    def __init__(self, hparams: dict, table: FilterTable) -> None:
        super().__init__(**hparams)
        self.table = table

    def interact(self, h: Tensor, edge_index: Tensor, d: Tensor, symmetric: bool) -> Tensor:
        if d.numel() and float(d.detach().min()) < self.table.r_min:
            raise ValueError(
                f"TabulatedSchNet: an edge of length {float(d.detach().min()):.4g} A is below the table's "
                f"r_min = {self.table.r_min:g} A; tabulate with a smaller r_min"
            )
        for t, block in enumerate(self.interactions):
            filter_sum = partial(self.table.filter_sum, t, d=d, symmetric=symmetric)
            h = h + block.convolve(h, edge_index, filter_sum)
        return h


@torch.no_grad()
def _filter_nodes(model: SchNet, r_min: float, n_points: int) -> tuple[Tensor, float]:
    """Values and scaled slopes [T, G, 2, F] (float64) of the model's filters, and the spacing."""
    exact = SchNet(**model.hparams).double()
    exact.load_state_dict(model.state_dict())
    r = torch.linspace(r_min, exact.cutoff, n_points, dtype=torch.float64)  # [G]
    h = (exact.cutoff - r_min) / (n_points - 1)
    nodes = []
    for block in exact.interactions:
        conv = block.conv

        def filt(d: Tensor, conv=conv) -> Tensor:
            return conv.filter(exact.rbf(d), exact.envelope(d))

        with torch.enable_grad():
            y, dy = torch.func.jvp(filt, (r,), (torch.ones_like(r),))  # [G, F] each: W and dW/dd
        nodes.append(torch.stack([y, dy * h], dim=1))  # [G, 2, F]; slopes in grid units
    return torch.stack(nodes), h  # [T, G, 2, F]


def tabulate(model: SchNet, n_points: int = 2401, r_min: float = 0.0, compile: bool = True) -> TabulatedSchNet:
    """A copy of ``model`` whose filter networks are cubic Hermite tables in distance.

    The table is built in float64 from the exact filters and their exact derivatives on
    ``n_points`` evenly spaced distances from ``r_min`` to the cutoff, then cast to the
    model's dtype. See the module docstring for the error. ``model`` is not modified.

    Args:
        model: a :class:`SchNet` (trained or not), any dtype and device.
        n_points: grid points, at least 2 (default 2401: 2.5 mA steps for a 6 A cutoff).
        r_min: first grid point in Angstrom (default 0: every distance is covered); a
            shorter edge raises ``ValueError`` at evaluation.
        compile: fuse the table kernels with ``torch.compile`` (:class:`FilterTable`).

    Returns:
        A :class:`TabulatedSchNet` in eval mode on the model's device and dtype.
    """
    if type(model) is not SchNet:
        raise ValueError(f"tabulate: expected a SchNet, found {type(model).__name__}")
    if n_points < 2 or not 0.0 <= r_min < model.cutoff or not math.isfinite(r_min):
        raise ValueError(
            f"tabulate: expected n_points >= 2 and 0 <= r_min < cutoff ({model.cutoff} A), "
            f"found n_points={n_points}, r_min={r_min}"
        )
    param = next(model.parameters())
    nodes, h = _filter_nodes(model, float(r_min), int(n_points))
    table = FilterTable(nodes.to(device=param.device, dtype=param.dtype), r_min, h, compile)
    fast = TabulatedSchNet(model.hparams, table).to(device=param.device, dtype=param.dtype)
    fast.load_state_dict({**model.state_dict(), "table.nodes": table.nodes})
    return fast.eval()
