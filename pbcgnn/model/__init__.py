"""The energy models (SchNet, PaiNN), their layers, reference energies, committees and autograd derivatives."""
from __future__ import annotations

from .cfconv import CFConv, InteractionBlock, shifted_softplus
from .calibration import Calibration
from .committee import Committee, committee_properties
from .derivatives import compute_properties
from .radial import CosineCutoff, GaussianRBF
from .reference import AtomicReference, estimate_scale, fit_reference_energies
from .base import EnergyModel
from .painn import PaiNN
from .schnet import SchNet

#: ``ModelConfig.architecture`` -> model class (:func:`pbcgnn.checkpoint.build_model`).
ARCHITECTURES: dict[str, type[EnergyModel]] = {"schnet": SchNet, "painn": PaiNN}

__all__ = [
    "ARCHITECTURES",
    "AtomicReference",
    "Calibration",
    "EnergyModel",
    "PaiNN",
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
