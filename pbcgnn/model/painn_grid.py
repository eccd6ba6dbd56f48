r"""PaiNN's training path: filters on a distance grid and fused edge kernels, derivatives in closed form.

A force loss differentiates PaiNN's message sums twice. Plain autograd keeps several [E, 3F]
tensors per layer for that and spends most of a step moving them through memory. Every PaiNN filter
:math:`\mathcal W(d) = (\mathbf A\, \mathbf e(d) + \mathbf b) f_c(d)` depends on the edge length
only, so, as SchNet's training path (:mod:`pbcgnn.model.aggregate.grid`) does, each step evaluates
all filters on a grid (5 mA, exact slopes, differentiably in the weights) and sums the messages in
edge-chunk kernels from their cubic Hermite cells:

.. math::
    \Delta s_i, \Delta \vec v^{\,vv}_i = \sum_j [\phi_s(s_j), \vec v_j \circ \phi_{vv}(s_j)] \circ
    [\mathcal W_s, \mathcal W_{vv}](d_{ij}) \quad (:func:`~pbcgnn.model.aggregate.grid.grid_sum`),

    \Delta \vec v^{\,vs}_i = \sum_j \phi_{vs}(s_j) \circ \mathcal W_{vs}(d_{ij})\, \hat r_{ij}
    \quad (:func:`~pbcgnn.model.aggregate.directional.directional_sum`).

The function equals the network's to ~1e-7 relative (the grid's interpolation error), far below
float32 rounding; ``tests/model/test_painn_grid.py`` compares energies, forces, stress and every
parameter gradient of an energy+force loss with the plain path in float64.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .aggregate.directional import directional_sum
from .aggregate.grid import GRID_SPACING, grid_sum, hermite_cells, interpolate

__all__ = ["FilterGrid", "filter_cells", "grid_message"]


class FilterGrid:
    """The distance grid from 0 to the cutoff the kernels interpolate on (spacing ~``GRID_SPACING``).

    Called as ``grid(d, cells)`` it gives the per-edge filters [E, F] (the formula the kernels'
    rarely needed third derivatives differentiate by autograd).
    """

    r_min = 0.0

    def __init__(self, cutoff: float, spacing: float = GRID_SPACING, compile: bool = True) -> None:
        self.points = max(2, math.ceil(cutoff / spacing) + 1)
        self.cutoff = float(cutoff)
        self.spacing = self.cutoff / (self.points - 1)
        self.compile = bool(compile)

    def __call__(self, d: Tensor, cells: Tensor) -> Tensor:
        return interpolate(d, cells, self.r_min, 1.0 / self.spacing)


def filter_cells(model, grid: FilterGrid) -> list[Tensor]:  # noqa: ANN001 (a PaiNN; no import cycle)
    """Every block's filter cells [G - 1, 4, 3F], built in float64 (differentiably in the weights) and
    cast to the model's dtype: neighbouring values differ by ~1e-3 of themselves at 5 mA, which float32
    differences would resolve to only ~4 digits."""
    weight, bias = model.filter_weights()  # [3FT, K], [3FT]
    dtype = weight.dtype
    weight, bias = weight.double(), bias.double()
    r = torch.linspace(0.0, grid.cutoff, grid.points, dtype=torch.float64, device=weight.device)
    cells = hermite_cells(lambda d: model.filter_values(d, weight, bias), r).to(dtype)  # [G - 1, 4, 3FT]
    return list(cells.split(3 * model.hidden_channels, dim=2))


def grid_message(message, s: Tensor, v: Tensor, src: Tensor, dst: Tensor, d: Tensor, n: Tensor,  # noqa: ANN001
                 cells: Tensor, grid: FilterGrid, symmetric: bool) -> tuple[Tensor, Tensor]:
    """:class:`~pbcgnn.model.painn.PaiNNMessage` ``message``'s ``(Delta s [N, F], Delta v [N, 3, F])``
    through the block's ``cells`` [G - 1, 4, 3F] (order s, vs, vv as its filter); ``n`` [E, 3] are the
    unit vectors from ``dst`` to ``src``, and with ``symmetric`` every edge also carries its mirror."""
    num, f = s.shape[0], message.channels
    x = message.phi2(F.silu(message.phi1(s)))  # [N, 3F]: phi_s, phi_vs, phi_vv
    vv = (v * x[:, 2 * f:].unsqueeze(1)).reshape(num, 3 * f)  # [N, 3F]
    c_s, c_vs, c_vv = cells.split(f, dim=2)
    packed = grid_sum(torch.cat([x[:, :f], vv], dim=1), src, dst, d, torch.cat([c_s, c_vv, c_vv, c_vv], dim=2),
                      grid, symmetric)  # [N, 4F]
    radial = directional_sum(x[:, f:2 * f], src, dst, d, n, c_vs, grid, symmetric)  # [N, 3, F]
    return packed[:, :f], packed[:, f:].reshape(num, 3, f) + radial
