"""Fixtures for the MD tests: real 192-atom water frames and a tiny float64 model trained on them."""
from __future__ import annotations

import ase.io
import pytest

from pbcgnn.config import Config, DataConfig, ModelConfig, TrainConfig
from pbcgnn.train.run import fit

#: Small enough to train in seconds, trained long enough to keep 192 waters together for ~100 fs.
MD_MODEL = ModelConfig(hidden_channels=24, num_filters=24, num_interactions=2, num_rbf=16, cutoff=4.0,
                       dtype="float64")


@pytest.fixture(scope="session")
def deepmd_path(shared_data):
    return shared_data / "deepmd_water" / "deepmd_water.xyz"


@pytest.fixture(scope="session")
def water192(deepmd_path):
    """A real 64-H2O frame (192 atoms, 12.44 A cubic box, unwrapped positions), not used in training."""
    return ase.io.read(deepmd_path, index=301)


@pytest.fixture(scope="session")
def md_checkpoint(deepmd_path, tmp_path_factory):
    """best.pt of a tiny float64 SchNet fitted for 16 epochs to every 10th deepmd_water frame."""
    out = tmp_path_factory.mktemp("md_model")
    data = out / "train.xyz"
    ase.io.write(data, ase.io.read(deepmd_path, index="::10"), format="extxyz")
    config = Config(
        data=DataConfig(paths=(str(data),), val_fraction=0.2, split_seed=1),
        model=MD_MODEL,
        train=TrainConfig(epochs=16, batch_size=2, lr=5e-3, ema_decay=0.9, energy_weight=1.0, seed=7, device="cpu"),
    )
    return fit(config, out, progress=False).best
