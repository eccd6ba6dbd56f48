"""Fixtures for the model tests: real water frames and small random float64 models of every architecture."""
from __future__ import annotations

from collections.abc import Callable

import ase.io
import numpy as np
import pytest
import torch
from ase import Atoms

from pbcgnn.graph import atoms_to_graph
from pbcgnn.model import ARCHITECTURES, EnergyModel, SchNet, compute_properties

CUTOFF = 6.0  # Angstrom: longer than half the 7.82 A box, so atoms see several images
E0 = {1: -13.6, 8: -430.0}  # eV, arbitrary non-zero values to exercise the reference path
SCALE = 0.7  # eV


@pytest.fixture(scope="session")
def water_frames(shared_data) -> list[Atoms]:
    """The 16 n2p2 RPBE-D3 frames (eV, Angstrom): 0-9 48 atoms in 7.82 A, 10 and 13 96 atoms, rest 192."""
    return ase.io.read(shared_data / "n2p2_h2o_rpbe_d3" / "n2p2_h2o_rpbe_d3.xyz", index=":")


@pytest.fixture
def box48(water_frames) -> Atoms:
    """A fresh, label-free copy of frame 0 (16 H2O, cubic 7.82 A, unwrapped positions)."""
    atoms = water_frames[0].copy()
    atoms.calc = None
    return atoms


@pytest.fixture(scope="session")
def water(shared_data, water_frames) -> list[Atoms]:
    """Label-free real frames: deepmd_water 0 and 1 (192 atoms, 12.44 A), n2p2 RPBE-D3 0 (48 atoms
    in 7.82 A, so pairs have several images) and 11 (192 atoms)."""
    deepmd = ase.io.read(shared_data / "deepmd_water" / "deepmd_water.xyz", index=":2")
    frames = [*deepmd, water_frames[0].copy(), water_frames[11].copy()]
    for atoms in frames:
        atoms.calc = None
    return frames


def random_model(seed: int = 0, hidden: int = 32, interactions: int = 3, num_rbf: int = 50,
                 architecture: str = "schnet") -> EnergyModel:
    """float64 model with random weights, perturbed biases, a scale and non-zero e0 (train mode)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        sizes = {"hidden_channels": hidden, "num_interactions": interactions, "num_rbf": num_rbf, "cutoff": CUTOFF}
        if architecture == "schnet":
            sizes["num_filters"] = hidden
        model = ARCHITECTURES[architecture](**sizes)
        model = model.double()
        with torch.no_grad():  # non-zero biases, so every term of the network is exercised
            for p in model.parameters():
                p.add_(0.1 * torch.randn_like(p))
    model.reference.set_values(E0, SCALE)
    return model


@pytest.fixture(scope="session")
def make_model() -> Callable[..., EnergyModel]:
    """:func:`random_model`: ``make_model(seed=0, hidden=32, interactions=3, num_rbf=50, architecture="schnet")``."""
    return random_model


def train_small(data: str, out, architecture: str = "schnet") -> EnergyModel:
    """A 32x3 float64 model of ``architecture`` trained for 12 epochs on ``data``, loaded from its best.pt."""
    from pbcgnn.checkpoint import load_checkpoint
    from pbcgnn.config import Config, DataConfig, ModelConfig, TrainConfig
    from pbcgnn.train.run import fit

    config = Config(
        data=DataConfig(paths=(data,)),
        model=ModelConfig(architecture=architecture, hidden_channels=32, num_filters=32, num_interactions=3,
                          num_rbf=20, cutoff=CUTOFF, dtype="float64"),
        train=TrainConfig(epochs=12, batch_size=4, lr=5e-3, seed=1, device="cpu"),
    )
    result = fit(config, out, progress=False)
    model, _ = load_checkpoint(result.best)
    assert float(model.lin2.weight.abs().sum()) > 0  # really trained: the zero readout moved
    return model


@pytest.fixture(scope="session")
def trained_model(shared_data, tmp_path_factory) -> SchNet:
    """SchNet trained for a few epochs on the 16 real RPBE-D3 frames (float64)."""
    return train_small(str(shared_data / "n2p2_h2o_rpbe_d3" / "input.data"), tmp_path_factory.mktemp("trained"))


@pytest.fixture(scope="session")
def trained_painn(shared_data, tmp_path_factory) -> EnergyModel:
    """PaiNN trained for a few epochs on the 16 real RPBE-D3 frames (float64)."""
    return train_small(str(shared_data / "n2p2_h2o_rpbe_d3" / "input.data"), tmp_path_factory.mktemp("painn"),
                       architecture="painn")


@pytest.fixture(params=["schnet-untrained", "schnet-trained", "painn-untrained", "painn-trained"])
def model(request) -> EnergyModel:
    """Physics must hold for every architecture, with random weights and after real training."""
    architecture, state = request.param.split("-")
    if state == "untrained":
        return random_model(num_rbf=20, architecture=architecture)
    return request.getfixturevalue("trained_model" if architecture == "schnet" else "trained_painn")


@pytest.fixture
def predict(model) -> Callable[..., dict[str, np.ndarray]]:
    """``predict(atoms, stress=False)`` -> energy (float), forces [N, 3], stress [3, 3] as numpy."""

    def _predict(atoms: Atoms, stress: bool = False) -> dict[str, np.ndarray]:
        out = compute_properties(model, atoms_to_graph(atoms, model.cutoff), forces=True, stress=stress)
        result = {k: v.detach().numpy() for k, v in out.items()}
        result["energy"] = float(result["energy"][0])
        if stress:
            result["stress"] = result["stress"][0]
        return result

    return _predict


@pytest.fixture
def plain_training(monkeypatch):
    """Training mode sums by plain autograd on the filter network (AutogradSum), the reference
    every faster path is compared with; eval mode is unchanged."""
    import pbcgnn.model.schnet as schnet
    from pbcgnn.model.aggregate import AutogradSum

    select = schnet.select
    monkeypatch.setattr(schnet, "select", lambda f, training: AutogradSum(f) if training else select(f, training))

