"""`tabulate` for every model: PaiNN from cached grid cells, committees member by member (float64)."""
from __future__ import annotations

import pytest
import torch
from torch_geometric.data import Batch

from pbcgnn.graph import atoms_to_graph
from pbcgnn.model import Committee, PaiNN, SchNet, compute_properties
from pbcgnn.model.tabulate import TabulatedPaiNN, TabulatedSchNet, tabulate

from .conftest import random_model


def _properties(model, data) -> dict[str, torch.Tensor]:
    return compute_properties(model, data, forces=True, stress=True)


def _close(fast: torch.Tensor, ref: torch.Tensor, rtol: float) -> None:
    gap, scale = float((fast - ref).abs().max()), float(ref.abs().max())
    assert scale > 0 and gap <= rtol * scale, (gap, scale)


@pytest.mark.parametrize("trained", [False, True], ids=["random", "trained"])
def test_tabulated_painn_equals_the_exact_model(water, trained_painn, trained):
    """A batch of a 48-atom box (several images per pair) and a 192-atom frame: the learned energy
    (E - sum E0), forces and stress to 1e-6 relative; the weights and the exact model are untouched."""
    model = trained_painn if trained else random_model(num_rbf=20, architecture="painn").eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fast = tabulate(model)
    assert type(fast) is TabulatedPaiNN and not fast.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    data = Batch.from_data_list([atoms_to_graph(water[k], model.cutoff) for k in (2, 3)])
    ref, out = _properties(model, data), _properties(fast, data)
    e0 = torch.zeros_like(ref["energy"]).index_add_(0, data.batch, model.reference.e0[data.z].to(torch.float64))
    _close(out["energy"] - e0, ref["energy"] - e0, 1e-6)
    _close(out["forces"], ref["forces"], 1e-6)
    _close(out["stress"], ref["stress"], 1e-6)
    assert float((out["forces"] - ref["forces"]).abs().max()) > 0  # really another path


def test_tabulated_painn_keeps_float32_and_the_cells_are_not_weights(water):
    model = random_model(num_rbf=20, architecture="painn").float().eval()
    fast = tabulate(model)
    assert fast.cells.dtype == torch.float32 and not fast.cells.requires_grad
    assert "cells" not in dict(fast.named_parameters())
    data = atoms_to_graph(water[2], model.cutoff)
    _close(_properties(fast, data)["forces"], _properties(model, data)["forces"], 1e-5)


def test_committee_is_tabulated_member_by_member(water):
    members = [random_model(seed=s, num_rbf=20, architecture=a).eval()
               for s, a in ((0, "painn"), (1, "painn"), (2, "schnet"))]
    committee = Committee(members).eval()
    fast = tabulate(committee)
    assert [type(m) for m in fast.members] == [TabulatedPaiNN, TabulatedPaiNN, TabulatedSchNet]
    data = atoms_to_graph(water[2], committee.cutoff)
    ref, out = committee.committee_properties(data), fast.committee_properties(data)
    for key in ("forces", "forces_std", "energy_std"):
        _close(out[key], ref[key], 1e-6)


def test_tabulate_refuses_other_modules():
    with pytest.raises(ValueError, match="expected one of .*PaiNN.*found Linear"):
        tabulate(torch.nn.Linear(2, 2))
    assert {PaiNN, SchNet} <= set(type(m) for m in (random_model(architecture="painn"), random_model()))
