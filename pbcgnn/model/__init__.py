"""The SchNet energy model, its layers, reference energies, committees and autograd derivatives."""
from __future__ import annotations

from .cfconv import CFConv, InteractionBlock, shifted_softplus
from .committee import Committee, committee_properties
from .derivatives import compute_properties
from .radial import CosineCutoff, GaussianRBF
from .reference import AtomicReference, estimate_scale, fit_reference_energies
from .schnet import SchNet

__all__ = [
    "AtomicReference",
    "CFConv",
    "Committee",
    "CosineCutoff",
    "GaussianRBF",
    "InteractionBlock",
    "SchNet",
    "committee_properties",
    "compute_properties",
    "estimate_scale",
    "fit_reference_energies",
    "shifted_softplus",
]
