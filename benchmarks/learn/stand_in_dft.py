"""The reference method of ``exploration_example.py``: the shipped Cheng model, standing in for DFT.

Not DFT. ``data/pretrained/cheng2019_revpbe0_d3_schnet.pt`` is a SchNet (128x4, 6 Angstrom)
trained on the revPBE0-D3 water frames of Cheng et al. (2019); its energies and forces play the
part of the reference calculation, so the example runs the whole loop in minutes and can measure
the committee's error on any frame. ``pbcgnn learn --calculator stand_in_dft:make_calc`` finds this
module when ``benchmarks/learn`` is on ``PYTHONPATH`` (or is the current folder).
"""
from __future__ import annotations

import os
from pathlib import Path

from pbcgnn.calculator import PbcgnnCalculator

__all__ = ["CHECKPOINT", "make_calc"]

#: The stand-in's checkpoint, shipped with pbcgnn.
CHECKPOINT = Path(__file__).resolve().parents[2] / "data" / "pretrained" / "cheng2019_revpbe0_d3_schnet.pt"


def make_calc() -> PbcgnnCalculator:
    """An ASE calculator of the stand-in (energy in eV, forces in eV/Angstrom) on the device named by
    ``$PBCGNN_STAND_IN_DEVICE`` (default ``cpu``); the exact filter networks, a fresh neighbour list
    for every frame."""
    device = os.environ.get("PBCGNN_STAND_IN_DEVICE", "cpu")
    return PbcgnnCalculator.from_checkpoint(CHECKPOINT, device=device, tabulate=False, skin=0.0)
