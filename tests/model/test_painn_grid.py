"""PaiNN's training path through filter grids equals plain autograd on the network (float64)."""
from __future__ import annotations

import pytest
import torch
from torch_geometric.data import Batch

from pbcgnn.graph import atoms_to_graph
from pbcgnn.model import compute_properties
from pbcgnn.model.aggregate.directional import directional_sum, plain_directional_sum
from pbcgnn.model.painn_grid import FilterGrid


def _loss_and_grads(model, data, grid: bool) -> tuple[dict, dict]:
    """Energy, forces and stress, and every parameter's gradient of an energy + force + stress loss."""
    model.grid_training = grid
    model.train().zero_grad()
    out = compute_properties(model, data, forces=True, stress=True, training=True)
    loss = 1e-4 * out["energy"].square().sum() + out["forces"].square().sum() + 100.0 * out["stress"].square().sum()
    loss.backward()
    grads = {name: p.grad.detach().clone() for name, p in model.named_parameters()}
    return {k: v.detach() for k, v in out.items()}, grads


def _close(fast: torch.Tensor, ref: torch.Tensor, rtol: float) -> None:
    assert float((fast - ref).abs().max()) <= rtol * float(ref.abs().max())


@pytest.mark.parametrize("frames", [[2], [0, 2, 3]], ids=["one frame", "batch"])
def test_grid_training_equals_plain_autograd(water, make_model, frames):
    """E, F, stress to 1e-5 relative and every parameter gradient of the E+F(+stress) loss to 1e-4,
    on a 48-atom box (several images per pair) alone and batched with 192-atom frames."""
    model = make_model(architecture="painn", num_rbf=20)
    data = Batch.from_data_list([atoms_to_graph(water[k], model.cutoff) for k in frames])
    ref, ref_grads = _loss_and_grads(model, data, grid=False)
    fast, fast_grads = _loss_and_grads(model, data, grid=True)
    for key in ("energy", "forces", "stress"):
        _close(fast[key], ref[key], 1e-5)
    assert set(fast_grads) == set(ref_grads)
    for name, grad in ref_grads.items():
        assert float(grad.abs().max()) > 0, name
        _close(fast_grads[name], grad, 1e-4)


@pytest.mark.parametrize("symmetric", [True, False])
def test_directional_sum_derivatives_to_second_order(symmetric):
    """The closed-form first and second levels equal autograd of the plain sum, the derivative of the
    weights' gradient (the plain fallback) included; random float64 inputs, edges with repeated atoms."""
    gen = torch.Generator().manual_seed(0)
    num, edges, f = 7, 40, 5
    grid = FilterGrid(3.0, spacing=0.01, compile=False)
    src, dst = torch.randint(0, num, (edges,), generator=gen), torch.randint(0, num, (edges,), generator=gen)
    d = (0.5 + 2.4 * torch.rand(edges, generator=gen, dtype=torch.float64)).requires_grad_()
    n = torch.nn.functional.normalize(torch.randn(edges, 3, generator=gen, dtype=torch.float64), dim=1)
    n.requires_grad_()
    x = torch.randn(num, f, generator=gen, dtype=torch.float64, requires_grad=True)
    cells = torch.randn(grid.points - 1, 4, f, generator=gen, dtype=torch.float64, requires_grad=True)
    g = torch.randn(num, 3, f, generator=gen, dtype=torch.float64, requires_grad=True)
    inputs = (x, d, n, cells, g)

    def levels(sum_fn):  # noqa: ANN001, ANN202
        out = sum_fn()
        first = torch.autograd.grad(out, (x, d, n, cells), g, create_graph=True)
        # a second level that reaches every input, the weights' gradient included
        scalar = sum((t * torch.linspace(-1, 1, t.numel(), dtype=t.dtype).reshape(t.shape)).sum() for t in first)
        return first, torch.autograd.grad(scalar, inputs)

    fast = levels(lambda: directional_sum(x, src, dst, d, n, cells, grid, symmetric))
    plain = levels(lambda: plain_directional_sum(x, src, dst, grid(d, cells), n, symmetric))
    for a, b in zip([*fast[0], *fast[1]], [*plain[0], *plain[1]]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
