"""`pbcgnn md --tabulate`: the tabulated calculator matches the exact one and runs MD."""
from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from pbcgnn.cli import main

from pbcgnn.calculator import PbcgnnCalculator


def test_tabulated_calculator_matches_exact(md_checkpoint, water192):
    atoms = water192.copy()
    atoms.calc = PbcgnnCalculator.from_checkpoint(md_checkpoint, dtype="float64")
    e, f = atoms.get_potential_energy(), atoms.get_forces()
    atoms.calc = PbcgnnCalculator.from_checkpoint(md_checkpoint, dtype="float64", tabulate=True)
    # E0 is a constant; the tolerance applies to the learned part, which tabulation touches
    assert atoms.get_potential_energy() == pytest.approx(e, rel=1e-9)
    assert np.abs(atoms.get_forces() - f).max() <= 1e-5 * np.abs(f).max()


def test_cli_md_with_tabulate(md_checkpoint, deepmd_path, tmp_path):
    result = CliRunner().invoke(main, [
        "md", str(md_checkpoint), "--structure", str(deepmd_path), "--frame", "0", "--steps", "4",
        "--timestep", "0.5", "--tabulate", "--device", "cpu", "--out", str(tmp_path), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "thermo.csv").read_text().count("\n") >= 2
