"""Neighbour lists against brute-force enumeration of periodic images."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from pbcgnn.errors import InputError
from pbcgnn.neighbors import edge_vectors, estimate_edges, neighbor_list, radius_graph_pbc


def random_cell(rng: np.random.Generator, scale: float) -> np.ndarray:
    """A skewed triclinic cell (rows are lattice vectors) with a healthy volume."""
    while True:
        cell = np.eye(3) * scale + rng.uniform(-0.45, 0.45, (3, 3)) * scale
        if np.linalg.det(cell) > 0.3 * scale**3:
            return cell


def brute_force(pos, cell, pbc, cutoff):
    """Set of (i, j, S) with |pos[j] - pos[i] + S @ cell| < cutoff, by enumerating images."""
    inv = np.linalg.inv(cell)
    spacing = 1.0 / np.linalg.norm(inv, axis=0)
    frac = pos @ inv
    span = np.ptp(frac, axis=0) if len(pos) > 1 else np.zeros(3)
    reach = [int(np.ceil(cutoff / h + s)) + 1 if p else 0 for h, s, p in zip(spacing, span, pbc)]
    out = set()
    for S in itertools.product(*(range(-m, m + 1) for m in reach)):
        shift = np.array(S) @ cell
        d = np.linalg.norm(pos[None, :, :] + shift - pos[:, None, :], axis=-1)  # [i, j]
        for i, j in zip(*np.nonzero(d < cutoff)):
            if i != j or any(S):
                out.add((int(i), int(j), S))
    return out


def as_set(edge_index, offsets):
    return {(int(i), int(j), tuple(int(s) for s in S)) for j, i, S in zip(*edge_index, offsets)}


CASES = [  # (n_atoms, cell scale, cutoff): includes cells smaller than twice the cutoff
    (1, 2.5, 6.0),
    (7, 4.0, 6.0),
    (20, 8.0, 3.5),
    (12, 5.0, 5.0),
]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("n,scale,cutoff", CASES)
def test_matches_brute_force_in_skewed_cells(seed, n, scale, cutoff):
    rng = np.random.default_rng(seed)
    cell = random_cell(rng, scale)
    pos = rng.uniform(-0.5, 1.5, (n, 3)) @ cell  # partly outside the cell: not wrapped
    pbc = np.array([True, True, True])
    edge_index, offsets = neighbor_list(pos, cell, pbc, cutoff)
    expected = brute_force(pos, cell, pbc, cutoff)
    assert as_set(edge_index, offsets) == expected
    assert edge_index.shape[1] == len(expected)  # no duplicates
    # several images of the same neighbour when the cell is small
    if 2 * cutoff > scale:
        pairs = [(i, j) for i, j, _ in expected]
        assert len(pairs) > len(set(pairs))


def test_mixed_and_no_periodicity():
    rng = np.random.default_rng(3)
    cell = random_cell(rng, 5.0)
    pos = rng.uniform(0, 1, (10, 3)) @ cell
    for pbc in ([True, True, False], [False, False, False]):
        pbc = np.array(pbc)
        edge_index, offsets = neighbor_list(pos, cell, pbc, 4.0)
        assert as_set(edge_index, offsets) == brute_force(pos, cell, pbc, 4.0)
        assert not offsets[:, ~pbc].any()
    # a molecule with no cell at all
    edge_index, offsets = neighbor_list(pos, np.zeros((3, 3)), np.zeros(3, bool), 4.0)
    assert as_set(edge_index, offsets) == brute_force(pos, np.eye(3), np.zeros(3, bool), 4.0)


def test_self_images_are_edges():
    """One atom in a 2 A box at cutoff 2.5 A: 6 face images (2 A) + 12 edge images (2.83 A > 2.5)."""
    edge_index, offsets = neighbor_list(np.zeros((1, 3)), np.eye(3) * 2.0, np.ones(3, bool), 2.5)
    assert edge_index.shape[1] == 6
    assert (edge_index == 0).all()
    assert (np.abs(offsets).sum(axis=1) == 1).all()


def test_wrapping_changes_no_distance():
    rng = np.random.default_rng(5)
    cell = random_cell(rng, 6.0)
    pos = rng.uniform(-2, 3, (15, 3)) @ cell
    frac = pos @ np.linalg.inv(cell)
    wrapped = (frac - np.floor(frac)) @ cell

    def pair_distances(p):
        ei, s = neighbor_list(p, cell, np.ones(3, bool), 5.0)
        d = np.linalg.norm(p[ei[0]] - p[ei[1]] + s @ cell, axis=1)
        return sorted(zip(ei[1], ei[0], np.round(d, 9)))

    assert pair_distances(pos) == pair_distances(wrapped)


def test_edge_vectors_follow_the_convention():
    rng = np.random.default_rng(6)
    cell = random_cell(rng, 5.0)
    pos = rng.uniform(0, 1, (8, 3)) @ cell
    ei, s = neighbor_list(pos, cell, np.ones(3, bool), 4.0)
    vec = edge_vectors(torch.tensor(pos), torch.tensor(ei), torch.tensor(s), torch.tensor(cell))
    expected = pos[ei[0]] - pos[ei[1]] + s @ cell  # pos[j] - pos[i] + S @ cell
    np.testing.assert_allclose(vec.numpy(), expected, atol=1e-12)
    assert (vec.norm(dim=1) < 4.0).all()


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("n,scale,cutoff", CASES)
def test_torch_cluster_agrees_with_matscipy(seed, n, scale, cutoff):
    pytest.importorskip("torch_cluster")
    rng = np.random.default_rng(10 + seed)
    cell = random_cell(rng, scale)
    pos = rng.uniform(-0.5, 1.5, (n, 3)) @ cell
    pbc = np.ones(3, bool)
    ei, s = neighbor_list(pos, cell, pbc, cutoff)
    ei_t, s_t = radius_graph_pbc(torch.tensor(pos), torch.tensor(cell), torch.tensor(pbc), cutoff)
    assert as_set(ei_t.numpy(), s_t.numpy()) == as_set(ei, s)
    assert ei_t.shape[1] == ei.shape[1]


def test_torch_cluster_batches_and_molecules():
    pytest.importorskip("torch_cluster")
    rng = np.random.default_rng(7)
    frames = []
    for scale, pbc in [(5.0, [True] * 3), (9.0, [False] * 3), (4.0, [True, True, False])]:
        cell = random_cell(rng, scale)
        frames.append((rng.uniform(0, 1, (9, 3)) @ cell, cell, np.array(pbc)))
    pos = torch.tensor(np.concatenate([f[0] for f in frames]))
    cell = torch.tensor(np.stack([f[1] for f in frames]))
    pbc = torch.tensor(np.stack([f[2] for f in frames]))
    batch = torch.arange(3).repeat_interleave(9)
    ei_t, s_t = radius_graph_pbc(pos, cell, pbc, 4.5, batch)
    expected = set()
    for b, (p, c, pb) in enumerate(frames):
        ei, s = neighbor_list(p, c, pb, 4.5)
        expected |= as_set(ei + 9 * b, s)
    assert as_set(ei_t.numpy(), s_t.numpy()) == expected


@pytest.mark.parametrize("pbc, cutoff", [((True, True, True), 7.0), ((True, True, True), 15.0),
                                         ((True, True, False), 6.0), ((True, False, False), 6.0),
                                         ((False, False, False), 5.0), ((False, False, False), 50.0)])
def test_the_edge_estimate_is_close_to_the_real_count(pbc, cutoff):
    """N * (4/3 pi rc^3) * N / V, clipped to the atoms' extent along non-periodic directions:
    within a factor 2 of the real count for a uniform system (a memory guard, not a physics number)."""
    rng = np.random.default_rng(5)
    cell = random_cell(rng, 9.0) if all(pbc) else np.diag([9.0, 9.5, 10.0])
    pos = rng.uniform(0.0, 1.0, (150, 3)) @ cell
    edges, _ = neighbor_list(pos, cell, np.array(pbc), cutoff)
    estimate = estimate_edges(pos, cell, np.array(pbc), cutoff, len(pos))
    torch_estimate = estimate_edges(torch.as_tensor(pos), cell, np.array(pbc), cutoff, len(pos))
    assert estimate == pytest.approx(torch_estimate)
    assert 0.5 < estimate / edges.shape[1] < 2.0
    assert estimate <= len(pos) ** 2 or all(pbc)


def test_a_cutoff_beyond_the_memory_is_refused_before_building(monkeypatch):
    """A 7.8 A box with a 1000 A cutoff (an OOM kill at 24 GB before): refused with the estimate, by both builders."""
    import pbcgnn.neighbors as nb

    monkeypatch.setattr(nb, "_matscipy_neighbour_list", lambda *a, **k: pytest.fail("list built"))
    rng = np.random.default_rng(0)
    cell = np.eye(3) * 7.8
    pos = rng.uniform(0.0, 7.8, (48, 3))
    with pytest.raises(InputError, match=r"found about 2\.03e\+10 edges .* cutoff 1000 A, needing ~4\.85e\+03 GiB"):
        neighbor_list(pos, cell, np.ones(3, bool), 1000.0)
    with pytest.raises(InputError, match="fits in memory"):
        radius_graph_pbc(torch.as_tensor(pos), torch.as_tensor(cell), torch.ones(3, dtype=torch.bool), 1000.0)
    # the limit is the free memory: with 1 TiB more free, 100 A (4.9 GiB) passes the check
    monkeypatch.setattr(nb, "available_memory", lambda device="cpu": 2**40)
    nb.check_list_memory(estimate_edges(pos, cell, np.ones(3, bool), 100.0, 48), 100.0, 48)
    monkeypatch.setattr(nb, "available_memory", lambda device="cpu": 2**20)
    with pytest.raises(InputError, match=r"\(0\.000977 GiB free\)"):
        nb.check_list_memory(estimate_edges(pos, cell, np.ones(3, bool), 30.0, 48), 30.0, 48)


def test_atoms_far_outside_the_cell_give_the_list_of_their_wrapped_images():
    """MD that blew up hands the list positions ~1e8 A out (once a second per build in matscipy):
    the list is that of the atoms moved back by whole lattice vectors, with shifts that undo it."""
    rng = np.random.default_rng(5)
    cell = random_cell(rng, 8.0)
    pos = rng.random((30, 3)) @ cell
    jumps = np.round(rng.normal(size=pos.shape) * 1e7)  # [N, 3] lattice vectors
    far = pos + jumps @ cell
    ei, s = neighbor_list(pos, cell, np.ones(3, bool), 5.0)
    ei_far, s_far = neighbor_list(far, cell, np.ones(3, bool), 5.0)
    expected = {(int(j), int(i), *(S - jumps[j] + jumps[i]).astype(int)) for (j, i), S in zip(ei.T, s)}
    assert {(int(j), int(i), *S) for (j, i), S in zip(ei_far.T, s_far)} == expected
