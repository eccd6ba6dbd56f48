"""PbcgnnCalculator: Verlet-skin list equals a fresh build, rebuild rules, derivatives, bad input."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.calculators.fd import calculate_numerical_stress
from click.testing import CliRunner
from pbcgnn.cli import main

from pbcgnn.calculator import PbcgnnCalculator
from pbcgnn.errors import InputError
from pbcgnn.model import SchNet


@pytest.fixture(scope="module")
def model():
    """An untrained float64 SchNet with a non-zero readout, so forces are not zero."""
    torch.manual_seed(0)
    m = SchNet(hidden_channels=16, num_filters=16, num_interactions=2, num_rbf=12, cutoff=4.0).double()
    with torch.no_grad():
        m.lin2.weight.normal_(std=0.3)
    return m.eval()


def evaluate(calc, atoms, stress=False):
    atoms = atoms.copy()
    atoms.calc = calc
    out = atoms.get_potential_energy(), atoms.get_forces()
    return (*out, atoms.get_stress()) if stress else out


def test_skin_list_equals_fresh_build_along_a_path(model, water192):
    skin = PbcgnnCalculator(model, skin=1.0)
    rng = np.random.default_rng(1)
    atoms = water192.copy()
    for step in range(8):
        atoms.positions += rng.normal(scale=0.03, size=atoms.positions.shape)  # ~0.05 A per atom and step
        if step == 4:
            atoms.positions[:10] += atoms.cell[0] - 2 * atoms.cell[2]  # wrapped by lattice vectors
        e, f, s = evaluate(skin, atoms, stress=True)
        e0, f0, s0 = evaluate(PbcgnnCalculator(model, skin=0.0), atoms, stress=True)
        assert e == pytest.approx(e0, rel=1e-13, abs=1e-11)
        np.testing.assert_allclose(f, f0, rtol=0, atol=1e-12 * np.abs(f0).max())
        np.testing.assert_allclose(s, s0, rtol=0, atol=1e-12 * np.abs(s0).max())
    assert skin.rebuilds < 8  # the list was reused, including across the lattice-vector jump


def test_pair_at_exactly_the_cutoff_contributes_nothing(model):
    """Edges between rc and rc + skin are in the skin list but add exactly zero."""
    rc = model.cutoff
    box = [[20.0, 0, 0], [0, 20.0, 0], [0, 0, 20.0]]

    def dimer(d):
        return Atoms("OH", positions=[[5, 5, 5], [5 + d, 5, 5]], cell=box, pbc=True)

    e_far, f_far = evaluate(PbcgnnCalculator(model, skin=0.0), dimer(9.0))
    assert np.all(f_far == 0.0)
    for d in (rc, rc + 1e-9, rc + 0.4):
        for skin in (0.0, 1.0):
            e, f = evaluate(PbcgnnCalculator(model, skin=skin), dimer(d))
            assert e == e_far and np.all(f == 0.0), (d, skin)
    e_in, f_in = evaluate(PbcgnnCalculator(model, skin=1.0), dimer(rc - 0.5))
    assert e_in != e_far and np.abs(f_in).max() > 0  # inside the cutoff the pair interacts


def test_rebuild_rules(model, water192):
    calc = PbcgnnCalculator(model, skin=1.0)
    atoms = water192.copy()
    atoms.calc = calc
    atoms.get_forces()
    assert calc.rebuilds == 1
    atoms.positions[3] += [0.45, 0, 0]  # < skin/2
    atoms.get_forces()
    assert calc.rebuilds == 1
    atoms.positions[3] += [0.1, 0, 0]  # now 0.55 > skin/2 from the reference
    atoms.get_forces()
    assert calc.rebuilds == 2
    e = atoms.get_potential_energy()
    atoms.positions[7] += atoms.cell[1]  # a lattice vector: same energy, no rebuild
    assert atoms.get_potential_energy() == pytest.approx(e, rel=1e-13)
    assert calc.rebuilds == 2
    atoms.set_cell(atoms.cell * 1.001, scale_atoms=True)  # cell changed
    atoms.get_forces()
    assert calc.rebuilds == 3
    atoms.numbers[[0, 64]] = atoms.numbers[[64, 0]]  # swap an O and an H
    atoms.get_forces()
    assert calc.rebuilds == 4


@pytest.mark.parametrize("lists, builds", [(1, 6), (2, 2)])
def test_alternating_structures_keep_a_list_each(model, water192, lists, builds):
    """Ring-polymer beads alternate: with lists=2 each of two structures keeps its own list."""
    other = water192.copy()
    other.positions += [0.6, 0.0, 0.0]  # every atom more than skin/2 away
    calc = PbcgnnCalculator(model, skin=1.0, lists=lists)
    for k in range(6):
        e, f = evaluate(calc, water192 if k % 2 == 0 else other)
    assert calc.rebuilds == builds
    e0, f0 = evaluate(PbcgnnCalculator(model, skin=0.0), other)
    assert e == pytest.approx(e0, rel=1e-13) and np.abs(f - f0).max() < 1e-12 * np.abs(f0).max()


def test_stress_is_the_strain_derivative_in_voigt_order(model, water192):
    atoms = water192.copy()
    atoms.set_cell(atoms.cell.array @ np.array([[1, 0.03, 0], [0, 1, -0.02], [0.01, 0, 1]]), scale_atoms=True)
    atoms.calc = PbcgnnCalculator(model, skin=0.5)
    stress = atoms.get_stress()  # xx yy zz yz xz xy
    numeric = calculate_numerical_stress(atoms, eps=1e-5, voigt=True)
    np.testing.assert_allclose(stress, numeric, atol=1e-7 * np.abs(numeric).max())


def test_committee_reports_its_spread(water192):
    committee_mod = pytest.importorskip("pbcgnn.model.committee")
    torch.manual_seed(1)
    members = [SchNet(16, 16, 1, 8, cutoff=3.5).double() for _ in range(3)]
    for m in members:
        torch.nn.init.normal_(m.lin2.weight, std=0.3)
    calc = PbcgnnCalculator(committee_mod.Committee(members).eval(), skin=0.5)
    e, f = evaluate(calc, water192)
    singles = [evaluate(PbcgnnCalculator(m, skin=0.0), water192) for m in members]
    assert e == pytest.approx(np.mean([s[0] for s in singles]), rel=1e-12)
    np.testing.assert_allclose(f, np.mean([s[1] for s in singles], axis=0), atol=1e-10)
    assert calc.results["energy_std"] == pytest.approx(np.std([s[0] for s in singles], ddof=1), rel=1e-9)
    assert calc.results["forces_std"].shape == (192, 3) and calc.results["energies"].shape == (3,)


def test_committee_reports_its_calibrated_spread_and_the_raw_one(water192):
    from pbcgnn.md.output import spread_results
    from pbcgnn.model.calibration import Calibration, PowerLaw
    from pbcgnn.model.committee import Committee

    torch.manual_seed(1)
    members = [SchNet(16, 16, 1, 8, cutoff=3.5).double() for _ in range(3)]
    for m in members:
        torch.nn.init.normal_(m.lin2.weight, std=0.3)
    raw = PbcgnnCalculator(Committee(members).eval(), skin=0.5)
    calc = PbcgnnCalculator(Committee(members, Calibration(PowerLaw(3.0), PowerLaw(8.0))).eval(), skin=0.5)
    evaluate(raw, water192)
    e, f = evaluate(calc, water192)
    assert e == raw.results["energy"]
    assert calc.results["energy_std_raw"] == pytest.approx(raw.results["energy_std"], rel=1e-12)
    assert calc.results["energy_std"] == pytest.approx(3.0 * raw.results["energy_std"], rel=1e-12)
    np.testing.assert_allclose(calc.results["forces_std"], 8.0 * raw.results["forces_std"], rtol=1e-12)
    np.testing.assert_allclose(calc.results["forces_std_raw"], raw.results["forces_std"], rtol=1e-12)
    # what MD writes into its trajectory: both
    assert set(spread_results(calc)) == {"energy_std", "forces_std", "energy_std_raw", "forces_std_raw"}


# ---------------------------------------------------------------- bad input
@pytest.fixture(scope="module")
def trained_calc(md_checkpoint):
    return PbcgnnCalculator.from_checkpoint(md_checkpoint, skin=0.5)


def test_unknown_element_is_named(trained_calc, water192):
    atoms = water192.copy()
    atoms.numbers[5] = 6  # carbon: not in the H2O training set
    atoms.info.update(source_path="box.xyz", source_frame=3)
    with pytest.raises(InputError, match=r"box\.xyz: frame 3: element\(s\) C not in the model's training set; "
                                         r"expected only H, O"):
        evaluate(trained_calc, atoms)


def test_overlapping_atoms_are_refused(trained_calc, water192):
    atoms = water192.copy()
    atoms.positions[10] = atoms.positions[20] + [0.1, 0, 0]
    with pytest.raises(InputError, match=r"atoms (10 and 20|20 and 10) overlap: distance 0.1 A"):
        evaluate(trained_calc, atoms)


def test_missing_cell_is_refused_for_a_periodic_model(trained_calc, water192):
    atoms = Atoms(water192.numbers, positions=water192.positions)  # no cell, pbc False
    with pytest.raises(InputError, match="trained on periodic frames, expected a cell periodic in x, y and z"):
        evaluate(trained_calc, atoms)


def test_cli_reports_bad_structure_in_one_line(md_checkpoint, water192, tmp_path):
    atoms = water192.copy()
    atoms.numbers[0] = 6
    path = tmp_path / "carbon.xyz"
    atoms.write(path, format="extxyz")
    result = CliRunner().invoke(main, ["md", str(md_checkpoint), "--structure", str(path), "--steps", "2",
                                       "--out", str(tmp_path / "run"), "--no-progress"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == (
        f"Error: {path}: frame 0: element(s) C not in the model's training set; expected only H, O")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_list_on_the_device_matches_cpu(model, water192):
    atoms = water192.copy()
    cpu = evaluate(PbcgnnCalculator(model, skin=1.0), atoms, stress=True)
    gpu_calc = PbcgnnCalculator(copy.deepcopy(model), device="cuda", skin=1.0)
    for _ in range(2):  # a build, then a reuse of the list
        gpu = evaluate(gpu_calc, atoms, stress=True)
        assert gpu[0] == pytest.approx(cpu[0], rel=1e-10)
        np.testing.assert_allclose(gpu[1], cpu[1], atol=1e-9)
        np.testing.assert_allclose(gpu[2], cpu[2], atol=1e-11)
        atoms.positions[5] += atoms.cell[2]
    assert gpu_calc.rebuilds == 1
