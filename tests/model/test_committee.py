"""Committee mean and spread against the members."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch_geometric.data import Batch

from pbcgnn.graph import atoms_to_graph
from pbcgnn.io import read_frames
from pbcgnn.model import Committee, SchNet, committee_properties, compute_properties


def random_member(seed: int) -> SchNet:
    """A tiny float64 SchNet with random weights (non-zero readout) and a reference energy."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = SchNet(hidden_channels=16, num_filters=16, num_interactions=2, num_rbf=12, cutoff=4.5).double()
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.1 * torch.randn_like(p))
    model.reference.set_values({1: -13.6, 8: -430.0}, 0.5)
    return model


@pytest.fixture(scope="module")
def batch(bundled_n2p2):
    """Three frames of 16 H2O (48 atoms) of the bundled RPBE-D3 sample."""
    return Batch.from_data_list([atoms_to_graph(a, 4.5) for a in read_frames(bundled_n2p2) if len(a) == 48][:3])


def test_mean_and_spread_are_those_of_the_members(batch):
    members = [random_member(seed) for seed in range(4)]
    committee = Committee(members)
    out = committee_properties(committee, batch, forces=True, stress=True)
    each = [compute_properties(m, batch, forces=True, stress=True) for m in members]
    for key in ("energy", "forces", "stress"):
        values = np.stack([e[key].detach().numpy() for e in each])  # [M, ...]
        np.testing.assert_allclose(out[key].numpy(), values.mean(0), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(out[f"{key}_std"].numpy(), values.std(0, ddof=1), rtol=1e-10, atol=1e-12)
    assert out["energies"].shape == (4, 3) and out["energy"].dtype == torch.float64
    assert float(out["energy_std"].min()) > 0  # the members differ
    # forward is the mean energy, so the generic derivative code gives the mean forces
    plain = compute_properties(committee, batch, forces=True)
    np.testing.assert_allclose(plain["energy"].numpy(), out["energy"].numpy(), rtol=1e-14)
    np.testing.assert_allclose(plain["forces"].numpy(), out["forces"].numpy(), rtol=1e-10, atol=1e-12)
    assert committee.cutoff == 4.5 and len(committee.members) == 4


def test_members_must_share_a_cutoff():
    with pytest.raises(ValueError, match="one cutoff"):
        Committee([random_member(0), SchNet(hidden_channels=8, cutoff=5.0)])
