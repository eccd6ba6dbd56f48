"""One frame, four routes: the ASE calculator, evaluate.predict, `pbcgnn eval` and OpenMM's PythonForce."""
from __future__ import annotations

import sys

import ase.io
import numpy as np
import pytest
from click.testing import CliRunner
from pbcgnn.cli import main

from pbcgnn import units
from pbcgnn.calculator import PbcgnnCalculator
from pbcgnn.checkpoint import load_checkpoint
from pbcgnn.dataset import FrameDataset
from pbcgnn.errors import InputError
from pbcgnn.evaluation import predict
from pbcgnn.model import SchNet


def assert_same(energy, forces, ref_energy, ref_forces, rel=1e-6):
    assert energy == pytest.approx(ref_energy, rel=rel)
    assert np.abs(forces - ref_forces).max() <= rel * np.abs(ref_forces).max()


def test_calculator_eval_and_openmm_agree(md_checkpoint, water192, tmp_path):
    path = tmp_path / "frame.xyz"
    ase.io.write(path, water192, format="extxyz")
    atoms = water192.copy()
    atoms.calc = PbcgnnCalculator.from_checkpoint(md_checkpoint, skin=1.0, tabulate=False)  # the exact model
    energy, forces = atoms.get_potential_energy(), atoms.get_forces()
    assert np.abs(forces).max() > 0.1

    # pbcgnn.evaluation.predict on the cached dataset (what `pbcgnn eval` runs)
    model, _ = load_checkpoint(md_checkpoint)
    pred = predict(model, FrameDataset(path, model.cutoff))
    assert_same(pred.energy[0], pred.forces, energy, forces, rel=1e-12)

    # the command line: predictions.xyz (written with 8 decimals)
    result = CliRunner().invoke(main, ["eval", str(md_checkpoint), str(path), "--out", str(tmp_path / "eval"),
                                       "--device", "cpu"])
    assert result.exit_code == 0, result.output
    written = ase.io.read(tmp_path / "eval" / "predictions.xyz")
    assert_same(written.get_potential_energy(), written.get_forces(), energy, forces)

    # OpenMM: kJ/mol and kJ/mol/nm through the PythonForce, converted back
    pytest.importorskip("openmm")
    from pbcgnn.md.openmm_md import openmm_energy_forces

    e_omm, f_omm = openmm_energy_forces(water192, PbcgnnCalculator.from_checkpoint(md_checkpoint, tabulate=False))
    assert_same(e_omm, f_omm, energy, forces)


def test_openmm_unit_constants_match_openmm():
    unit = pytest.importorskip("openmm.unit")
    ev = 1.602176634e-19 * unit.joule * unit.AVOGADRO_CONSTANT_NA  # one eV per particle, as a molar energy
    assert units.EV_TO_KJ_PER_MOL == pytest.approx(ev.value_in_unit(unit.kilojoule_per_mole), rel=1e-12)
    assert units.FORCE_TO_OPENMM == pytest.approx(
        (ev / unit.angstrom).value_in_unit(unit.kilojoule_per_mole / unit.nanometer), rel=1e-12)
    # kinetic energy of 1 amu at 1 ASE velocity unit: 0.5 eV in ASE, the same in OpenMM's units
    v = units.VELOCITY_TO_OPENMM * unit.nanometer / unit.picosecond
    kinetic = (0.5 * unit.amu * v**2).value_in_unit(unit.kilojoule_per_mole)  # OpenMM masses are g/mol
    assert kinetic / units.EV_TO_KJ_PER_MOL == pytest.approx(0.5, rel=1e-8)


def test_openmm_input_errors(water192, monkeypatch):
    pytest.importorskip("openmm")
    from pbcgnn.md import openmm_md

    calc = PbcgnnCalculator(SchNet(8, 8, 1, 8, cutoff=3.0).double())
    rotated = water192.copy()
    rotated.set_cell(water192.cell.array[[1, 2, 0]], scale_atoms=False)  # not lower-triangular
    with pytest.raises(InputError, match="OpenMM needs a lower-triangular, reduced cell"):
        openmm_md.openmm_energy_forces(rotated, calc)
    monkeypatch.setitem(sys.modules, "openmm", None)  # as if not installed
    with pytest.raises(InputError, match=r"pip install 'pbcgnn\[openmm\]'"):
        openmm_md.openmm_energy_forces(water192, calc)
