"""Fixtures for committee training: a small real water file, configs, and a trained committee."""
from __future__ import annotations

from pathlib import Path

import pytest

from pbcgnn.config import CommitteeConfig, Config, DataConfig, ModelConfig, TrainConfig
from pbcgnn.io import read_frames, write_frames
from pbcgnn.train.run import fit

TINY = ModelConfig(hidden_channels=16, num_filters=16, num_interactions=2, num_rbf=12, cutoff=4.5, dtype="float64")


def _config(path: Path, size: int = 3, epochs: int = 4, bootstrap: bool = True) -> Config:
    return Config(
        data=DataConfig(paths=(str(path),), val_fraction=0.3, split_seed=2),
        model=TINY,
        train=TrainConfig(epochs=epochs, batch_size=2, lr=5e-3, ema_decay=0.9, seed=11, device="cpu"),
        committee=CommitteeConfig(size=size, bootstrap=bootstrap),
    )


@pytest.fixture(scope="session")
def helpers():
    from types import SimpleNamespace

    return SimpleNamespace(config=_config, TINY=TINY)


@pytest.fixture(scope="session")
def water48_file(bundled_n2p2, tmp_path_factory) -> Path:
    """The 10 frames of 16 H2O (48 atoms) of the bundled RPBE-D3 sample, as extended XYZ."""
    path = tmp_path_factory.mktemp("water48") / "water48.xyz"
    write_frames(path, [a for a in read_frames(bundled_n2p2) if len(a) == 48])
    return path


@pytest.fixture(scope="session")
def committee_run(water48_file, tmp_path_factory):
    """A committee of 3 bootstrap members trained for 4 epochs each: (FitResult, out_dir)."""
    out = tmp_path_factory.mktemp("committee")
    return fit(_config(water48_file), out, progress=False), out
