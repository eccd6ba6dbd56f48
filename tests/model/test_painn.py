"""PaiNN beyond the physics shared by every architecture (tests/model/test_physics.py)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms

from pbcgnn.graph import atoms_to_graph
from pbcgnn.model import PaiNN, compute_properties


def _bent(angle_deg: float) -> Atoms:
    """O with two H at 1 A, the H-H distance (1.53-2 A for 100-180 degrees) beyond a 1.5 A cutoff."""
    a = np.radians(angle_deg)
    return Atoms("OHH", positions=[[0, 0, 0], [1.0, 0, 0], [np.cos(a), np.sin(a), 0]])


@pytest.mark.parametrize("architecture", ["schnet", "painn"])
def test_only_painn_sees_angles(make_model, architecture):
    """The graph (two edges of fixed length) is the same at every angle: an invariant pairwise model
    cannot tell the angles apart; PaiNN's vector channels can."""
    model = make_model(architecture=architecture).eval()
    model.cutoff = 1.5
    model.envelope.cutoff.fill_(1.5)
    if architecture == "painn":
        model.rbf.freq.copy_(torch.arange(1, model.num_rbf + 1, dtype=torch.float64) * np.pi / 1.5)
    else:
        model.rbf.mu.copy_(torch.linspace(0, 1.5, model.num_rbf, dtype=torch.float64))
    energies = [float(model.forward_data(atoms_to_graph(_bent(a), 1.5))) for a in (100, 120, 150, 180)]
    spread = max(energies) - min(energies)
    if architecture == "painn":
        assert spread > 1e-4
    else:
        assert spread < 1e-12


def test_untrained_painn_predicts_the_reference_energies(water):
    """The zero readout: a new model adds nothing to E0 (training starts from the fitted reference)."""
    model = PaiNN(hidden_channels=16, num_interactions=2, cutoff=5.0).double()
    model.reference.set_values({1: -13.6, 8: -430.0}, 0.7)
    atoms = water[0]
    out = compute_properties(model, atoms_to_graph(atoms, 5.0), stress=True)
    expected = -13.6 * atoms.get_chemical_symbols().count("H") - 430.0 * atoms.get_chemical_symbols().count("O")
    assert float(out["energy"]) == pytest.approx(expected, rel=1e-14)
    assert float(out["forces"].abs().max()) == 0.0 and float(out["stress"].abs().max()) == 0.0


def test_vector_features_rotate_with_the_frame(water, make_model):
    """Inside the model, every layer's vectors rotate with the positions and its scalars stay put."""
    model = make_model(architecture="painn").eval()
    atoms = water[2]
    rot, _ = np.linalg.qr(np.random.default_rng(5).normal(size=(3, 3)))
    turned = atoms.copy()
    turned.set_cell(atoms.cell.array @ rot.T)
    turned.positions = atoms.positions @ rot.T
    seen = []
    hook = model.interactions[-1].register_forward_hook(lambda mod, args, out: seen.append(out))
    for frame in (atoms, turned):
        model.forward_data(atoms_to_graph(frame, model.cutoff))
    hook.remove()
    (s0, v0), (s1, v1) = seen
    assert float(v0.abs().max()) > 1e-3
    # relative to the largest feature (random weights make features of ~1e3)
    torch.testing.assert_close(s1, s0, rtol=0, atol=1e-10 * float(s0.abs().max()))
    rotated = torch.einsum("ab,nbf->naf", torch.as_tensor(rot), v0)
    torch.testing.assert_close(v1, rotated, rtol=0, atol=1e-10 * float(v0.abs().max()))


def test_invalid_sizes_are_refused():
    with pytest.raises(ValueError, match="PaiNN"):
        PaiNN(hidden_channels=1)
    with pytest.raises(ValueError, match="PaiNN"):
        PaiNN(cutoff=0.0)
