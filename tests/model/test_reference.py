"""Reference energies: the E0 fit with its rank check, the scale estimate, float64 buffers."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from pbcgnn.graph import atoms_to_graph
from pbcgnn.model import AtomicReference, SchNet, estimate_scale, fit_reference_energies

REFERENCE_LOGGER = "pbcgnn.model.reference"


def test_fit_on_pure_water_is_rank_deficient_but_exact_per_h2o(water_frames, caplog):
    numbers = [a.numbers for a in water_frames]
    energies = np.array([a.get_potential_energy() for a in water_frames])
    with caplog.at_level(logging.WARNING, logger=REFERENCE_LOGGER):
        e0, info = fit_reference_energies(numbers, energies)
    assert info["rank"] == 1 and not info["full_rank"] and info["elements"] == [1, 8]
    assert any("rank 1 < 2" in r.getMessage() for r in caplog.records)
    n_h2o = np.array([len(a) // 3 for a in water_frames])
    per_h2o = 2 * e0[1] + e0[8]  # the only combination the data determine
    assert abs(per_h2o - np.mean(energies / n_h2o)) < 0.1  # |E| per H2O is ~2083 eV
    residual = energies - np.array([sum(e0[int(z)] for z in n) for n in numbers])
    # Left for the network: a few eV per frame (frames differ in density), ~0.1 eV per H2O.
    assert np.abs(residual / n_h2o).max() < 0.25
    assert info["rmse_per_atom"] < 0.05
    # Minimum norm: the solution is parallel to the composition (2, 1), no null-space part.
    assert e0[1] == pytest.approx(2 * e0[8], rel=1e-12)


def test_fit_full_rank_recovers_exact_values(caplog):
    rng = np.random.default_rng(0)
    truth = {1: -13.7, 6: -1029.5, 8: -2041.2}
    numbers = [rng.choice([1, 6, 8], size=rng.integers(3, 30)) for _ in range(12)]
    energies = np.array([sum(truth[int(z)] for z in n) for n in numbers])
    with caplog.at_level(logging.WARNING, logger=REFERENCE_LOGGER):
        e0, info = fit_reference_energies(numbers, energies)
    assert info["rank"] == 3 and info["full_rank"]
    assert not caplog.records
    for z, value in truth.items():
        assert e0[z] == pytest.approx(value, abs=1e-9)


def test_fit_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="one energy per frame"):
        fit_reference_energies([np.array([1, 1, 8])], np.array([1.0, 2.0]))


def test_estimate_scale():
    forces = [np.full((3, 3), 2.0), None, np.full((2, 3), -2.0)]
    assert estimate_scale(forces, np.zeros(3)) == pytest.approx(2.0)
    assert estimate_scale([None], np.array([1.0, 3.0])) == pytest.approx(1.0)  # std of [1, 3]
    assert estimate_scale([np.zeros((4, 3))], np.zeros(2)) == 1.0  # never 0
    assert estimate_scale([], np.array([0.5])) == 1.0


def test_reference_stays_float64_under_casts():
    ref = AtomicReference()
    ref.set_values({1: -13.605693122994, 8: -2041.123456789012}, scale=0.123456789012345)
    expected = ref.e0.clone(), ref.scale.clone()
    for cast in (torch.nn.Module.float, torch.nn.Module.half, lambda m: m.to(torch.bfloat16)):
        cast(ref)
        assert ref.e0.dtype == torch.float64 and ref.scale.dtype == torch.float64
        assert torch.equal(ref.e0, expected[0]) and torch.equal(ref.scale, expected[1])  # no lossy round trip
    assert ref.e0.shape == (119,) and ref.scale.shape == ()


def test_float32_model_gives_float64_energy(model, box48):
    model.float()
    assert model.reference.e0.dtype == torch.float64
    assert model.lin1.weight.dtype == torch.float32
    data = atoms_to_graph(box48, model.cutoff)
    energy = model.forward_data(data)
    assert energy.dtype == torch.float64 and energy.shape == (1,)
    # The float32 network part is ~1e-7 relative; the -7 keV reference is added exactly.
    energy64 = model.double().forward_data(data)
    assert abs(float(energy.detach() - energy64.detach())) < 1e-3


def test_reference_in_state_dict():
    model = SchNet(hidden_channels=8, num_filters=8, num_interactions=1, num_rbf=4, cutoff=4.0)
    model.reference.set_values({1: -13.6, 8: -430.0}, 0.7)
    state = model.float().state_dict()
    assert state["reference.e0"].dtype == torch.float64
    assert float(state["reference.e0"][8]) == -430.0 and float(state["reference.scale"]) == 0.7
