"""The shipped pretrained Cheng revPBE0-D3 water models: `pbcgnn eval` on shared frames reproduces
the errors recorded when each was made (benchmarks/accuracy/pretrained.py), and the index and
model cards agree with the records."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import ase.io
import pytest
from click.testing import CliRunner

from pbcgnn.calculator import PbcgnnCalculator
from pbcgnn.checkpoint import read_checkpoint
from pbcgnn.cli import main

SHIP = Path(__file__).resolve().parents[1] / "data" / "pretrained"
RECORDS = {p.stem: json.loads(p.read_text()) for p in sorted(SHIP.glob("*.json"))}


@pytest.fixture(params=sorted(RECORDS))
def record(request) -> dict:
    return RECORDS[request.param]


def test_every_shipped_model_has_a_record_and_a_card():
    assert "cheng2019_revpbe0_d3_schnet" in RECORDS
    assert {p.stem for p in SHIP.glob("*.pt")} == set(RECORDS) == {p.stem for p in SHIP.glob("*.md")} - {"README"}


def test_shipped_file_is_the_recorded_one(record):
    model = SHIP / record["model"]
    assert hashlib.sha256(model.read_bytes()).hexdigest() == record["sha256"]
    assert model.stat().st_size < 4_000_000  # small enough for the repository
    stored = read_checkpoint(model)["config"]["model"].get("architecture", "schnet")
    assert stored == record["architecture"].get("architecture", "schnet")


@pytest.fixture(scope="module")
def cheng(shared_data) -> list:
    """The shared Cheng frames, read once (26 MB)."""
    return ase.io.read(shared_data / "cheng2019_h2o_revpbe0_d3" / "cheng2019_h2o_revpbe0_d3.xyz", index=":")


def test_eval_reproduces_recorded_errors(record, cheng, tmp_path):
    picked = [cheng[i] for i in record["regression"]["frames"]]
    data = tmp_path / "frames.xyz"
    ase.io.write(data, picked, format="extxyz")
    result = CliRunner().invoke(main, ["eval", str(SHIP / record["model"]), str(data), "--out",
                                       str(tmp_path / "eval"), "--device", "cpu"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    got = json.loads((tmp_path / "eval" / "metrics.json").read_text())["total"]
    want = record["regression"]["metrics"]
    assert got["n_frames"] == want["n_frames"] == len(picked)
    for key in ("energy_rmse_mev_per_atom", "energy_mae_mev_per_atom", "force_rmse_mev_per_A",
                "force_mae_mev_per_A"):
        assert got[key] == pytest.approx(want[key], rel=1e-4, abs=1e-3), key


def test_recorded_test_errors_are_those_in_the_card_and_the_index(record):
    card = (SHIP / f"{Path(record['model']).stem}.md").read_text()
    test = record["test"]
    assert f"{test['energy_rmse_mev_per_atom']:.2f} meV/atom" in card
    assert f"{test['force_rmse_mev_per_A']:.1f} meV/Å" in card
    assert record["command"] in card
    row = next(line for line in (SHIP / "README.md").read_text().splitlines() if f"`{record['model']}`" in line)
    assert f"| {test['energy_rmse_mev_per_atom']:.2f} | {test['force_rmse_mev_per_A']:.1f} |" in row


def test_pretrained_model_runs_as_a_calculator(record, cheng):
    reference = cheng[record["regression"]["frames"][0]]
    atoms = reference.copy()  # without the reference's calculator
    atoms.calc = PbcgnnCalculator.from_checkpoint(SHIP / record["model"], device="cpu")
    forces, expected = atoms.get_forces(), reference.get_forces()
    # far better than predict-zero (RMS force of the set: 2.3 eV/A)
    assert ((forces - expected) ** 2).mean() ** 0.5 < 0.25 * (expected**2).mean() ** 0.5
