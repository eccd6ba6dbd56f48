"""The SchNet energy model, its layers, reference energies and autograd derivatives."""
from __future__ import annotations

from .cfconv import CFConv, InteractionBlock, shifted_softplus
from .derivatives import compute_properties
from .radial import CosineCutoff, GaussianRBF
from .reference import AtomicReference, estimate_scale, fit_reference_energies
from .schnet import SchNet

__all__ = [
    "AtomicReference",
    "CFConv",
    "CosineCutoff",
    "GaussianRBF",
    "InteractionBlock",
    "SchNet",
    "compute_properties",
    "estimate_scale",
    "fit_reference_energies",
    "shifted_softplus",
]
