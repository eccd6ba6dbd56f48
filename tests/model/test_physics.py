"""Physics oracles for every architecture + compute_properties + PbcgnnCalculator (float64, CPU)."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule
from ase.calculators.calculator import PropertyNotImplementedError
from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress
from torch_geometric.data import Batch

from pbcgnn.calculator import PbcgnnCalculator
from pbcgnn.graph import atoms_to_graph
from pbcgnn.model import compute_properties


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| / max |b|: small components make elementwise rtol meaningless."""
    return float(np.abs(a - b).max() / np.abs(b).max())


# --- periodicity -------------------------------------------------------------------------


@pytest.mark.parametrize("reps", [(2, 2, 2), (3, 1, 1)])
def test_supercell_is_extensive(box48, predict, reps):
    cell = predict(box48, stress=True)
    big = predict(box48.repeat(reps), stress=True)
    n = int(np.prod(reps))
    assert big["energy"] == pytest.approx(n * cell["energy"], rel=1e-12)
    # Atoms.repeat tiles the whole frame, so forces tile the same way.
    np.testing.assert_allclose(big["forces"], np.tile(cell["forces"], (n, 1)), rtol=0, atol=1e-10)
    np.testing.assert_allclose(big["stress"], cell["stress"], rtol=0, atol=1e-12)


# --- invariance ----------------------------------------------------------------------------


def test_translation_invariance(box48, predict):
    ref = predict(box48, stress=True)
    moved = box48.copy()
    moved.positions += np.random.default_rng(1).normal(scale=3.0, size=3)
    out = predict(moved, stress=True)
    assert out["energy"] == pytest.approx(ref["energy"], rel=1e-13)
    np.testing.assert_allclose(out["forces"], ref["forces"], rtol=0, atol=1e-10)
    np.testing.assert_allclose(out["stress"], ref["stress"], rtol=0, atol=1e-12)


def test_rotation_of_positions_and_cell(box48, predict):
    ref = predict(box48, stress=True)
    rot = random_rotation(np.random.default_rng(2))
    turned = box48.copy()
    turned.set_cell(box48.cell.array @ rot.T)  # rows are lattice vectors: rotate each row
    turned.positions = box48.positions @ rot.T
    out = predict(turned, stress=True)
    assert out["energy"] == pytest.approx(ref["energy"], rel=1e-13)
    np.testing.assert_allclose(out["forces"], ref["forces"] @ rot.T, rtol=0, atol=1e-10)
    np.testing.assert_allclose(out["stress"], rot @ ref["stress"] @ rot.T, rtol=0, atol=1e-12)


def test_permutation(box48, predict):
    ref = predict(box48)
    perm = np.random.default_rng(3).permutation(len(box48))
    out = predict(box48[perm])
    assert out["energy"] == pytest.approx(ref["energy"], rel=1e-13)
    np.testing.assert_allclose(out["forces"], ref["forces"][perm], rtol=0, atol=1e-10)


def test_wrapping_changes_nothing(box48, predict):
    wrapped = box48.copy()
    wrapped.wrap()
    assert np.abs(wrapped.positions - box48.positions).max() > 1.0  # the data are unwrapped
    ref, out = predict(box48, stress=True), predict(wrapped, stress=True)
    assert out["energy"] == pytest.approx(ref["energy"], rel=1e-13)
    np.testing.assert_allclose(out["forces"], ref["forces"], rtol=0, atol=1e-10)
    np.testing.assert_allclose(out["stress"], ref["stress"], rtol=0, atol=1e-12)


# --- derivatives -------------------------------------------------------------------------


def numerical_forces(atoms: Atoms, eps: float = 1e-4) -> np.ndarray:
    """Central differences, Richardson-extrapolated: error O(eps^4) instead of O(eps^2 F''), which
    for PaiNN (stiff bonds, small forces of a relaxed molecule) reaches 3e-4 relative at eps = 1e-4."""
    return (4.0 * calculate_numerical_forces(atoms, eps=eps / 2) - calculate_numerical_forces(atoms, eps=eps)) / 3.0



def without_reference(model):
    """A copy with e0 = 0. E0 adds a position- and strain-independent constant (-33 keV for
    a trained water model), whose only effect on finite differences is float64 round-off."""
    clone = copy.deepcopy(model)
    clone.reference.e0.zero_()
    return clone


def test_reference_does_not_change_derivatives(box48, model):
    box48.calc = PbcgnnCalculator(model)
    forces, stress = box48.get_forces(), box48.get_stress()
    box48.calc = PbcgnnCalculator(without_reference(model))
    np.testing.assert_allclose(box48.get_forces(), forces, rtol=0, atol=1e-12)
    np.testing.assert_allclose(box48.get_stress(), stress, rtol=0, atol=1e-14)


def test_forces_match_finite_differences(box48, model):
    box48.calc = PbcgnnCalculator(without_reference(model))
    forces = box48.get_forces()
    numeric = numerical_forces(box48)
    assert np.abs(forces).max() > 0.05  # a non-trivial test
    assert rel_err(forces, numeric) < 1e-6


def test_stress_matches_finite_differences(box48, model):
    box48.calc = PbcgnnCalculator(without_reference(model))
    stress = box48.get_stress()  # Voigt, eV/A^3, ASE sign
    numeric = calculate_numerical_stress(box48, eps=1e-6)
    assert stress.shape == (6,) and np.abs(stress).max() > 1e-4
    assert rel_err(stress, numeric) < 1e-6


def test_single_atom_in_box_smaller_than_cutoff(model):
    atoms = Atoms("O", positions=[[0.3, 0.2, 0.1]], cell=[3.0, 3.2, 3.4], pbc=True)
    data = atoms_to_graph(atoms, model.cutoff)
    assert data.edge_index.shape[1] > 20  # ~ (4/3) pi rc^3 / V images, all of the atom itself
    atoms.calc = PbcgnnCalculator(without_reference(model))
    assert np.isfinite(atoms.get_potential_energy())
    np.testing.assert_allclose(atoms.get_forces(), 0.0, atol=1e-12)  # images come in +-S pairs
    assert rel_err(atoms.get_stress(), calculate_numerical_stress(atoms, eps=1e-6)) < 1e-6


def test_non_periodic_molecule(model):
    water = molecule("H2O")  # cell zeros, pbc False
    water.calc = PbcgnnCalculator(model)
    forces = water.get_forces()
    np.testing.assert_allclose(forces.sum(0), 0.0, atol=1e-12)  # no external field
    assert rel_err(forces, numerical_forces(water)) < 1e-6
    with pytest.raises(PropertyNotImplementedError):
        water.get_stress()
    with pytest.raises(ValueError, match="volume"):
        compute_properties(model, atoms_to_graph(water, model.cutoff), stress=True)


def test_smooth_when_a_pair_crosses_the_cutoff(model):
    """O-H (spectator pair) plus a far O on the x axis, scanned across rc from the first O."""
    rc = model.cutoff
    calc = PbcgnnCalculator(model)

    def run(x: float) -> tuple[float, np.ndarray]:
        atoms = Atoms("OHO", positions=[[0, 0, 0], [0, 0.97, 0], [x, 0, 0]])
        atoms.calc = calc
        return atoms.get_potential_energy(), atoms.get_forces()

    e_in, f_in = run(rc - 1e-6)
    e_out, f_out = run(rc + 1e-6)
    _, f_in10 = run(rc - 1e-5)
    typical = np.abs(f_in).max()  # the O-H forces
    assert typical > 1e-2
    assert abs(e_in - e_out) < 1e-9  # E jumps by O(delta^2)
    assert not f_out[2].any()  # beyond rc the far O feels nothing at all
    # The cosine envelope is C1: the pair force vanishes linearly in delta = rc - d.
    assert np.abs(f_in[2]).max() < 1e-6 * typical
    assert f_in10[2, 0] / f_in[2, 0] == pytest.approx(10.0, rel=1e-2)
    np.testing.assert_allclose(f_in[:2], f_out[:2], rtol=0, atol=1e-6 * typical)


# --- batching ------------------------------------------------------------------------------


def test_batch_equals_single(water_frames, model):
    frames = [water_frames[k] for k in (0, 10, 11)]
    assert [len(a) for a in frames] == [48, 96, 192]
    graphs = [atoms_to_graph(a, model.cutoff) for a in frames]
    batched = compute_properties(model, Batch.from_data_list(graphs), stress=True)
    assert batched["energy"].dtype == torch.float64 and batched["energy"].shape == (3,)
    singles = [compute_properties(model, g, stress=True) for g in graphs]
    for key in ("energy", "stress"):
        expected = torch.cat([s[key] for s in singles])
        torch.testing.assert_close(batched[key], expected, rtol=1e-10, atol=1e-10)
    expected = torch.cat([s["forces"] for s in singles])
    torch.testing.assert_close(batched["forces"], expected, rtol=0, atol=1e-10)


def test_training_mode_keeps_force_graph(box48, model):
    data = atoms_to_graph(box48, model.cutoff)
    out = compute_properties(model, data, stress=True, training=True)
    loss = out["forces"].square().mean() + out["stress"].square().mean()
    loss.backward()
    first = list(model.interactions[0].parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in first)  # every weight of the first block
    assert not data.pos.requires_grad  # the caller's tensors are left alone


# --- model plumbing ------------------------------------------------------------------------


def test_hparams_rebuild_model(box48, model, predict):
    clone = type(model)(**model.hparams).double().train(model.training)
    clone.load_state_dict(model.state_dict())
    data = atoms_to_graph(box48, model.cutoff)
    assert float(clone.forward_data(data)) == predict(box48)["energy"]
    assert all(isinstance(v, (int, float)) for v in model.hparams.values())
