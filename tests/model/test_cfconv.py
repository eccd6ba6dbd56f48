"""CFConv and its aggregations: every implementation of the sum gives the same layer (float64)."""
from __future__ import annotations

import pytest
import torch

import pbcgnn.model.aggregate.chunked as chunked
from pbcgnn.model import CFConv
from pbcgnn.model.aggregate import (
    AutogradSum,
    ChunkedSum,
    GridSum,
    NetworkFilter,
    TableFilter,
    TableSum,
    select,
)
from pbcgnn.model.tabulate import tabulate


@pytest.fixture(scope="module")
def layer(make_model):
    """A one-interaction float64 model: its CFConv, and the table of that CFConv's filter."""
    model = make_model(seed=3, hidden=16, interactions=1, num_rbf=20)
    table = tabulate(model, compile=False).table
    return model, model.interactions[0].conv, table


@pytest.fixture(scope="module")
def graph():
    """14 atoms in a 6 A cube, every pair within the 6 A cutoff: both edges of each pair (full
    list) and one edge per pair (for ``symmetric=True``)."""
    gen = torch.Generator().manual_seed(5)
    pos = 6.0 * torch.rand(14, 3, generator=gen, dtype=torch.float64)
    j, i = torch.meshgrid(torch.arange(14), torch.arange(14), indexing="ij")
    full = torch.stack([j.flatten(), i.flatten()])
    d = torch.linalg.vector_norm(pos[full[0]] - pos[full[1]], dim=-1)
    full = full[:, (full[0] != full[1]) & (d < 6.0) & (d > 0.5)]
    half = full[:, full[0] < full[1]]
    x0 = torch.randn(14, 16, generator=gen, dtype=torch.float64)
    c = torch.randn(14, 16, generator=gen, dtype=torch.float64)
    return pos, full, half, x0, c


def evaluate(conv, aggregation, graph, symmetric: bool) -> dict[str, torch.Tensor]:
    """Energy ``sum(c * conv(x))``, forces, and the gradient of a force loss with respect to each
    weight (the mixed second derivative training needs); ``x`` depends on the positions too."""
    pos, full, half, x0, c = graph
    edge_index = half if symmetric else full
    pos = pos.detach().requires_grad_(True)
    d = torch.linalg.vector_norm(pos[edge_index[0]] - pos[edge_index[1]], dim=-1)  # [E]
    x = x0 * torch.cos(pos.sum(dim=1, keepdim=True))  # [N, 16], as after earlier interactions
    out = conv(x, edge_index, aggregation.edge_attr(d), symmetric, aggregation)
    energy = (c * out).sum()
    (grad,) = torch.autograd.grad(energy, pos, create_graph=True)
    names = ["lin1.weight", "lin2.weight", "filter1.weight", "filter1.bias", "filter2.weight", "filter2.bias"]
    params = dict(conv.named_parameters())
    mixed = torch.autograd.grad(grad.square().sum(), [params[n] for n in names], allow_unused=True)
    result = {"energy": energy.detach(), "forces": -grad.detach()}
    result.update({f"d2/{n}": g for n, g in zip(names, mixed) if g is not None})
    return result


def assert_same(a: dict, b: dict, rtol: float) -> None:
    assert a.keys() == b.keys()
    for key in a:
        scale = float(b[key].abs().max())
        assert float((a[key] - b[key]).abs().max()) <= rtol * scale, key


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("keep", [True, False])
def test_chunked_equals_autograd(layer, graph, symmetric, keep, monkeypatch):
    model, conv, _ = layer
    monkeypatch.setattr(chunked, "EDGE_CHUNK", 16)  # many chunks
    if not keep:
        monkeypatch.setattr(chunked, "KEEP_GRAPH_BYTES", 0)  # filters recomputed in backward
    network = NetworkFilter(model.radial)
    ref = evaluate(conv, AutogradSum(network), graph, symmetric)
    assert len(ref) == 8
    assert_same(evaluate(conv, ChunkedSum(network), graph, symmetric), ref, 1e-12)


@pytest.mark.parametrize("symmetric", [False, True])
def test_table_equals_autograd_through_the_table(layer, graph, symmetric, monkeypatch):
    model, conv, table = layer
    monkeypatch.setattr(chunked, "EDGE_CHUNK", 16)  # many chunks, the last one padded
    tables = TableFilter(table, [conv])
    ref = evaluate(conv, AutogradSum(tables), graph, symmetric)
    assert len(ref) == 4  # no filter weights: the table replaces them
    assert_same(evaluate(conv, TableSum(tables), graph, symmetric), ref, 1e-12)
    exact = evaluate(conv, AutogradSum(NetworkFilter(model.radial)), graph, symmetric)
    assert_same(ref, {k: exact[k] for k in ref}, 1e-6)  # the table's interpolation error


def test_symmetric_list_equals_full_list(layer, graph):
    model, conv, _ = layer
    plain = AutogradSum(NetworkFilter(model.radial))
    assert_same(evaluate(conv, plain, graph, True), evaluate(conv, plain, graph, False), 1e-12)


def test_default_aggregation_is_plain_autograd_on_the_basis(layer, graph):
    model, conv, _ = layer
    pos, full, _, x0, _ = graph
    d = torch.linalg.vector_norm(pos[full[0]] - pos[full[1]], dim=-1)
    out = conv(x0, full, model.radial(d))
    assert torch.equal(out, conv(x0, full, (model.rbf(d), model.envelope(d)), False, AutogradSum(NetworkFilter())))
    with pytest.raises(ValueError, match="radial"):
        NetworkFilter().inputs(d)


def test_select_is_the_one_choice(layer):
    model, conv, table = layer
    network, tables = NetworkFilter(model.radial), TableFilter(table, [conv])
    assert type(select(network, training=True)) is AutogradSum  # no cutoff: no grid
    assert type(select(NetworkFilter(model.radial, model.cutoff), training=True)) is GridSum
    assert type(select(network, training=False)) is ChunkedSum
    assert type(select(tables, training=True)) is AutogradSum
    assert type(select(tables, training=False)) is TableSum
    assert type(model.train().aggregation()) is GridSum and type(model.eval().aggregation()) is ChunkedSum
    with pytest.raises(TypeError, match="TableFilter"):
        TableSum(network)
    with pytest.raises(ValueError, match="one table per layer"):
        TableFilter(table, [conv, conv])


def test_cfconv_aggregates_at_centre_and_repr():
    conv = CFConv(4, 5, num_filters=6, num_rbf=3).double()
    x = torch.randn(3, 4, dtype=torch.float64)
    edge_index = torch.tensor([[0], [2]])  # j = 0 -> centre i = 2
    rbf = torch.rand(1, 3, dtype=torch.float64)
    out = conv(x, edge_index, (rbf, torch.ones(1, dtype=torch.float64)))
    assert out.shape == (3, 5)
    # Nodes without incoming edges get only the bias of lin2.
    torch.testing.assert_close(out[:2], conv.lin2.bias.expand(2, 5))
    assert not torch.allclose(out[2], conv.lin2.bias)
    zero = conv(x, edge_index, (rbf, torch.zeros(1, dtype=torch.float64)))  # edge at the cutoff
    torch.testing.assert_close(zero, conv.lin2.bias.expand(3, 5))
    assert repr(conv) == "CFConv(4, 5, num_filters=6, num_rbf=3)"
