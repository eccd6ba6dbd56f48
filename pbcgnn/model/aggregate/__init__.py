r"""How a CFConv's sum :math:`\mathbf{o}_i = \sum_j \mathbf{x}_j \odot W(d_{ji})` is computed: one seam.

A :class:`Filter` says what :math:`W` is: the filter network on the radial basis
(:class:`NetworkFilter`) or a cubic Hermite table of it (:class:`TableFilter`). An
:class:`Aggregation` says how the sum and its derivatives are computed; all give the same
result to float rounding:

- :class:`GridSum` (``grid.py``): the filter network evaluated on a distance grid every
  step and interpolated per edge, fused kernels with the second derivative a force loss
  needs in closed form: training.
- :class:`AutogradSum` (``autograd.py``): every filter at once, PyG ``propagate``, plain
  autograd: the reference, and training of filters without a known cutoff.
- :class:`ChunkedSum` (``chunked.py``): edges in chunks, filters recomputed in the backward
  pass; memory bounded: evaluation.
- :class:`TableSum` (``table.py``): a table of the filters, built once, in :class:`GridSum`'s
  kernels: evaluation and MD of a tabulated model.

:func:`select` is the one place that picks an implementation; a model calls it once per
forward pass (:meth:`pbcgnn.model.SchNet.aggregation`) and hands the result to every layer.
A new implementation is one module with an :class:`Aggregation` subclass, and a line here.
"""
from __future__ import annotations

from .autograd import AutogradSum
from .base import Aggregation, Filter
from .chunked import ChunkedSum
from .grid import GridFilter, GridSum
from .network import NetworkFilter, filter_network
from .table import FilterTable, TableFilter, TableSum

__all__ = [
    "Aggregation",
    "AutogradSum",
    "ChunkedSum",
    "Filter",
    "FilterTable",
    "GridFilter",
    "GridSum",
    "NetworkFilter",
    "TableFilter",
    "TableSum",
    "filter_network",
    "select",
]


def select(filter: Filter, training: bool) -> Aggregation:
    """The aggregation a model uses for ``filter`` in its current mode: the one place of this choice.

    Args:
        filter: what the layers' :math:`W` is.
        training: the model's mode (``module.training``).

    Returns:
        In training mode :class:`GridSum` for a :class:`NetworkFilter` that knows its cutoff,
        else :class:`AutogradSum`; in eval mode :class:`TableSum` for a :class:`TableFilter`
        and :class:`ChunkedSum` for any other filter.
    """
    if training:
        if isinstance(filter, NetworkFilter) and filter.cutoff is not None:
            return GridSum(GridFilter(filter, filter.cutoff))
        return AutogradSum(filter)
    if isinstance(filter, TableFilter):
        return TableSum(filter)
    return ChunkedSum(filter)
