"""The machinery of the compiled edge kernels (:mod:`.grid`, which :mod:`.table` also runs): compilation
with an eager fallback, fixed-size edge chunks, grid constants as tensors, where to scatter."""
from __future__ import annotations

import logging

import torch
from torch import Tensor

from .._torch_compat import mark_dynamic

__all__ = ["run_kernel", "edge_chunks", "grid_constants", "fuse_scatter"]

log = logging.getLogger(__name__)

_KERNELS: dict[str, object] = {}  # name -> compiled function, or None once compilation failed


def run_kernel(name: str, fn, use_compile: bool, *args):  # noqa: ANN001, ANN202
    """``fn(*args)``, through ``torch.compile`` when asked and possible (eager after a failure).

    Grid constants travel as 0-d tensors and the leading sizes of the [N, F] and [G - 1, 4, F]
    arguments are marked dynamic, so a kernel serves every system size and grid; dtype,
    device, width F, chunk size, ``symmetric`` and a table's storage offset (first
    interaction or not) specialise it: a few variants, so the grid's loops raise dynamo's
    recompile limit for themselves only.
    """
    kernel = _KERNELS.get(name, ...) if use_compile else None
    if kernel is ...:
        kernel = _KERNELS[name] = torch.compile(fn)
    if kernel is not None:
        try:
            args = [a.detach() if isinstance(a, Tensor) else a for a in args]
            for t in args:
                if isinstance(t, Tensor) and t.dim() >= 2:
                    mark_dynamic(t, 0)
            return kernel(*args)
        except Exception as err:  # noqa: BLE001 (no compiler, unsupported backend: run eagerly)
            log.warning("torch.compile of the edge kernel %s failed (%s: %s); running eagerly",
                        name, type(err).__name__, str(err).splitlines()[0] if str(err) else "")
            _KERNELS[name] = None
    return fn(*args)


def edge_chunks(src: Tensor, dst: Tensor, d: Tensor, chunk: int):
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


def grid_constants(table, like: Tensor) -> tuple[Tensor, Tensor]:  # noqa: ANN001
    """(r_min, 1 / spacing) of a grid (any object with ``r_min`` and ``spacing`` in Angstrom) as
    0-d tensors of ``like``'s dtype and device."""
    return (torch.tensor(table.r_min, dtype=like.dtype, device=like.device),
            torch.tensor(1.0 / table.spacing, dtype=like.dtype, device=like.device))


def fuse_scatter(x: Tensor) -> bool:
    """Scatter inside the compiled kernel? Yes on GPUs and on one CPU thread; with several CPU
    threads the generated code adds atomically and gets ~5x slower, so torch's index_add_ does it."""
    return x.device.type != "cpu" or torch.get_num_threads() == 1
