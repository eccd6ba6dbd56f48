"""The chunked eval path (ChunkedSum) computes the same function as plain autograd over every edge."""
from __future__ import annotations

import pytest
import torch

import pbcgnn.model.aggregate.chunked as chunked
from pbcgnn.graph import atoms_to_graph
from pbcgnn.model import compute_properties


def close(a: dict, b: dict, rtol: float = 1e-10) -> None:
    for key in a:
        scale = float(b[key].abs().max())
        assert float((a[key] - b[key]).abs().max()) <= rtol * scale, key


@pytest.fixture(params=["keep", "recompute"])
def small_chunks(monkeypatch, request):
    """Chunks of 256 edges, so every water frame spans many chunks; filter graphs kept from the
    forward pass (small systems) or recomputed in the backward pass (large ones)."""
    monkeypatch.setattr(chunked, "EDGE_CHUNK", 256)
    if request.param == "recompute":
        monkeypatch.setattr(chunked, "KEEP_GRAPH_BYTES", 0)


def test_eval_chunked_path_equals_train_autograd_path(water, make_model, small_chunks, plain_training):
    model = make_model()
    for atoms in water[1:]:
        data = atoms_to_graph(atoms, model.cutoff)
        model.train()
        ref = compute_properties(model, data, stress=True)
        model.eval()
        close(compute_properties(model, data, stress=True), ref)


def test_gradients_of_parameters_in_eval_mode(water, make_model, small_chunks, plain_training):
    """Energy and force losses reach every weight in eval mode too (fine-tuning, committees)."""
    model = make_model()
    data = atoms_to_graph(water[2], model.cutoff)
    grads = {}
    for mode in ("train", "eval"):
        model.train(mode == "train")
        out = compute_properties(model, data, training=True)
        loss = out["energy"].sum() + out["forces"].square().sum()
        grads[mode] = torch.autograd.grad(loss, list(model.parameters()), allow_unused=True)
    for name, a, b in zip(dict(model.named_parameters()), grads["eval"], grads["train"]):
        assert (a is None) == (b is None), name
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9, msg=name)
