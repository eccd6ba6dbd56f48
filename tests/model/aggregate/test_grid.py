"""Training through filter tables (GridSum) equals plain autograd on the filter network, on real water."""
from __future__ import annotations

import pytest
import torch
from torch_geometric.data import Batch

import pbcgnn.model.aggregate as aggregate
from pbcgnn.graph import atoms_to_graph
from pbcgnn.model import SchNet, compute_properties
from pbcgnn.model.aggregate import AutogradSum, GridFilter, GridSum, NetworkFilter
from pbcgnn.model.aggregate.base import plain_sum


def plain_autograd(model: SchNet) -> AutogradSum:
    return AutogradSum(NetworkFilter(model.radial))


def one_way(data):  # noqa: ANN001, ANN201
    """The graph with the mirror of every third edge removed: a list that is not symmetric."""
    data = data.clone()
    src, dst = data.edge_index
    keep = (src < dst) | (torch.arange(src.numel()) % 3 != 0)
    data.edge_index, data.cell_offsets = data.edge_index[:, keep], data.cell_offsets[keep]
    return data


def step(model: SchNet, batch) -> tuple[dict, list[torch.Tensor]]:  # noqa: ANN001
    """Energy, forces and stress in training mode, and the gradients of an energy+force+stress loss."""
    pred = compute_properties(model, batch, forces=True, stress=True, training=True)
    e0 = model.reference.e0[batch.z].sum()  # the loss sees the network part, as training's E - E0 fit
    loss = 10.0 * ((pred["energy"].sum() - e0) / batch.num_nodes) ** 2 + pred["forces"].square().mean()
    loss = loss + pred["stress"].square().sum()
    grads = torch.autograd.grad(loss, list(model.parameters()), allow_unused=True)
    return {k: v.detach() for k, v in pred.items()}, grads


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("frames", ["one", "batch"])
@pytest.mark.parametrize("symmetric", [True, False])
def test_grid_training_path_equals_plain_autograd(water, make_model, monkeypatch, frames, symmetric):
    """float64, random weights with a non-zero readout: energy, forces and stress to 1e-5
    relative, every parameter gradient of the loss to 1e-4 (the grid's error is ~1e-8)."""
    model = make_model(hidden=32).train()
    graphs = [atoms_to_graph(a, model.cutoff) for a in (water[2:3] if frames == "one" else water)]
    if not symmetric:
        graphs = [one_way(g) for g in graphs]
    batch = Batch.from_data_list(graphs)
    assert isinstance(model.aggregation(), GridSum)
    fast, fast_grads = step(model, batch)
    monkeypatch.setattr(SchNet, "aggregation", plain_autograd)
    exact, exact_grads = step(model, batch)
    e_ref = model.reference.e0[batch.z].sum()
    assert abs(float(exact["energy"].sum() - e_ref)) > 1.0  # a non-trivial network energy
    assert float((fast["energy"] - exact["energy"]).abs().sum() / (exact["energy"].sum() - e_ref).abs()) < 1e-5
    assert relative(fast["forces"], exact["forces"]) < 1e-5
    assert relative(fast["stress"], exact["stress"]) < 1e-5
    for (name, _), gf, ge in zip(model.named_parameters(), fast_grads, exact_grads):
        if ge is None:
            assert gf is None or not gf.any(), name
            continue
        assert relative(gf, ge) < 1e-4, name


def test_grid_is_the_training_path_and_eval_stays_exact(make_model):
    model = make_model()
    assert isinstance(model.train().aggregation(), GridSum)
    assert not isinstance(model.eval().aggregation(), GridSum)
    assert isinstance(aggregate.select(NetworkFilter(model.radial), training=True), AutogradSum)  # no cutoff


def test_grid_cells_are_the_network_its_differences_and_slopes(make_model):
    """Cells (y_k, y_k+1 - y_k, h W'(r_k), h W'(r_k+1)): values equal the filter network, slopes
    equal finite differences; built in float64 even for a float32 model (no cancellation)."""
    model = make_model()
    conv = model.interactions[0].conv
    grid = GridFilter(NetworkFilter(model.radial, model.cutoff), model.cutoff, spacing=0.01)
    (cells,) = grid.params(conv)
    r = torch.linspace(0.0, model.cutoff, grid.points, dtype=torch.float64)
    y = conv.filter(*model.radial(r))  # [G, F]
    assert cells.shape == (grid.points - 1, 4, y.shape[1])
    torch.testing.assert_close(cells[:, 0], y[:-1], rtol=0, atol=1e-12)
    torch.testing.assert_close(cells[:, 1], y[1:] - y[:-1], rtol=0, atol=1e-12)
    h = 1e-6
    slope = (conv.filter(*model.radial(r + h)) - conv.filter(*model.radial(r - h))) / (2 * h)
    torch.testing.assert_close(cells[1:, 2] / grid.spacing, slope[1:-1], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(cells[:-1, 3], cells[1:, 2])
    model32 = SchNet(**model.hparams)
    model32.load_state_dict(model.state_dict())
    (cells32,) = GridFilter(NetworkFilter(model32.radial, model32.cutoff), model.cutoff).params(
        model32.interactions[0].conv)
    (cells64,) = GridFilter(NetworkFilter(model.radial, model.cutoff), model.cutoff).params(conv)
    assert cells32.dtype == torch.float32
    # the differences keep float32's relative precision (a float32 subtraction would lose ~1e-4)
    diff = (cells32[:, 1].double() - cells64[:, 1]).abs() / cells64[:, 1].abs().clamp_min(1e-3)
    assert float(diff.max()) < 1e-5


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("compile", [False, True])
def test_grid_sum_closed_form_derivatives_equal_autograd_of_the_interpolant(make_model, compile, symmetric):
    """The fused kernels' closed-form first and second levels (and the autograd fallback for
    derivatives of weight gradients) equal plain autograd through the same interpolant, to
    rounding, for eager and compiled kernels, on random edges (several chunks)."""
    torch.manual_seed(0)
    model = make_model(hidden=16)
    conv = model.interactions[0].conv
    n, e = 30, 9000  # > 2 chunks of 4096 edges, the last one padded
    edge_index = torch.randint(0, n, (2, e))
    pos = torch.randn(e, dtype=torch.float64, requires_grad=True)
    x0 = torch.randn(n, 16, dtype=torch.float64, requires_grad=True)
    grid = GridFilter(NetworkFilter(model.radial, model.cutoff), model.cutoff, compile=compile)

    def through_interpolant(x, d):  # noqa: ANN001, ANN202
        (cells,) = grid.params(conv)
        return plain_sum(x, edge_index[0], edge_index[1], grid(d, cells), symmetric)

    def fused(x, d):  # noqa: ANN001, ANN202
        return GridSum(grid)(conv, x, edge_index, (d,), symmetric)

    results = []
    for aggregate_fn in (through_interpolant, fused):
        d = 0.5 + 5.4 * torch.sigmoid(pos)  # [E] inside the cutoff
        x = torch.tanh(x0) * x0
        energy = aggregate_fn(x, d).tanh().square().sum()
        (g_pos,) = torch.autograd.grad(energy, pos, create_graph=True)
        weights = conv.filter_params()
        g_w = torch.autograd.grad(energy, weights, create_graph=True)  # weight gradients, differentiable
        loss = energy + g_pos.square().sum() + sum(g.square().sum() for g in g_w)
        results.append(torch.autograd.grad(loss, [x0, pos, *weights]))
    for exact, fast in zip(*results):
        assert relative(fast, exact) < 1e-9
