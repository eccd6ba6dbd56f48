"""A committee's calibration: applied to its spread, kept by tabulation, stored as plain values."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch_geometric.data import Batch

from pbcgnn.errors import InputError
from pbcgnn.graph import atoms_to_graph
from pbcgnn.model import Committee, SchNet, committee_properties
from pbcgnn.model.calibration import Calibration, PowerLaw, scale_members, spread_ratio
from pbcgnn.model.tabulate import tabulate

CAL = Calibration(energy=PowerLaw(3.0, 0.8), forces=PowerLaw(0.5, 0.7), fitted_on="test frames", n_frames=7,
                  details={"forces": {"form": "power"}})


def members(n: int = 3) -> list[SchNet]:
    torch.manual_seed(1)
    out = [SchNet(16, 16, 1, 8, cutoff=3.5).double() for _ in range(n)]
    for m in out:
        torch.nn.init.normal_(m.lin2.weight, std=0.3)
    return out


@pytest.fixture(scope="module")
def batch(water_frames):
    """Two frames of different sizes (48 and 96 atoms), so the energy law's atom count matters."""
    return Batch.from_data_list([atoms_to_graph(water_frames[k], 3.5) for k in (0, 10)])


def test_committee_properties_apply_the_laws_and_keep_the_raw_spread(batch):
    raw = committee_properties(Committee(members()), batch)
    out = committee_properties(Committee(members(), CAL), batch)
    natoms = torch.tensor([48.0, 96.0], dtype=torch.float64)
    torch.testing.assert_close(out["energy_std_raw"], raw["energy_std"], rtol=1e-12, atol=0)
    torch.testing.assert_close(out["energy_std"], natoms * 3.0 * (raw["energy_std"] / natoms) ** 0.8, rtol=1e-12, atol=0)
    torch.testing.assert_close(out["forces_std"], 0.5 * raw["forces_std"] ** 0.7, rtol=1e-12, atol=0)
    torch.testing.assert_close(out["forces_std_raw"], raw["forces_std"], rtol=0, atol=0)
    torch.testing.assert_close(out["energy"], raw["energy"], rtol=0, atol=0)  # the mean is untouched
    # the identity: calibrated equals raw
    torch.testing.assert_close(raw["energy_std"], raw["energy_std_raw"], rtol=0, atol=0)


def test_a_single_frame_uses_its_own_atom_count(water_frames):
    data = atoms_to_graph(water_frames[10], 3.5)  # 96 atoms, no batch vector
    out = committee_properties(Committee(members(), CAL), data)
    expected = 96 * 3.0 * (out["energy_std_raw"] / 96) ** 0.8
    torch.testing.assert_close(out["energy_std"], expected, rtol=1e-12, atol=0)


def test_tabulated_committee_keeps_its_calibration():
    fast = tabulate(Committee(members(2), CAL))
    assert fast.calibration == CAL and "calibrated" in repr(fast)


def test_members_scaled_about_their_mean_have_the_calibrated_std():
    energies = torch.tensor([[1.0, 5.0], [2.0, 5.0], [4.0, 5.0]], dtype=torch.float64)  # [M=3, B=2]
    raw = energies.std(0)
    ratio = spread_ratio(3.0 * raw, raw)
    np.testing.assert_allclose(ratio.numpy(), [3.0, 0.0])  # members that agree stay together
    scaled = scale_members(energies, ratio)
    torch.testing.assert_close(scaled.mean(0), energies.mean(0))
    torch.testing.assert_close(scaled.std(0), 3.0 * raw)


def test_round_trip_as_plain_values_and_the_identity_for_none():
    raw = CAL.to_dict()
    assert all(isinstance(v, (float, int, str, dict)) for v in raw.values())
    assert Calibration.from_dict(raw) == CAL
    assert Calibration.from_dict(None).is_identity and Calibration.from_dict(None) == Calibration()
    assert "none" in Calibration().describe() and "7 frames of test frames" in CAL.describe()


@pytest.mark.parametrize("raw, words", [
    ([1, 2], "expected the calibration as a table, found list"),
    ({"energy": {"a": -1.0, "b": 1.0}}, "expected calibration.energy with positive finite a and b"),
    ({"forces": {"a": 1.0, "b": float("nan")}}, "expected calibration.forces with positive finite a and b"),
    ({"forces": {"a": 2.0}}, "expected calibration.forces with positive finite a and b"),
])
def test_a_bad_stored_calibration_is_refused(raw, words):
    with pytest.raises(InputError, match=words) as info:
        Calibration.from_dict(raw, path="c.pt")
    assert str(info.value).startswith("c.pt: ")
