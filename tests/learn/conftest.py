"""Fixtures for the active-learning loop: EMT-labelled water boxes, a tiny committee fitted to them,
the test labellers importable as ``labellers:NAME``, and one uninterrupted reference run."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator

from pbcgnn.config import CommitteeConfig, Config, DataConfig, ModelConfig, TrainConfig
from pbcgnn.io import read_frames, write_frames
from pbcgnn.learn import LearnConfig
from pbcgnn.learn.label import structure_of
from pbcgnn.train.run import fit

HERE = Path(__file__).resolve().parent
REPO_DATA = HERE.parents[1] / "data"
#: 2 members of 8 features: seconds to train, and members that disagree.
TINY = ModelConfig(hidden_channels=8, num_filters=8, num_interactions=1, num_rbf=6, cutoff=3.0, dtype="float64")
TRAIN = TrainConfig(epochs=2, batch_size=4, lr=5e-3, ema_decay=0.9, seed=0, device="cpu")

if str(HERE) not in sys.path:  # --calculator labellers:NAME (the CLI adds the current folder; tests add this one)
    sys.path.insert(0, str(HERE))


def emt_labelled(frames):
    """Structures of ``frames`` with EMT energies and forces (the test's reference method)."""
    out = []
    for atoms in frames:
        work = structure_of(atoms)
        work.calc = EMT()
        labelled = structure_of(atoms)
        labelled.calc = SinglePointCalculator(labelled, energy=work.get_potential_energy(), forces=work.get_forces())
        out.append(labelled)
    return out


@pytest.fixture(scope="session")
def emt_water(bundled_n2p2, tmp_path_factory):
    """The 10 boxes of 16 H2O of the bundled sample, EMT-labelled: ``base.xyz`` (6, the committee's
    training frames), ``start.xyz`` (1, where MD starts) and ``pool.xyz`` (3)."""
    folder = tmp_path_factory.mktemp("emt_water")
    frames = emt_labelled([a for a in read_frames(bundled_n2p2) if len(a) == 48])
    for name, part in (("base", frames[:6]), ("start", frames[6:7]), ("pool", frames[7:])):
        write_frames(folder / f"{name}.xyz", part)
    return folder


def committee_config(data: Path, size: int = 2) -> Config:
    return Config(data=DataConfig(paths=(str(data),), val_fraction=0.5, split_seed=0), model=TINY, train=TRAIN,
                  committee=CommitteeConfig(size=size))


@pytest.fixture(scope="session")
def committee(emt_water, tmp_path_factory) -> Path:
    """best.pt of a committee of 2 tiny SchNets trained for 2 epochs on ``base.xyz``."""
    return fit(committee_config(emt_water / "base.xyz"), tmp_path_factory.mktemp("committee"), progress=False).best


def learn_options(committee: Path, emt_water: Path, **changes) -> LearnConfig:
    """2 short trajectories from ``start.xyz`` (300 and 500 K, 5 sampled frames each), every frame
    above the threshold, 2 picks per round, 2 rounds, 1 epoch of retraining, EMT labels; ``changes`` applied."""
    base = dict(committee=str(committee), structures=(str(emt_water / "start.xyz"),), temperatures_K=(300.0, 500.0),
                steps=20, sample_every=4, threshold=1e-4, max_per_round=2, max_rounds=2, epochs=1,
                calculator="labellers:emt", device="cpu")
    return LearnConfig(**{**base, **changes})


@pytest.fixture
def options(committee, emt_water):
    """``options(**changes)``: :func:`learn_options` of the session's committee."""
    return lambda **changes: learn_options(committee, emt_water, **changes)


@pytest.fixture
def one_thread_torch():
    """Training on one thread: runs compared bit for bit."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def reference_run(committee, emt_water, tmp_path_factory):
    """The folder of an uninterrupted run of :func:`learn_options` (two rounds), on one thread."""
    import torch

    from pbcgnn.learn import learn

    out = tmp_path_factory.mktemp("reference") / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        learn(learn_options(committee, emt_water), out)
    finally:
        torch.set_num_threads(threads)
    return out
