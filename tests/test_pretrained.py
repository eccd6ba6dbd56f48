"""The shipped pretrained Cheng revPBE0-D3 water model: `pbcgnn eval` on shared frames reproduces
the errors recorded when it was made (benchmarks/accuracy/pretrained.py)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import ase.io
import pytest
from click.testing import CliRunner

from pbcgnn.calculator import PbcgnnCalculator
from pbcgnn.cli import main

SHIP = Path(__file__).resolve().parents[1] / "data" / "pretrained"
RECORD = json.loads((SHIP / "metrics.json").read_text())
MODEL = SHIP / RECORD["model"]


def test_shipped_file_is_the_recorded_one():
    assert hashlib.sha256(MODEL.read_bytes()).hexdigest() == RECORD["sha256"]
    assert MODEL.stat().st_size < 2_000_000  # small enough for the repository


@pytest.fixture(scope="module")
def picked(shared_data) -> list:
    """The regression frames, read once from the shared Cheng file (26 MB)."""
    frames = ase.io.read(shared_data / "cheng2019_h2o_revpbe0_d3" / "cheng2019_h2o_revpbe0_d3.xyz", index=":")
    return [frames[i] for i in RECORD["regression"]["frames"]]


def test_eval_reproduces_recorded_errors(picked, tmp_path):
    data = tmp_path / "frames.xyz"
    ase.io.write(data, picked, format="extxyz")
    result = CliRunner().invoke(main, ["eval", str(MODEL), str(data), "--out", str(tmp_path / "eval"),
                                       "--device", "cpu"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    got = json.loads((tmp_path / "eval" / "metrics.json").read_text())["total"]
    want = RECORD["regression"]["metrics"]
    assert got["n_frames"] == want["n_frames"] == len(picked)
    for key in ("energy_rmse_mev_per_atom", "energy_mae_mev_per_atom", "force_rmse_mev_per_A",
                "force_mae_mev_per_A"):
        assert got[key] == pytest.approx(want[key], rel=1e-4, abs=1e-3), key


def test_recorded_test_errors_are_those_in_the_readme():
    readme = (SHIP / "README.md").read_text()
    test = RECORD["test"]
    assert f"{test['energy_rmse_mev_per_atom']:.2f} meV/atom" in readme
    assert f"{test['force_rmse_mev_per_A']:.1f} meV/Å" in readme
    assert RECORD["command"] in readme


def test_pretrained_model_runs_as_a_calculator(picked):
    reference = picked[0].get_forces()
    atoms = picked[0].copy()  # without the reference's calculator
    atoms.calc = PbcgnnCalculator.from_checkpoint(MODEL, device="cpu")
    forces = atoms.get_forces()
    # far better than predict-zero (RMS force of the set: 2.3 eV/A)
    assert ((forces - reference) ** 2).mean() ** 0.5 < 0.25 * (reference**2).mean() ** 0.5
