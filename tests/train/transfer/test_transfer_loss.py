"""Energy-only frames add no force gradient; per-frame weights scale a frame's share of the loss."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch_geometric.data import Batch

from pbcgnn.graph import atoms_to_graph
from pbcgnn.io import read_frames, write_frames
from pbcgnn.model import SchNet, compute_properties
from pbcgnn.train.loss import energy_force_loss


def random_model(seed: int = 0) -> SchNet:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = SchNet(hidden_channels=16, num_filters=16, num_interactions=2, num_rbf=12, cutoff=4.5).double()
        with torch.no_grad():  # the readout starts at zero: perturb so forces are non-zero
            for p in model.parameters():
                p.add_(0.1 * torch.randn_like(p))
    return model


def grads(model, graphs, energy_weight, force_weight) -> list[torch.Tensor]:
    batch = Batch.from_data_list(graphs)
    pred = compute_properties(model, batch, forces=True, training=True)
    loss, _ = energy_force_loss(pred, batch, energy_weight, force_weight)
    model.zero_grad(set_to_none=False)
    loss.backward()
    return [p.grad.clone() for p in model.parameters()]


@pytest.fixture(scope="module")
def graphs(water48):
    return [atoms_to_graph(a, 4.5) for a in water48[:3]]


def energy_only(g):
    g = g.clone()
    g.has_forces = torch.tensor([False])
    g.forces = torch.full_like(g.forces, 1e3)  # garbage where no label exists: must not matter
    return g


def test_energy_only_frames_contribute_no_force_gradient(graphs):
    model = random_model()
    only = [energy_only(g) for g in graphs]
    with_f = grads(model, only, 1.0, 1.0)
    without_f = grads(model, only, 1.0, 0.0)
    assert all(torch.equal(a, b) for a, b in zip(with_f, without_f))
    assert any(float(g.abs().max()) > 0 for g in with_f)


def test_force_term_of_a_mixed_batch_comes_from_frames_with_forces_only(graphs):
    model = random_model(1)
    mixed = grads(model, [graphs[0], energy_only(graphs[1]), graphs[2]], 0.0, 1.0)
    labelled = grads(model, [graphs[0], graphs[2]], 0.0, 1.0)
    for a, b in zip(mixed, labelled):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-14)


def test_weight_from_extxyz_info_scales_a_frame(water48, tmp_path):
    frames = [a.copy() for a in water48[:3]]
    for atoms, src in zip(frames, water48[:3]):
        atoms.calc = src.calc
    frames[1].info["weight"] = 0.0
    frames[2].info["weight"] = 3.0
    path = tmp_path / "weighted.xyz"
    write_frames(path, frames)
    back = [atoms_to_graph(a, 4.5) for a in read_frames(path)]
    assert [float(g.weight) for g in back] == [1.0, 0.0, 3.0]
    model = random_model(2)
    weighted = grads(model, back, 1.0, 1.0)
    tripled = [back[0], back[2], back[2], back[2]]  # weight 3 = the frame three times; weight 0 = absent
    for g in tripled:
        g.weight = torch.ones(1, dtype=torch.float64)
    reference = grads(model, tripled, 1.0, 1.0)
    for a, b in zip(weighted, reference):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-13)
    assert np.isfinite([float(g.abs().sum()) for g in weighted]).all()
