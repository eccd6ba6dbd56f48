"""The tabulated model (--tabulate, TableSum) agrees with the exact one on real water frames."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch_geometric.data import Batch

import pbcgnn.model.aggregate.grid as grid_module
from pbcgnn.graph import atoms_to_graph
from pbcgnn.model import SchNet, compute_properties
from pbcgnn.model.tabulate import TabulatedSchNet, tabulate

TOLERANCE = 1e-5  # the required bound; the default grid reaches ~1e-8 in float64


def errors(exact: dict, fast: dict, e_ref: float) -> dict[str, float]:
    """Relative differences: energy against the network part E - sum E0 (not the ~-30 keV total),
    forces and stress as max |difference| / max |exact|."""
    e = abs(float(fast["energy"].sum() - exact["energy"].sum())) / abs(float(exact["energy"].sum()) - e_ref)
    out = {"energy": e}
    for key in ("forces", "stress"):
        if key in exact:
            out[key] = float((fast[key] - exact[key]).abs().max() / exact[key].abs().max())
    return out


@pytest.mark.parametrize("compile,fuse", [(False, True), (True, True), (True, False)])
def test_tabulated_matches_exact_on_water(water, compile, fuse, make_model, monkeypatch):
    """Eager kernels, compiled kernels with the scatter inside (GPU, one CPU thread) and outside."""
    monkeypatch.setattr(grid_module, "fuse_scatter", lambda x: fuse)
    model = make_model(hidden=64).eval()
    fast = tabulate(model, compile=compile)
    assert isinstance(fast, TabulatedSchNet) and not fast.training
    for atoms in water:
        data = atoms_to_graph(atoms, model.cutoff)
        exact = compute_properties(model, data, stress=True)
        tab = compute_properties(fast, data, stress=True)
        e_ref = float(model.reference.e0[data.z].sum())
        assert abs(float(exact["energy"].sum()) - e_ref) > 1.0  # a non-trivial network energy
        err = errors(exact, tab, e_ref)
        assert max(err.values()) < TOLERANCE, (len(atoms), err)


def test_coarse_grid_error_is_fourth_order(water, make_model):
    """Halving h divides the energy error by ~16 (h^4): the grid, not rounding, sets the error."""
    model = make_model().eval()
    data = atoms_to_graph(water[0], model.cutoff)
    exact = compute_properties(model, data)
    e_ref = float(model.reference.e0[data.z].sum())
    coarse = [errors(exact, compute_properties(tabulate(model, n, compile=False), data), e_ref)["energy"]
              for n in (151, 301)]
    assert coarse[0] > 1e-7
    assert 8 < coarse[0] / coarse[1] < 32


def test_float32_table_matches_float32_model(water, make_model):
    model = make_model(hidden=64)
    model32 = SchNet(**model.hparams)
    model32.load_state_dict(model.state_dict())
    model32.eval()
    fast = tabulate(model32, compile=False)
    assert fast.table.cells.dtype == torch.float32 and fast.reference.e0.dtype == torch.float64
    data = atoms_to_graph(water[0], model.cutoff)
    exact64 = compute_properties(model.eval(), data)
    exact, tab = compute_properties(model32, data), compute_properties(fast, data)
    e_ref = float(model.reference.e0[data.z].sum())
    rounding = errors(exact64, {k: v.double() for k, v in exact.items()}, e_ref)
    err = errors(exact, tab, e_ref)
    # the table adds no more than the float32 rounding the exact model already has
    assert err["energy"] < 3 * rounding["energy"] + 1e-6 and err["forces"] < 3 * rounding["forces"] + 1e-6


def test_batches_training_mode_and_second_derivatives(water, make_model):
    model = make_model().eval()
    fast = tabulate(model, compile=False)
    batch = Batch.from_data_list([atoms_to_graph(a, model.cutoff) for a in water[2:4]])
    ref = compute_properties(fast, batch, stress=True)
    for a, g in zip(ref["energy"], [atoms_to_graph(a, model.cutoff) for a in water[2:4]]):
        torch.testing.assert_close(a, compute_properties(fast, g)["energy"][0], rtol=1e-12, atol=0)
    fast.train()  # plain autograd through the table: same numbers
    train = compute_properties(fast, batch, stress=True, training=True)
    for key in ("energy", "forces", "stress"):
        torch.testing.assert_close(train[key], ref[key], rtol=1e-9, atol=1e-10)
    grads = []  # a force loss through the chunked eval path (double backward) equals plain autograd
    params = [p for name, p in fast.named_parameters() if "filter" not in name]  # the table replaces filters
    for mode in ("eval", "train"):
        fast.train(mode == "train")
        out = compute_properties(fast, batch, training=True)
        grads.append(torch.autograd.grad(out["forces"].square().sum(), params, allow_unused=True))
    assert sum(g is not None for g in grads[0]) > 10
    for a, b in zip(*grads):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


def test_distances_below_the_table_are_refused(water, make_model):
    model = make_model().eval()
    fast = tabulate(model, r_min=1.0, compile=False)  # O-H bonds are ~0.97 A
    with pytest.raises(ValueError, match="r_min"):
        compute_properties(fast, atoms_to_graph(water[0], model.cutoff))
    with pytest.raises(ValueError, match="n_points"):
        tabulate(model, n_points=1)
    with pytest.raises(ValueError, match="SchNet"):
        tabulate(fast)


def test_table_is_zero_beyond_the_cutoff(make_model):
    model = make_model().eval()
    fast = tabulate(model, n_points=601, compile=False)
    d = torch.tensor([model.cutoff - 1e-9, model.cutoff], dtype=torch.float64)
    w = fast.table(0, d)
    assert np.abs(w.detach().numpy()).max() < 1e-12
