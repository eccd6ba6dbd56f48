"""Learning-rate schedules (cosine, and plateau with a final anneal): their shape, their budget,
and bit-exact resume through them."""
from __future__ import annotations

import math

import pytest
import torch

from pbcgnn.checkpoint import read_checkpoint
from pbcgnn.config import Config, DataConfig, ModelConfig, TrainConfig
from pbcgnn.errors import InputError
from pbcgnn.train import epoch as epoch_mod
from pbcgnn.train import loop as loop_mod
from pbcgnn.train.run import fit
from pbcgnn.train.schedule import annealed_lr, budget_progress, cosine_lr, energy_weight

TINY = ModelConfig(hidden_channels=16, num_filters=16, num_interactions=1, num_rbf=8, cutoff=4.0, dtype="float64")


def config(path, epochs: int, **train) -> Config:
    options = {"lr_schedule": "cosine", **train}
    return Config(data=DataConfig(paths=(str(path),), val_fraction=0.25, split_seed=1), model=TINY,
                  train=TrainConfig(epochs=epochs, batch_size=4, lr=4e-3, min_lr=1e-5, ema_decay=0.9, seed=3,
                                    device="cpu", **options))


def spy_on_lr(monkeypatch) -> list[float]:
    """The learning rate at every optimiser step."""
    seen: list[float] = []
    step = torch.optim.AdamW.step

    def spy(self, *args, **kwargs):
        seen.append(self.param_groups[0]["lr"])
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", spy)
    return seen


def spy_on_energy_weight(monkeypatch) -> list[float]:
    """The loss's energy weight at every training step."""
    seen: list[float] = []
    loss = epoch_mod.energy_force_loss

    def spy(pred, batch, energy_weight, *args, **kwargs):
        seen.append(energy_weight)
        return loss(pred, batch, energy_weight, *args, **kwargs)

    monkeypatch.setattr(epoch_mod, "energy_force_loss", spy)
    return seen


def test_cosine_endpoints_and_clamp():
    assert cosine_lr(1e-3, 1e-5, 0.0) == pytest.approx(1e-3, rel=1e-15)
    assert cosine_lr(1e-3, 1e-5, 0.5) == pytest.approx(0.5 * (1e-3 + 1e-5), rel=1e-15)
    assert cosine_lr(1e-3, 1e-5, 1.0) == pytest.approx(1e-5, rel=1e-15)
    assert cosine_lr(1e-3, 1e-5, 3.0) == cosine_lr(1e-3, 1e-5, 1.0)
    lrs = [cosine_lr(1e-3, 0.0, p / 10) for p in range(11)]
    assert all(a > b for a, b in zip(lrs, lrs[1:]))


def test_progress_is_the_larger_of_epochs_and_minutes():
    by_epochs = TrainConfig(epochs=10)
    assert budget_progress(by_epochs, 2, 5, 10, elapsed_s=1e6, epoch_s=1e6) == pytest.approx(0.25)
    by_time = TrainConfig(epochs=1000, max_minutes=10.0)
    # 300 s at the epoch's start plus half of a 60 s epoch: 330 s of 600
    assert budget_progress(by_time, 4, 50, 100, elapsed_s=300.0, epoch_s=60.0) == pytest.approx(0.55)
    slow_epochs = TrainConfig(epochs=4, max_minutes=1000.0)
    assert budget_progress(slow_epochs, 3, 0, 10, elapsed_s=60.0, epoch_s=20.0) == pytest.approx(0.75)


def test_bad_schedule_options_are_input_errors():
    with pytest.raises(InputError, match="lr_schedule"):
        TrainConfig(lr_schedule="linear").validate()
    with pytest.raises(InputError, match="min_lr"):
        TrainConfig(lr=1e-4, min_lr=1e-3).validate()


def test_anneal_is_the_last_fraction_of_the_budget():
    assert annealed_lr(2e-3, 1e-5, 0.79, 0.2) is None
    assert annealed_lr(2e-3, 1e-5, 0.8, 0.2) == pytest.approx(2e-3, rel=1e-12)
    assert annealed_lr(2e-3, 1e-5, 0.9, 0.2) == pytest.approx(cosine_lr(2e-3, 1e-5, 0.5), rel=1e-12)
    assert annealed_lr(2e-3, 1e-5, 1.5, 0.2) == pytest.approx(1e-5, rel=1e-12)
    assert annealed_lr(2e-3, 1e-5, 1.0, 0.0) is None  # 0 switches it off
    assert annealed_lr(1e-6, 1e-5, 0.9, 0.2) == pytest.approx(1e-6)  # never raises a rate below the floor
    with pytest.raises(InputError, match="anneal"):
        TrainConfig(anneal=1.5).validate()


def test_plateau_run_ends_with_an_anneal_from_where_the_plateaus_left_it(bundled_n2p2, tmp_path, monkeypatch):
    seen = spy_on_lr(monkeypatch)
    # lr_patience 0: ReduceLROnPlateau halves the rate after any epoch that does not improve
    result = fit(config(bundled_n2p2, epochs=4, lr_schedule="plateau", anneal=0.5, lr_patience=0), tmp_path,
                 progress=False)
    n = 3  # 12 training frames, batches of 4
    assert len(seen) == 4 * n
    before, during = seen[:2 * n], seen[2 * n:]
    assert len(set(before[:n])) == 1 and all(lr in (4e-3, 2e-3, 1e-3) for lr in before)
    expected = [cosine_lr(before[-1], 1e-5, (e + s / n) / 2) for e in range(2) for s in range(n)]
    assert during == pytest.approx(expected, rel=1e-12)
    assert result.history[-1]["lr"] == pytest.approx(expected[-1], rel=1e-12) and expected[-1] < 0.1 * before[-1]
    assert read_checkpoint(result.last)["train_state"]["loop"]["anneal_from"] == before[-1]


def test_anneal_zero_leaves_the_rate_to_the_plateaus(bundled_n2p2, tmp_path, monkeypatch):
    seen = spy_on_lr(monkeypatch)
    fit(config(bundled_n2p2, epochs=3, lr_schedule="plateau", anneal=0.0, lr_patience=100), tmp_path,
        progress=False)
    assert seen == [4e-3] * 9


def test_fit_follows_the_cosine_step_by_step(bundled_n2p2, tmp_path, monkeypatch):
    seen = spy_on_lr(monkeypatch)
    result = fit(config(bundled_n2p2, epochs=3), tmp_path, progress=False)
    n = len(seen) // 3  # 12 training frames, batches of 4
    assert len(seen) == 9 and n == 3
    expected = [cosine_lr(4e-3, 1e-5, (e + s / n) / 3) for e in range(3) for s in range(n)]
    assert seen == pytest.approx(expected, rel=1e-12)
    assert seen[0] == pytest.approx(4e-3) and seen[-1] < 0.1 * 4e-3
    assert [r["lr"] for r in result.history] == pytest.approx(expected[n - 1::n], rel=1e-12)


@pytest.mark.parametrize("schedule", [{"lr_schedule": "cosine"},
                                      {"lr_schedule": "plateau", "anneal": 0.75, "lr_patience": 0}],
                         ids=["cosine", "plateau-anneal"])
@pytest.mark.usefixtures("one_thread")
def test_interrupted_run_resumes_bit_exactly(bundled_n2p2, tmp_path, monkeypatch, schedule):
    """Interrupted in epoch 3 of 4: for plateau-anneal, in the middle of the anneal (from epoch 2)."""
    whole = fit(config(bundled_n2p2, epochs=4, **schedule), tmp_path / "whole", progress=False)

    train_epoch = loop_mod.train_epoch

    def crash_in_epoch_3(*args, **kwargs):
        if kwargs["epoch"] == 2:  # the 0-based epoch
            raise KeyboardInterrupt
        return train_epoch(*args, **kwargs)

    monkeypatch.setattr(loop_mod, "train_epoch", crash_in_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        fit(config(bundled_n2p2, epochs=4, **schedule), tmp_path / "split", progress=False)
    monkeypatch.setattr(loop_mod, "train_epoch", train_epoch)
    assert read_checkpoint(tmp_path / "split" / "last.pt")["epoch"] == 2
    if "anneal" in schedule:
        assert "anneal_from" in read_checkpoint(tmp_path / "split" / "last.pt")["train_state"]["loop"]
    resumed = fit(config(bundled_n2p2, epochs=4, **schedule), tmp_path / "split", resume=True, progress=False)
    a, b = read_checkpoint(whole.last), read_checkpoint(resumed.last)
    assert a["epoch"] == b["epoch"] == 4
    for key in a["train_state"]["model"]:
        assert torch.equal(a["train_state"]["model"][key], b["train_state"]["model"][key]), key
    assert [r["lr"] for r in a["train_state"]["loop"]["history"]] == \
        [r["lr"] for r in b["train_state"]["loop"]["history"]]
    assert b["train_state"]["loop"]["elapsed_s"] > 0 and not math.isnan(b["train_state"]["loop"]["elapsed_s"])


def test_a_larger_budget_on_resume_returns_an_annealed_run_to_its_plateau_rate(bundled_n2p2, tmp_path,
                                                                               monkeypatch):
    fit(config(bundled_n2p2, epochs=2, lr_schedule="plateau", anneal=0.5, lr_patience=100), tmp_path,
        progress=False)
    loop = read_checkpoint(tmp_path / "last.pt")["train_state"]["loop"]
    assert loop["anneal_from"] == 4e-3 and loop["history"][-1]["lr"] < 0.3 * 4e-3
    seen = spy_on_lr(monkeypatch)
    fit(config(bundled_n2p2, epochs=8, lr_schedule="plateau", anneal=0.5, lr_patience=100), tmp_path,
        resume=True, progress=False)
    n = 3
    assert seen[:2 * n] == [4e-3] * (2 * n)  # epochs 3-4 of 8: before the new anneal
    assert seen[2 * n:] == pytest.approx([cosine_lr(4e-3, 1e-5, (e + s / n) / 4) for e in range(4) for s in range(n)],
                                         rel=1e-12)


def test_ema_decay_warms_up_then_equals_the_fixed_decay():
    """Weights moving one unit per step: a fixed decay of 0.99 trails them by ~40 steps after 50
    updates; the warmed-up average by (10 + n) / 9 at most, and from n = 890 on it is the fixed one."""
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    from pbcgnn.train.setup import warmed_up_ema

    def lag(multi_avg_fn, steps):
        model = torch.nn.Linear(1, 1, bias=False)
        ema = AveragedModel(model, multi_avg_fn=multi_avg_fn, use_buffers=True)
        for step in range(steps):
            with torch.no_grad():
                model.weight.fill_(float(step))
            ema.update_parameters(model)
        return float(model.weight - ema.module.weight)

    assert lag(get_ema_multi_avg_fn(0.99), 50) > 30
    assert lag(warmed_up_ema(0.99), 50) < (10 + 50) / 9
    fixed, warm = get_ema_multi_avg_fn(0.99), warmed_up_ema(0.99)
    a, b, p = [torch.zeros(3)], [torch.zeros(3)], [torch.ones(3)]
    fixed(a, p, torch.tensor(2000))
    warm(b, p, torch.tensor(2000))
    assert torch.allclose(a[0], b[0], rtol=1e-6)


def ramp(start: float, end: float, epochs: int, anneal: float, steps: int) -> list[float]:
    """The energy weight at every step of a run whose final phase is its last ``anneal`` fraction:
    from ``start`` to ``end`` by equal factors per unit of the half cosine, ``1 - cos(pi f)``."""
    weights = []
    for e in range(epochs):
        for k in range(steps):
            f = ((e + k / steps) / epochs - (1 - anneal)) / anneal
            weights.append(start if f < 0 else start * (end / start) ** ((1 - math.cos(math.pi * f)) / 2))
    return weights


def test_final_energy_weight_rises_over_the_last_phase_and_picks_best_from_it(bundled_n2p2, tmp_path,
                                                                              monkeypatch):
    """Over the last --anneal fraction the loss's energy weight rises to final_energy_weight (MACE's
    SWA stage) as the rate falls; validation losses from there on use the final weight, so
    best.pt is chosen within that phase."""
    weights = spy_on_energy_weight(monkeypatch)
    cfg = config(bundled_n2p2, 4, lr_schedule="plateau", anneal=0.5, energy_weight=10.0, final_energy_weight=1000.0)
    result = fit(cfg, tmp_path, progress=False)
    steps = len(weights) // 4
    assert weights[:2 * steps] == [10.0] * (2 * steps)  # epochs 3 and 4 train in the final phase
    assert weights[3 * steps] == pytest.approx(100.0, rel=1e-12)  # halfway: the geometric mean
    assert all(a < b for a, b in zip(weights[2 * steps:], weights[2 * steps + 1:]))
    assert weights == pytest.approx(ramp(10.0, 1000.0, 4, 0.5, steps), rel=1e-12)
    # validated with the weight at each epoch's end: epoch 2 ends where the final phase begins
    assert [h["energy_weight"] for h in result.history] == [10.0, 1000.0, 1000.0, 1000.0]
    assert read_checkpoint(result.last)["train_state"]["loop"]["final_phase"]
    assert read_checkpoint(result.best)["epoch"] >= 2  # best.pt from the final phase
    with pytest.raises(InputError, match="final_energy_weight"):
        config(bundled_n2p2, 4, anneal=0.0, final_energy_weight=1000.0).validate()


def test_final_energy_weight_ramp_ends_and_handles_zero():
    tc = TrainConfig(epochs=10, energy_weight=10.0, final_energy_weight=1000.0, anneal=0.2)
    assert energy_weight(tc, 0.79) == 10.0 and energy_weight(tc, 0.8) == pytest.approx(10.0, rel=1e-12)
    assert energy_weight(tc, 1.0) == pytest.approx(1000.0, rel=1e-12)
    assert energy_weight(tc, 2.0) == pytest.approx(1000.0, rel=1e-12)  # past the budget: the last weight
    zero = TrainConfig(epochs=10, energy_weight=0.0, final_energy_weight=100.0, anneal=0.2)
    assert energy_weight(zero, 0.9) == pytest.approx(50.0, rel=1e-12)  # linear in the cosine from 0
    assert energy_weight(TrainConfig(epochs=10, energy_weight=10.0), 0.95) == 10.0  # no final phase


def test_final_energy_weight_can_be_taken_up_on_resume_until_its_phase_began(bundled_n2p2, tmp_path, monkeypatch):
    """A long run may switch on its final energy phase in a later invocation, not once the phase began."""
    weights = spy_on_energy_weight(monkeypatch)
    plain = config(bundled_n2p2, 4, lr_schedule="plateau", anneal=0.5, energy_weight=10.0)
    fit(plain.replace(train={"epochs": 1}), tmp_path, progress=False)
    given = {"train.epochs", "train.final_energy_weight"}
    later = plain.replace(train={"final_energy_weight": 1000.0})
    result = fit(later, tmp_path, resume=True, given=given, progress=False)
    steps = len(weights) // 4
    assert weights == pytest.approx(ramp(10.0, 1000.0, 4, 0.5, steps), rel=1e-12)  # as uninterrupted
    assert [h["energy_weight"] for h in result.history] == [10.0, 1000.0, 1000.0, 1000.0]
    with pytest.raises(InputError, match=r"final_energy_weight = 100\.0 given, but this run was started with 1000\.0"):
        loop_mod.resumed_config(plain.replace(train={"final_energy_weight": 100.0}), tmp_path, given)
