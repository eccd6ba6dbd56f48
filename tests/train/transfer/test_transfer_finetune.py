"""Fine-tuning: E0 refit absorbs a change of level of theory, frozen weights stay, scale, resume."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pbcgnn.checkpoint import load_checkpoint, read_checkpoint
from pbcgnn.config import ModelConfig
from pbcgnn.dataset import FrameDataset
from pbcgnn.errors import InputError
from pbcgnn.evaluation import predict
from pbcgnn.train.reference import fit_reference
from pbcgnn.train.run import fit


def test_e0_refit_is_exactly_linear_in_the_shift(pretrained, water48_file, shifted_file, water48, helpers):
    """Refitting on energies shifted per element moves every prediction by exactly that shift."""
    plain, _ = load_checkpoint(pretrained)
    moved, _ = load_checkpoint(pretrained)
    fit_reference(plain, FrameDataset(water48_file, plain.cutoff))
    fit_reference(moved, FrameDataset(shifted_file, moved.cutoff))
    e_plain = predict(plain, FrameDataset(water48_file, plain.cutoff)).energy
    e_moved = predict(moved, FrameDataset(shifted_file, moved.cutoff)).energy
    shift = np.array([helpers.shifted_energy(a, 0.0) for a in water48])  # eV per frame (+112 for 16 H2O)
    np.testing.assert_allclose(e_moved - e_plain, shift, rtol=0, atol=1e-8)


def test_finetuning_on_shifted_energies_is_as_good_as_before(pretrained, shifted_file, water48_file, helpers,
                                                             tmp_path):
    """The classic transfer failure: E0 carried over silently. Fine-tuning refits it."""
    model, _ = load_checkpoint(pretrained)
    before = helpers.energy_rmse(model, water48_file)  # pretrained model on its own level of theory
    carried_over = helpers.energy_rmse(model, shifted_file)
    assert carried_over > 1000 * 2.0  # E0 of the old level: eV per atom off
    config = helpers.config_for(shifted_file, epochs=2, train={"lr": 1e-4}, transfer={"init_from": str(pretrained)})
    result = fit(config, tmp_path, progress=False)
    tuned, _ = load_checkpoint(result.best)
    after = helpers.energy_rmse(tuned, shifted_file)
    assert after < 1.2 * before + 0.2, (before, after)


def test_architecture_and_cutoff_come_from_the_checkpoint(pretrained, water48_file, helpers, tmp_path):
    config = helpers.config_for(water48_file, epochs=1, model=ModelConfig(dtype="float64"),
                                transfer={"init_from": str(pretrained)})
    result = fit(config, tmp_path, progress=False)
    stored = read_checkpoint(result.best)["config"]
    assert stored["model"] == read_checkpoint(pretrained)["config"]["model"]
    assert stored["transfer"]["init_from"] == str(pretrained)


def test_frozen_parameters_are_bit_identical(pretrained, shifted_file, helpers, tmp_path):
    config = helpers.config_for(shifted_file, epochs=3, train={"lr": 5e-3},
                                transfer={"init_from": str(pretrained), "freeze": ("embedding", "interactions:0")})
    result = fit(config, tmp_path, progress=False)
    start = read_checkpoint(pretrained)["model"]
    frozen = [k for k in start if k.startswith(("embedding.", "interactions.0."))]
    trained = [k for k in start if k.startswith(("interactions.1.", "lin1.", "lin2."))]
    assert len(frozen) >= 5 and trained
    best, last = read_checkpoint(result.best), read_checkpoint(result.last)
    for weights in (best["model"], last["model"], last["train_state"]["model"]):  # EMA and raw
        for key in frozen:
            assert torch.equal(weights[key], start[key]), key
        assert not all(torch.equal(weights[k], start[k]) for k in trained)


def test_scale_reestimate_keeps_the_function(pretrained, water48, helpers, tmp_path):
    """A new scale (RMS force) with the readout compensated leaves energies and forces unchanged."""
    from ase.calculators.singlepoint import SinglePointCalculator

    from pbcgnn.io import write_frames

    frames = helpers.relabel(water48)
    for atoms in frames:  # forces twice as large: a different force scale, same structures
        atoms.calc = SinglePointCalculator(atoms, energy=atoms.get_potential_energy(), forces=2 * atoms.get_forces())
    path = tmp_path / "double.xyz"
    write_frames(path, frames)
    data = FrameDataset(path, 4.5)
    for keep in (False, True):
        model, _ = load_checkpoint(pretrained)
        old_scale, old_w = float(model.reference.scale), model.lin2.weight.clone()
        e_before = predict(model, data)
        info = fit_reference(model, data, keep_scale=keep)
        e_after = predict(model, data)
        np.testing.assert_allclose(e_after.forces, e_before.forces, rtol=1e-10, atol=1e-12)
        spread = lambda e: e - e.mean()  # noqa: E731 (E0 moves the mean only)
        np.testing.assert_allclose(spread(e_after.energy), spread(e_before.energy), rtol=0, atol=1e-9)
        if keep:
            assert info["scale"] == old_scale and torch.equal(model.lin2.weight, old_w)
        else:
            assert info["scale"] == pytest.approx(2 * np.sqrt(np.mean(np.concatenate(
                [a.get_forces().ravel() for a in water48]) ** 2)), rel=1e-9)  # via extxyz text
            assert info["scale"] != old_scale


def test_energy_only_finetuning_trains_and_keeps_the_scale(pretrained, water48, helpers, tmp_path):
    from pbcgnn.io import write_frames

    path = tmp_path / "energy_only.xyz"
    write_frames(path, helpers.relabel(water48, helpers.shifted_energy, forces=False))
    # 4 epochs (16 steps): after 8, where the error stood depended on gradient clipping and the
    # energy weight's scale (190 -> 55-100 meV/atom); after 16 it is 28-33 at weights 10-100
    config = helpers.config_for(path, epochs=4, transfer={"init_from": str(pretrained)})
    result = fit(config, tmp_path / "run", progress=False)
    assert np.isnan(result.metrics["force_rmse_mev_per_A"])  # no reference forces anywhere
    assert result.metrics["energy_rmse_mev_per_atom"] < 50
    tuned, _ = load_checkpoint(result.best)
    start, _ = load_checkpoint(pretrained)
    assert float(tuned.reference.scale) == float(start.reference.scale)


def test_energy_only_training_selects_on_validation_energies(pretrained, water48, helpers, tmp_path):
    """Training frames without forces, validation frames with forces: best.pt is picked by the
    energy error alone (as a CCSD(T) fine-tune needs); the force error is still reported."""
    from pbcgnn.io import write_frames

    train, val = tmp_path / "train.xyz", tmp_path / "val.xyz"
    write_frames(train, helpers.relabel(water48[:7], helpers.shifted_energy, forces=False))
    write_frames(val, helpers.relabel(water48[7:], helpers.shifted_energy))
    config = helpers.config_for(train, epochs=4, transfer={"init_from": str(pretrained)})
    config = config.replace(data={"val_paths": (str(val),)})
    result = fit(config, tmp_path / "run", progress=False)
    for record in result.history:
        assert record["val_force_rmse_mev_per_A"] > 0  # measured on the validation forces ...
        energy_term = config.train.energy_weight * (record["val_energy_rmse_mev_per_atom"] / 1000) ** 2
        assert record["val_loss"] == pytest.approx(energy_term, rel=1e-12)  # ... but not selected on
    best = min(result.history, key=lambda r: r["val_energy_rmse_mev_per_atom"])
    assert result.metrics["energy_rmse_mev_per_atom"] == best["val_energy_rmse_mev_per_atom"]
    # with forces in the training frames, the force term counts again
    write_frames(train, helpers.relabel(water48[:7], helpers.shifted_energy))
    with_forces = fit(config.replace(train={"epochs": 1}), tmp_path / "forces", progress=False).history[0]
    assert with_forces["val_loss"] > config.train.energy_weight * (
        with_forces["val_energy_rmse_mev_per_atom"] / 1000) ** 2 + 1e-9


@pytest.mark.usefixtures("one_thread")
def test_finetune_resume_reaches_the_same_weights(pretrained, shifted_file, helpers, tmp_path):
    opts = {"transfer": {"init_from": str(pretrained), "freeze": ("interactions:1",)}}
    whole = fit(helpers.config_for(shifted_file, epochs=3, **opts), tmp_path / "whole", progress=False)
    fit(helpers.config_for(shifted_file, epochs=1, **opts), tmp_path / "split", progress=False)
    resumed = fit(helpers.config_for(shifted_file, epochs=3, **opts), tmp_path / "split", resume=True,
                  progress=False)
    a, b = read_checkpoint(whole.last), read_checkpoint(resumed.last)
    for key in a["train_state"]["model"]:
        assert torch.equal(a["train_state"]["model"][key], b["train_state"]["model"][key]), key


@pytest.mark.parametrize("transfer, message", [
    ({"freeze": ("readout",)}, "keep_scale"),
    ({"freeze": ("embedding", "interactions", "readout"), "keep_scale": True}, "nothing to train"),
    ({"freeze": ("interactions:2",)}, "blocks 0-1"),
    ({"init_member": 1}, "committee size"),
])
def test_bad_transfer_options_are_input_errors(pretrained, water48_file, helpers, tmp_path, transfer, message):
    config = helpers.config_for(water48_file, epochs=1, transfer={"init_from": str(pretrained), **transfer})
    with pytest.raises(InputError, match=message):
        fit(config, tmp_path, progress=False)


def test_freeze_without_a_checkpoint_is_an_input_error(water48_file, helpers, tmp_path):
    with pytest.raises(InputError, match="needs init_from"):
        fit(helpers.config_for(water48_file, transfer={"freeze": ("embedding",)}), tmp_path, progress=False)
