"""Fixtures for transfer learning: small real water files and a briefly pretrained tiny model."""
from __future__ import annotations

from pathlib import Path

import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from pbcgnn.config import Config, DataConfig, ModelConfig, TrainConfig
from pbcgnn.io import read_frames, write_frames
from pbcgnn.train.run import fit

TINY = ModelConfig(hidden_channels=16, num_filters=16, num_interactions=2, num_rbf=12, cutoff=4.5, dtype="float64")
#: A per-element shift of the absolute energies (eV per atom of each element), as between two
#: levels of theory: +5 eV per H and -3 eV per O, i.e. +7 eV per H2O.
SHIFT = {1: 5.0, 8: -3.0}


def _config_for(path: Path, epochs: int = 3, *, model: ModelConfig = TINY, **sections) -> Config:
    """A tiny float64 CPU run on ``path`` (25 % validation); ``sections`` as ``Config.replace``."""
    config = Config(
        data=DataConfig(paths=(str(path),), val_fraction=0.25, split_seed=1),
        model=model,
        train=TrainConfig(epochs=epochs, batch_size=2, lr=5e-3, ema_decay=0.9, seed=7, device="cpu"),
    )
    return config.replace(**sections) if sections else config


def _relabel(frames: list[Atoms], energy=None, forces: bool = True) -> list[Atoms]:
    """Copies of ``frames`` with energies mapped by ``energy(atoms, E)`` and forces kept or dropped."""
    out = []
    for atoms in frames:
        new = Atoms(atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
        e = atoms.get_potential_energy()
        labels = {"energy": e if energy is None else energy(atoms, e)}
        if forces:
            labels["forces"] = atoms.get_forces()
        new.calc = SinglePointCalculator(new, **labels)
        out.append(new)
    return out


def _shifted_energy(atoms: Atoms, e: float) -> float:
    return e + sum(SHIFT[int(z)] for z in atoms.numbers)


@pytest.fixture(scope="session")
def water48(bundled_n2p2) -> list[Atoms]:
    """The 48-atom frames (16 H2O, 7.82 A box) of the bundled RPBE-D3 sample: 10 frames."""
    return [a for a in read_frames(bundled_n2p2) if len(a) == 48]


@pytest.fixture(scope="session")
def water48_file(water48, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("water48") / "water48.xyz"
    write_frames(path, _relabel(water48))
    return path


@pytest.fixture(scope="session")
def shifted_file(water48, tmp_path_factory) -> Path:
    """The same frames with energies shifted per element by :data:`SHIFT`; forces unchanged."""
    path = tmp_path_factory.mktemp("shifted") / "shifted.xyz"
    write_frames(path, _relabel(water48, _shifted_energy))
    return path


@pytest.fixture(scope="session")
def pretrained(water48_file, tmp_path_factory) -> Path:
    """best.pt of a tiny float64 SchNet trained for 20 epochs on the unshifted frames."""
    result = fit(_config_for(water48_file, epochs=20), tmp_path_factory.mktemp("pretrained"), progress=False)
    assert result.history[-1]["val_force_rmse_mev_per_A"] < result.history[0]["val_force_rmse_mev_per_A"]
    return result.best


def _energy_rmse(model, path: Path) -> float:
    """Energy RMSE (meV/atom) of ``model`` on every frame of ``path``."""
    from pbcgnn.dataset import FrameDataset
    from pbcgnn.evaluation import error_metrics, predict

    return error_metrics(predict(model, FrameDataset(path, model.cutoff)))["energy_rmse_mev_per_atom"]


@pytest.fixture(scope="session")
def helpers():
    """The helper functions and constants of this folder's tests, as attributes."""
    from types import SimpleNamespace

    return SimpleNamespace(config_for=_config_for, relabel=_relabel, shifted_energy=_shifted_energy,
                           energy_rmse=_energy_rmse, SHIFT=SHIFT, TINY=TINY)
