"""MD output: an unwritable folder fails before any force is computed, a failed write names its
file, and a run of 0 steps reports no speed (not NaN)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.lj import LennardJones

from pbcgnn.errors import OutputError
from pbcgnn.md import output
from pbcgnn.md.config import MDConfig
from pbcgnn.md.run import run_md


class Counting(LennardJones):
    calls = 0

    def calculate(self, *args, **kwargs):
        Counting.calls += 1
        super().calculate(*args, **kwargs)


def argon() -> Atoms:
    pos = np.array([[0, 0, 0], [0, 2, 2], [2, 0, 2], [2, 2, 0]], dtype=float) * 1.3
    return Atoms("Ar4", positions=pos, cell=np.eye(3) * 5.2, pbc=True)


def test_an_unwritable_folder_fails_before_the_first_force(tmp_path):
    (tmp_path / "afile").write_text("x")
    Counting.calls = 0
    with pytest.raises(OutputError, match=r"afile/md: cannot write: Not a directory"):
        run_md(Counting(sigma=3.4, epsilon=0.01), argon(), MDConfig(steps=2), tmp_path / "afile" / "md",
               progress=False)
    assert Counting.calls == 0


def test_a_failed_write_names_the_file(tmp_path, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(output.ase.io, "write", full)
    with pytest.raises(OutputError) as info:
        run_md(LennardJones(sigma=3.4, epsilon=0.01), argon(), MDConfig(steps=2), tmp_path, progress=False)
    assert str(info.value) == f"{tmp_path / 'trajectory.xyz'}: cannot write: No space left on device"
    assert info.value.errno == 28 and isinstance(info.value, OSError)


def test_zero_steps_evaluates_the_start_and_reports_no_speed(tmp_path):
    result = run_md(LennardJones(sigma=3.4, epsilon=0.01), argon(), MDConfig(steps=0), tmp_path, progress=False)
    assert result.steps == 0 and result.steps_per_s is None and result.ns_per_day is None
    summary = json.loads((tmp_path / "run.json").read_text())  # strict JSON: no NaN
    assert summary["steps_per_s"] is None and summary["ns_per_day"] is None
    assert len(output.read_thermo(tmp_path / "thermo.csv")["step"]) == 1
