"""Tabulated models for fast inference: every filter network as a cubic Hermite table in distance.

A SchNet filter ``W_t(d) = MLP_t(e(d)) * f_c(d)`` [F] depends on the edge length only, so it
can be evaluated once on a grid and interpolated: per edge a table lookup and a cubic
polynomial replace the Gaussian basis and two dense layers (50 -> 128 -> 128). The table
holds ``W_t`` and ``dW_t/dd`` (exact, by forward-mode autograd, in float64) at every grid
point, in the cells that training through filter grids also uses; between
two points the filter is the cubic Hermite polynomial matching both at both ends, so the
interpolant and its derivative (the forces) are continuous, and it reaches the envelope's
zero at the cutoff with zero slope. Interpolation error: ``h^4 max|W^(4)| / 384`` in the
filter, about ``h^3 max|W^(4)| / 72`` in its derivative. This module builds the table from
a model; the table and the kernels summing through it are in :mod:`pbcgnn.model.aggregate.table`.

Default grid: ``n_points=2401`` from 0 to the cutoff (h = 2.5 mA at 6 A; 29 MiB at F = 128,
6 interactions, float32). On real water frames (``tests/model/aggregate/test_table.py``,
tolerance 1e-5) the tabulated model's energy and forces agree with the exact model to
~1e-9 relative in float64 for random weights and ~2e-7 for a trained model (energy relative
to ``E - sum E0``, forces and stress as max |difference| / max |exact|); ``n_points=1201``
gives ~2e-6. In float32 the difference is the float32 rounding of the exact model (~1e-6).

PaiNN's filters (one per block, [3F] each) depend on the distance only too: :class:`TabulatedPaiNN`
keeps their cells on the 5 mA grid its training path uses (:mod:`pbcgnn.model.painn_grid`) and
sums messages in that path's fused kernels, without rebuilding the cells at every call. On a
trained 64x3 model and a 192-atom water frame in float32 its forces differ from the exact
model's by ~1e-6 of the largest (float32 rounding); MD on one thread is 2.1x faster at 192
atoms and 11x at 1536 (``benchmarks/md/results``); ``tests/model/test_tabulate_painn.py``
checks it in float64. A committee is
tabulated member by member.

Use it for MD and evaluation, not for training (the table has no weights)::

    from pbcgnn.model.tabulate import tabulate
    fast = tabulate(model)            # e.g. a TabulatedSchNet in eval mode, same dtype and device
    atoms.calc = PbcgnnCalculator(fast)
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .aggregate import Aggregation, FilterTable, TableFilter, select
from .aggregate.grid import hermite_cells
from .committee import Committee
from .painn import PaiNN
from .painn_grid import FilterGrid, filter_cells
from .schnet import SchNet

__all__ = ["tabulate", "tabulate_schnet", "TabulatedSchNet", "TabulatedPaiNN", "FilterTable", "TABULATED"]


class TabulatedSchNet(SchNet):
    """A :class:`SchNet` whose filters come from a :class:`FilterTable` (build it with :func:`tabulate`).

    Everything else (embedding, atom-wise layers, readout, reference energies) is the exact
    model's: only :meth:`aggregation` differs, reading the table instead of the filter
    networks. Distances below the table's first point raise ``ValueError`` (never
    extrapolated); edges at or beyond the cutoff are dropped as in :class:`SchNet`.
    The table is derived data: save and train the exact model, tabulate after loading.
    """

    def __init__(self, hparams: dict, table: FilterTable) -> None:
        super().__init__(**hparams)
        self.table = table

    def aggregation(self) -> Aggregation:
        """:func:`pbcgnn.model.aggregate.select` for the table's filters: the fused table kernels
        in eval mode, plain autograd through the table in training mode."""
        return select(TableFilter(self.table, [block.conv for block in self.interactions]), self.training)


@torch.no_grad()
def _filter_cells(model: SchNet, r_min: float, n_points: int) -> tuple[Tensor, float]:
    """The cells [T, G - 1, 4, F] (float64, :func:`~pbcgnn.model.aggregate.grid.hermite_cells`) of
    the model's filters, and the spacing."""
    exact = SchNet(**model.hparams).double()
    exact.load_state_dict(model.state_dict())
    r = torch.linspace(r_min, exact.cutoff, n_points, dtype=torch.float64)  # [G]
    cells = []
    for block in exact.interactions:
        conv = block.conv

        def filt(d: Tensor, conv=conv) -> Tensor:
            return conv.filter(exact.rbf(d), exact.envelope(d))

        with torch.enable_grad():
            cells.append(hermite_cells(filt, r))
    return torch.stack(cells), (exact.cutoff - r_min) / (n_points - 1)


class TabulatedPaiNN(PaiNN):
    """A :class:`PaiNN` whose filters come from cells built once (build it with :func:`tabulate`).

    Every call sums through the training path's grid kernels (:meth:`PaiNN.grid_energies`) with
    the stored ``cells`` [G - 1, 4, 3FT] (all blocks, in the model's dtype) instead of evaluating
    the filter networks. The cells are derived data: save and train the exact model.
    """

    def __init__(self, hparams: dict, cells: Tensor) -> None:
        super().__init__(**hparams)
        self.register_buffer("cells", cells)

    def edge_energies(self, z: Tensor, edge_index: Tensor, vec: Tensor, symmetric: bool) -> Tensor:
        """Per-atom energies [N] float64 eV; see :meth:`EnergyModel.edge_energies`."""
        edge_index, vec, d = self.within_cutoff(edge_index, vec)
        u = vec / d.unsqueeze(1)
        cells = list(self.cells.split(3 * self.hidden_channels, dim=2))
        return self.grid_energies(z, edge_index, d, u, symmetric, cells)


def _tabulate_painn(model: PaiNN) -> TabulatedPaiNN:
    param = next(model.parameters())
    cells = torch.cat(filter_cells(model, FilterGrid(model.cutoff)), dim=2).detach()  # float64-built, model dtype
    fast = TabulatedPaiNN(model.hparams, cells).to(device=param.device, dtype=param.dtype)
    fast.load_state_dict({**model.state_dict(), "cells": cells})
    return fast.eval()


#: What :func:`tabulate` makes of each model type.
TABULATED = {SchNet: "TabulatedSchNet", PaiNN: "TabulatedPaiNN", Committee: "a Committee of tabulated members"}


def tabulate(model: torch.nn.Module, *args, **kwargs) -> torch.nn.Module:
    """A copy of ``model`` for fast evaluation, equal to it within float32 rounding: a SchNet's
    filters as tables (:func:`tabulate_schnet`, taking ``args`` and ``kwargs``), a PaiNN's as the
    cells of its training grid (:class:`TabulatedPaiNN`, no options), a committee member by
    member. In eval mode; ``model`` is unchanged.

    Raises:
        ValueError: a model type not in :data:`TABULATED`, or table options for a PaiNN.
    """
    if type(model) is Committee:
        return Committee([tabulate(member, *args, **kwargs) for member in model.members], model.calibration).eval()
    if type(model) is PaiNN:
        if args or kwargs:
            raise ValueError("tabulate: a PaiNN is tabulated on its training grid; n_points, r_min and compile "
                             "are SchNet's table options")
        return _tabulate_painn(model)
    return tabulate_schnet(model, *args, **kwargs)


def tabulate_schnet(model: SchNet, n_points: int = 2401, r_min: float = 0.0,
                    compile: bool = True) -> TabulatedSchNet:
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
        raise ValueError(f"tabulate: expected one of {sorted(t.__name__ for t in TABULATED)}, "
                         f"found {type(model).__name__}")
    if n_points < 2 or not 0.0 <= r_min < model.cutoff or not math.isfinite(r_min):
        raise ValueError(
            f"tabulate: expected n_points >= 2 and 0 <= r_min < cutoff ({model.cutoff} A), "
            f"found n_points={n_points}, r_min={r_min}"
        )
    param = next(model.parameters())
    cells, h = _filter_cells(model, float(r_min), int(n_points))
    table = FilterTable(cells.to(device=param.device, dtype=param.dtype), r_min, h, compile)
    fast = TabulatedSchNet(model.hparams, table).to(device=param.device, dtype=param.dtype)
    fast.load_state_dict({**model.state_dict(), "table.cells": table.cells})
    return fast.eval()
