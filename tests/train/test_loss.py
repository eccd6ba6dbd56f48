"""The loss: squares by default, Huber (``--huber-delta``) for training, MSE terms reported either way."""
from __future__ import annotations

import pytest
import torch
from torch_geometric.data import Batch

from pbcgnn.config import Config, DataConfig, ModelConfig, TrainConfig
from pbcgnn.graph import atoms_to_graph
from pbcgnn.io import read_frames
from pbcgnn.model import SchNet, compute_properties
from pbcgnn.train import epoch as epoch_mod
from pbcgnn.train.loss import energy_force_loss, penalty
from pbcgnn.train.run import fit


def test_penalty_is_the_square_below_delta_and_linear_beyond():
    x = torch.tensor([-0.3, -0.1, 0.0, 0.05, 0.1, 0.25], dtype=torch.float64, requires_grad=True)
    huber = penalty(x, 0.1)
    expected = torch.where(x.abs() <= 0.1, x**2, 2 * 0.1 * x.abs() - 0.1**2)
    torch.testing.assert_close(huber, expected, rtol=1e-14, atol=0)
    torch.testing.assert_close(penalty(x), x**2, rtol=0, atol=0)
    (slope,) = torch.autograd.grad(huber.sum(), x)
    torch.testing.assert_close(slope, 2 * x.clamp(-0.1, 0.1), rtol=1e-14, atol=0)  # continuous at delta


@pytest.fixture(scope="module")
def prediction(bundled_n2p2):
    batch = Batch.from_data_list([atoms_to_graph(a, 4.5) for a in read_frames(bundled_n2p2)[:3]])
    torch.manual_seed(0)
    model = SchNet(hidden_channels=16, num_filters=16, num_interactions=2, num_rbf=12, cutoff=4.5).double()
    with torch.no_grad():  # the readout starts at zero: perturb so forces are non-zero
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return compute_properties(model, batch, forces=True, training=True), batch


def test_huber_loss_by_hand_and_its_terms_stay_mse(prediction):
    pred, batch = prediction
    delta = 0.05
    mse_loss, mse_terms = energy_force_loss(pred, batch, 10.0, 1.0)
    loss, terms = energy_force_loss(pred, batch, 10.0, 1.0, huber_delta=delta)
    de = (pred["energy"] - batch.energy) / batch.natoms
    df = (pred["forces"] - batch.forces.double()).flatten()
    assert (df.abs() > delta).any() and (df.abs() < delta).any()  # both branches are exercised
    by_hand = 10.0 * penalty(de, delta).mean() + penalty(df, delta).mean()
    torch.testing.assert_close(loss, by_hand, rtol=1e-12, atol=0)
    assert float(loss) < float(mse_loss)  # large errors count linearly
    for key in ("energy", "force"):
        torch.testing.assert_close(terms[key], mse_terms[key], rtol=0, atol=0)
    far, _ = energy_force_loss(pred, batch, 10.0, 1.0, huber_delta=1e6)  # every error below delta
    torch.testing.assert_close(far, mse_loss, rtol=1e-12, atol=0)


def test_training_uses_the_configured_huber_delta(bundled_n2p2, tmp_path, monkeypatch):
    real, seen = epoch_mod.energy_force_loss, []

    def spy(pred, batch, ew, fw, denominators=None, huber_delta=None):
        seen.append(huber_delta)
        return real(pred, batch, ew, fw, denominators, huber_delta)

    monkeypatch.setattr(epoch_mod, "energy_force_loss", spy)
    config = Config(data=DataConfig(paths=(str(bundled_n2p2),), val_fraction=0.25, split_seed=1),
                    model=ModelConfig(hidden_channels=16, num_filters=16, num_interactions=1, num_rbf=8, cutoff=4.0),
                    train=TrainConfig(epochs=1, batch_size=4, huber_delta=0.02, device="cpu"))
    result = fit(config, tmp_path, progress=False)
    assert seen and set(seen) == {0.02}
    assert torch.isfinite(torch.tensor(result.history[-1]["train_loss"]))
