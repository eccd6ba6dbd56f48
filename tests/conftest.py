"""Shared fixtures: paths to real data and small float64 water boxes."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
FILES = Path(__file__).resolve().parent / "files"
BUNDLED = REPO / "data"


def _shared_data() -> Path:
    env = os.environ.get("PBCGNN_SHARED_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (or $PBCGNN_SHARED_DATA). CI always has it; elsewhere tests skip."""
    path = _shared_data()
    if not path.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"shared data not found at {path}")
        pytest.skip(f"shared data not found at {path}")
    return path


@pytest.fixture(scope="session")
def files() -> Path:
    """tests/files: tiny valid and broken inputs."""
    return FILES


@pytest.fixture(scope="session")
def bundled_n2p2() -> Path:
    """The bundled 16-frame RPBE-D3 water file (Bohr, Hartree)."""
    return BUNDLED / "n2p2_h2o_rpbe_d3" / "input.data"


@pytest.fixture
def one_thread():
    """For bit-exact comparisons between runs. Multi-threaded CPU kernels can differ in the last
    bits between two runs of the same training (seen: a resumed run at 2 threads, 1e-8 relative
    off an uninterrupted one in some repeats, with and without the final anneal)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
