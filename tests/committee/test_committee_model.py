"""Committee mean and spread against the members, spread measures, Spearman, ranking."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch_geometric.data import Batch

from pbcgnn.committee import (Committee, bootstrap_indices, committee_properties, frame_spread, rank_by_spread,
                              spearman)
from pbcgnn.graph import atoms_to_graph
from pbcgnn.io import read_frames
from pbcgnn.model import compute_properties


@pytest.fixture(scope="module")
def batch(water48_file):
    return Batch.from_data_list([atoms_to_graph(a, 4.5) for a in read_frames(water48_file)[:3]])


def test_mean_and_spread_are_those_of_the_members(batch, helpers):
    members = [helpers.random_member(seed) for seed in range(4)]
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


def test_members_must_share_a_cutoff(helpers):
    from pbcgnn.model import SchNet

    with pytest.raises(ValueError, match="one cutoff"):
        Committee([helpers.random_member(0), SchNet(hidden_channels=8, cutoff=5.0)])


def test_frame_spread_by_hand():
    natoms = np.array([2, 1])
    forces_std = np.array([[3.0, 0, 0], [0, 4.0, 0], [1.0, 2.0, 2.0]])  # per-atom |std| 3, 4, 3
    spread = frame_spread(np.array([0.2, 0.6]), forces_std, natoms)
    np.testing.assert_allclose(spread["energy"], [0.1, 0.6])
    np.testing.assert_allclose(spread["forces"], [np.sqrt(25 / 6), np.sqrt(9 / 3)])
    np.testing.assert_allclose(spread["max_force"], [4.0, 3.0])


def test_spearman_matches_scipy_with_ties():
    from scipy.stats import spearmanr

    rng = np.random.default_rng(0)
    a = rng.integers(0, 5, 40).astype(float)  # many ties
    b = a + rng.normal(0, 2, 40)
    assert spearman(a, b) == pytest.approx(spearmanr(a, b).statistic, abs=1e-12)
    assert spearman(np.arange(5), np.arange(5) ** 3) == pytest.approx(1.0)
    assert spearman([1, 2, np.nan, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)  # NaN pairs dropped
    assert np.isnan(spearman([1, 1, 1], [1, 2, 3]))


def test_rank_by_spread_and_bootstrap():
    assert rank_by_spread(np.array([0.1, 0.5, 0.3, 0.5]), 3).tolist() == [1, 3, 2]
    idx = bootstrap_indices(50, seed=3)
    assert torch.equal(idx, bootstrap_indices(50, seed=3)) and not torch.equal(idx, bootstrap_indices(50, seed=4))
    assert idx.shape == (50,) and int(idx.min()) >= 0 and int(idx.max()) < 50
    assert 20 < len(set(idx.tolist())) < 45  # drawn with replacement (about 63 % distinct)
