"""The model's fast paths change nothing: mirror-pair edge lists, Verlet skins, unpaired edges
and spatial relabelling give the results of the plain edge list."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch_geometric.data import Batch

import pbcgnn.model.base as base
from pbcgnn.graph import atoms_to_graph
from pbcgnn.model import compute_properties
from pbcgnn.model.base import spatial_order
from pbcgnn.neighbors import mirror_pairs, neighbor_list


def close(a: dict, b: dict, rtol: float = 1e-10) -> None:
    for key in a:
        scale = float(b[key].abs().max())
        assert float((a[key] - b[key]).abs().max()) <= rtol * scale, key


def test_mirror_pairs_pick_one_edge_of_each_pair(water):
    atoms = water[2]  # 48 atoms, 7.8 A box: pairs have several images within 6 A
    e, s = neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, 6.0)
    edge_index, offsets = torch.from_numpy(e), torch.from_numpy(s)
    pairs = mirror_pairs(edge_index, offsets)
    assert pairs is not None and 2 * pairs.numel() == edge_index.shape[1]
    chosen = {(int(j), int(i), tuple(o.tolist())) for (j, i), o in zip(edge_index[:, pairs].T, offsets[pairs])}
    mirrors = {(i, j, tuple(-x for x in o)) for j, i, o in chosen}
    every = {(int(j), int(i), tuple(o.tolist())) for (j, i), o in zip(edge_index.T, offsets)}
    assert not chosen & mirrors and chosen | mirrors == every
    assert len({(j, i) for j, i, _ in every}) < len(every)  # several images of one pair
    # one edge missing its mirror: not symmetric
    assert mirror_pairs(edge_index[:, 1:], offsets[1:]) is None
    assert mirror_pairs(torch.cat([edge_index, edge_index[:, :2]], 1), torch.cat([offsets, offsets[:2]])) is None


@pytest.mark.parametrize("architecture", ["schnet", "painn"])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_unpaired_and_skin_lists_give_the_same_result(water, make_model, mode, architecture):
    """A list built with a 1 A skin, and one with an extra unpaired edge beyond the cutoff
    (so every edge is evaluated on its own), give the results of the plain list."""
    model = make_model(architecture=architecture).train(mode == "train")
    atoms = water[0]
    data = atoms_to_graph(atoms, model.cutoff)
    ref = compute_properties(model, data, stress=True)
    skin = atoms_to_graph(atoms, model.cutoff + 1.0)
    assert skin.edge_index.shape[1] > 1.5 * data.edge_index.shape[1]
    close(compute_properties(model, skin, stress=True), ref)
    d = np.linalg.norm(atoms.positions[skin.edge_index[0]] - atoms.positions[skin.edge_index[1]]
                       + skin.cell_offsets.numpy() @ atoms.cell.array, axis=1)
    k = int(np.argmax(d))  # a second copy of the longest edge (beyond the cutoff) has no mirror
    far = skin.clone()
    far.edge_index = torch.cat([skin.edge_index, skin.edge_index[:, k : k + 1]], 1)
    far.cell_offsets = torch.cat([skin.cell_offsets, skin.cell_offsets[k : k + 1]])
    assert d[k] > model.cutoff and mirror_pairs(far.edge_index, far.cell_offsets) is None
    close(compute_properties(model, far, stress=True), ref)


@pytest.mark.parametrize("architecture", ["schnet", "painn"])
def test_spatial_order_relabelling_changes_nothing(water, make_model, monkeypatch, architecture):
    model = make_model(architecture=architecture).eval()
    batch = Batch.from_data_list([atoms_to_graph(a, model.cutoff) for a in water[1:3]])
    ref = compute_properties(model, batch, stress=True)
    monkeypatch.setattr(base, "SPATIAL_ORDER_MIN_ATOMS", 1)
    close(compute_properties(model, batch, stress=True), ref)
    order = spatial_order(batch.pos, batch.cell, batch.batch)
    assert sorted(order.tolist()) == list(range(batch.num_nodes))
    assert (batch.batch[order].diff() >= 0).all()  # frames stay contiguous and in order
