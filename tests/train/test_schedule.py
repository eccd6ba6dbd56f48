"""The cosine learning-rate schedule: its shape, its budget, and bit-exact resume through it."""
from __future__ import annotations

import math

import pytest
import torch

from pbcgnn.errors import InputError
from pbcgnn.train import loop as loop_mod
from pbcgnn.train.checkpoint import read_checkpoint
from pbcgnn.train.config import Config, DataConfig, ModelConfig, TrainConfig
from pbcgnn.train.loop import fit
from pbcgnn.train.schedule import budget_progress, cosine_lr

TINY = ModelConfig(hidden_channels=16, num_filters=16, num_interactions=1, num_rbf=8, cutoff=4.0, dtype="float64")


def config(path, epochs: int) -> Config:
    return Config(data=DataConfig(paths=(str(path),), val_fraction=0.25, split_seed=1), model=TINY,
                  train=TrainConfig(epochs=epochs, batch_size=4, lr=4e-3, min_lr=1e-5, lr_schedule="cosine",
                                    ema_decay=0.9, seed=3, device="cpu"))


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


def test_fit_follows_the_cosine_step_by_step(bundled_n2p2, tmp_path, monkeypatch):
    seen: list[float] = []
    step = torch.optim.AdamW.step

    def spy(self, *args, **kwargs):
        seen.append(self.param_groups[0]["lr"])
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", spy)
    result = fit(config(bundled_n2p2, epochs=3), tmp_path, progress=False)
    n = len(seen) // 3  # 12 training frames, batches of 4
    assert len(seen) == 9 and n == 3
    expected = [cosine_lr(4e-3, 1e-5, (e + s / n) / 3) for e in range(3) for s in range(n)]
    assert seen == pytest.approx(expected, rel=1e-12)
    assert seen[0] == pytest.approx(4e-3) and seen[-1] < 0.1 * 4e-3
    assert [r["lr"] for r in result.history] == pytest.approx(expected[n - 1::n], rel=1e-12)


def test_interrupted_cosine_run_resumes_bit_exactly(bundled_n2p2, tmp_path, monkeypatch):
    whole = fit(config(bundled_n2p2, epochs=4), tmp_path / "whole", progress=False)

    train_epoch = loop_mod._train_epoch

    def crash_in_epoch_3(*args, **kwargs):
        if args[9] == 2:  # the 0-based epoch
            raise KeyboardInterrupt
        return train_epoch(*args, **kwargs)

    monkeypatch.setattr(loop_mod, "_train_epoch", crash_in_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        fit(config(bundled_n2p2, epochs=4), tmp_path / "split", progress=False)
    monkeypatch.setattr(loop_mod, "_train_epoch", train_epoch)
    assert read_checkpoint(tmp_path / "split" / "last.pt")["epoch"] == 2
    resumed = fit(config(bundled_n2p2, epochs=4), tmp_path / "split", resume=True, progress=False)
    a, b = read_checkpoint(whole.last), read_checkpoint(resumed.last)
    assert a["epoch"] == b["epoch"] == 4
    for key in a["train_state"]["model"]:
        assert torch.equal(a["train_state"]["model"][key], b["train_state"]["model"][key]), key
    assert [r["lr"] for r in a["train_state"]["loop"]["history"]] == \
        [r["lr"] for r in b["train_state"]["loop"]["history"]]
    assert b["train_state"]["loop"]["elapsed_s"] > 0 and not math.isnan(b["train_state"]["loop"]["elapsed_s"])
