"""Fixtures for the speed tests: real water frames and a float64 SchNet with non-trivial weights."""
from __future__ import annotations

import ase.io
import pytest
import torch
from ase import Atoms

from pbcgnn.model import SchNet

CUTOFF = 6.0  # Angstrom, the benchmark's cutoff
E0 = {1: -13.6, 8: -430.0}  # eV, arbitrary non-zero references


@pytest.fixture(scope="session")
def water(shared_data) -> list[Atoms]:
    """Real frames: deepmd_water 0 and 1 (192 atoms, 12.44 A), n2p2 RPBE-D3 0 (48 atoms in 7.82 A,
    so pairs have several images) and 11 (192 atoms)."""
    deepmd = ase.io.read(shared_data / "deepmd_water" / "deepmd_water.xyz", index=":2")
    n2p2 = ase.io.read(shared_data / "n2p2_h2o_rpbe_d3" / "n2p2_h2o_rpbe_d3.xyz", index=":")
    frames = [*deepmd, n2p2[0], n2p2[11]]
    for atoms in frames:
        atoms.calc = None
    return frames


def _make_model(seed: int = 0, hidden: int = 32, interactions: int = 3, num_rbf: int = 50) -> SchNet:
    """float64 SchNet with random weights, perturbed biases, a random readout and non-zero e0."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = SchNet(hidden_channels=hidden, num_filters=hidden, num_interactions=interactions,
                       num_rbf=num_rbf, cutoff=CUTOFF).double()
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.1 * torch.randn_like(p))
    model.reference.set_values(E0, 0.7)
    return model


@pytest.fixture(scope="session")
def make_model():
    """``make_model(seed=0, hidden=32, interactions=3, num_rbf=50)`` -> float64 SchNet (train mode)."""
    return _make_model
