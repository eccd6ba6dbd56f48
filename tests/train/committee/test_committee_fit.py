"""Training a committee into one checkpoint; evaluation, calibration, selection, the calculator."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pbcgnn.checkpoint import load_checkpoint, read_checkpoint
from pbcgnn.dataset import FrameDataset
from pbcgnn.errors import InputError
from pbcgnn.evaluation import predict
from pbcgnn.evaluation.metrics import frame_spread
from pbcgnn.evaluation.report import evaluate
from pbcgnn.graph import atoms_to_graph
from pbcgnn.io import read_frames
from pbcgnn.model import Committee, SchNet, committee_properties
from pbcgnn.select import select_frames
from pbcgnn.train.run import fit


def test_committee_checkpoint_holds_distinct_members(committee_run):
    result, out = committee_run
    raw = torch.load(result.best, weights_only=True)
    assert [m["seed"] for m in raw["members"]] == [11, 12, 13]
    assert raw["config"]["committee"] == {"size": 3, "bootstrap": True}
    model, ckpt = load_checkpoint(result.best)
    assert isinstance(model, Committee) and len(model.members) == 3 and model.cutoff == 4.5
    weights = [m.lin1.weight for m in model.members]
    assert not torch.equal(weights[0], weights[1]) and not torch.equal(weights[1], weights[2])
    for k in range(3):  # each member's own run is an ordinary single-model checkpoint
        member, _ = load_checkpoint(out / f"member_{k}" / "best.pt")
        assert isinstance(member, SchNet)
        assert torch.equal(member.lin1.weight, weights[k])
    for key in ("energy_rmse_mev_per_atom", "force_rmse_mev_per_A", "spearman_forces", "calibration_forces"):
        assert key in result.metrics and key in ckpt["metrics"]
    assert {rec["member"] for rec in result.history} == {0, 1, 2}


def test_training_fits_the_calibration_on_the_validation_frames(committee_run):
    """best.pt and last.pt carry a calibration fitted on the 3 validation frames; it is the fit of
    the committee's raw spread there, and the stored metrics score the calibrated spread."""
    from pbcgnn.config import Config
    from pbcgnn.dataset import load_datasets
    from pbcgnn.evaluation.calibration import calibration_samples, fit_calibration

    result, _ = committee_run
    model, ckpt = load_checkpoint(result.best)
    cal = model.calibration
    assert not cal.is_identity and cal.n_frames == 3 and "validation" in cal.fitted_on
    assert cal.details["forces"]["form"] == "scale"  # 3 frames: too few to choose a power law
    _, val = load_datasets(Config.from_dict(ckpt["config"]))
    pred = predict(model, val)
    refit = fit_calibration(pred, "again")
    assert refit.forces.a == pytest.approx(cal.forces.a, rel=1e-9)
    assert refit.energy.a == pytest.approx(cal.energy.a, rel=1e-9)
    for q, (err, sigma, _) in calibration_samples(pred, raw=False).items():  # maximum likelihood: <z^2> = 1
        assert np.mean((err / sigma) ** 2) == pytest.approx(1.0, rel=1e-9), q
    assert ckpt["metrics"]["calibration_forces_a"] == cal.forces.a
    assert not load_checkpoint(result.last)[0].calibration.is_identity


def test_committee_forward_is_the_member_mean(committee_run, water48_file):
    model, _ = load_checkpoint(committee_run[0].best)
    data = atoms_to_graph(read_frames(water48_file)[0], model.cutoff)
    args = (data.z, data.pos, data.edge_index, data.cell_offsets, data.cell)
    energy = model(*args)
    assert energy.shape == (1,) and energy.dtype == torch.float64
    members = torch.stack([m(*args) for m in model.members])
    torch.testing.assert_close(energy, members.mean(0), rtol=1e-15, atol=0)


@pytest.mark.usefixtures("one_thread")
def test_committee_resume_reaches_the_same_weights(water48_file, helpers, tmp_path):
    whole = fit(helpers.config(water48_file, size=2, epochs=2), tmp_path / "whole", progress=False)
    fit(helpers.config(water48_file, size=2, epochs=1), tmp_path / "split", progress=False)
    resumed = fit(helpers.config(water48_file, size=2, epochs=2), tmp_path / "split", resume=True, progress=False)
    a, b = read_checkpoint(whole.last), read_checkpoint(resumed.last)
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


@pytest.mark.usefixtures("one_thread")
def test_paused_committee_resumes_to_the_same_weights(water48_file, helpers, tmp_path):
    """--stop-after pauses the committee inside a member (nothing combined yet); resumed invocation by
    invocation it reaches the uninterrupted committee's weights."""
    config = helpers.config(water48_file, size=2, epochs=2)
    whole = fit(config, tmp_path / "whole", progress=False)
    one_epoch = config.replace(train={"stop_after": 1e-6})  # one epoch per invocation
    first = fit(one_epoch, tmp_path / "split", progress=False)
    assert first.stopped == "paused" and len(first.history) == 1
    assert not (tmp_path / "split" / "best.pt").exists() and not (tmp_path / "split" / "member_1").exists()
    stops = [fit(one_epoch, tmp_path / "split", resume=True, progress=False).stopped for _ in range(2)]
    assert stops == ["paused", "member 0: epochs; member 1: epochs"]
    a, b = read_checkpoint(whole.last), read_checkpoint(tmp_path / "split" / "last.pt")
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_unfinished_committee_does_not_load(water48_file, helpers, tmp_path, monkeypatch):
    from pbcgnn.train import setup

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(setup, "fit_reference", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fit(helpers.config(water48_file, size=2, epochs=1), tmp_path, progress=False)
    with pytest.raises(InputError, match="committee run not finished"):
        load_checkpoint(tmp_path / "last.pt")


def test_evaluate_reports_calibration(committee_run, water48_file, tmp_path):
    results = evaluate(committee_run[0].best, [water48_file], tmp_path)
    total = results["total"]
    assert -1.0 <= total["spearman_forces"] <= 1.0 and -1.0 <= total["spearman_energy"] <= 1.0
    assert total["force_spread_mev_per_A"] > 0 and total["calibration_forces"] > 0
    for q in ("energy", "forces"):
        assert 0 <= total[f"coverage_1sigma_{q}"] <= total[f"coverage_2sigma_{q}"] <= 1
        assert 0 <= total[f"miscalibration_area_{q}"] <= 0.5 and np.isfinite(total[f"nll_{q}"])
    model, _ = load_checkpoint(committee_run[0].best)
    # the reported spread is the calibrated one: the raw RMS spread times the fitted scale
    assert total["force_spread_mev_per_A"] == pytest.approx(model.calibration.forces.a
                                                            * total["force_spread_raw_mev_per_A"], rel=1e-9)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["total"]["spearman_forces"] == total["spearman_forces"]
    assert saved["calibration"] == model.calibration.to_dict()
    assert (tmp_path / "calibration.png").stat().st_size > 1000
    import ase.io

    frames = ase.io.read(tmp_path / "predictions.xyz", index=":")
    assert frames[0].info["energy_std"] > 0 and frames[0].arrays["forces_std"].shape == (48, 3)


@pytest.mark.parametrize("by", ["forces", "max_force", "energy"])
def test_select_returns_the_frames_with_the_largest_spread(committee_run, water48_file, tmp_path, by):
    model, _ = load_checkpoint(committee_run[0].best)
    pool = read_frames(water48_file)
    spreads = []
    for atoms in pool:  # one frame at a time: an independent computation of the ranking value
        data = atoms_to_graph(atoms, model.cutoff)
        out = committee_properties(model, data)
        spread = frame_spread(out["energy_std"].numpy(), out["forces_std"].numpy(), np.array([len(atoms)]))
        spreads.append(spread[by][0])
    expected = np.argsort(spreads)[::-1][:4].tolist()
    rows = select_frames(committee_run[0].best, water48_file, 4, tmp_path / "input.data", by=by)
    assert [r["pool_index"] for r in rows] == expected
    np.testing.assert_allclose([r[by] for r in rows], np.sort(spreads)[::-1][:4], rtol=1e-6)
    written = read_frames(tmp_path / "input.data", require_energy=False)  # n2p2, structures only
    assert len(written) == 4 and all(a.calc is None or "energy" not in a.calc.results for a in written)
    for atoms, k in zip(written, expected):
        np.testing.assert_allclose(atoms.positions, pool[k].positions, atol=1e-12)


def test_select_ranks_by_the_calibrated_spread(committee_run, water48_file, tmp_path):
    """With a power law on the force components, the ranking value is the RMS of the calibrated
    component spreads, computed here from the raw ones; a scale multiplies the raw values."""
    from pbcgnn.checkpoint import save_checkpoint
    from pbcgnn.model.calibration import Calibration, PowerLaw

    ckpt = read_checkpoint(committee_run[0].best)
    raw_path, cal_path = tmp_path / "raw.pt", tmp_path / "cal.pt"
    save_checkpoint(raw_path, {k: v for k, v in ckpt.items() if k != "calibration"})
    cal = Calibration(energy=PowerLaw(2.5, 1.0), forces=PowerLaw(0.3, 0.5))
    save_checkpoint(cal_path, {**ckpt, "calibration": cal.to_dict()})
    model, _ = load_checkpoint(raw_path)
    pool = read_frames(water48_file)
    expected = []
    for atoms in pool:
        out = committee_properties(model, atoms_to_graph(atoms, model.cutoff))
        expected.append(float(np.sqrt(np.mean(0.3**2 * out["forces_std"].numpy()))))  # RMS of 0.3 s^0.5
    rows = select_frames(cal_path, water48_file, 4, tmp_path / "sel.xyz")
    assert [r["pool_index"] for r in rows] == np.argsort(expected)[::-1][:4].tolist()
    np.testing.assert_allclose([r["forces"] for r in rows], np.sort(expected)[::-1][:4], rtol=1e-9)
    raw_rows = {r["pool_index"]: r for r in select_frames(raw_path, water48_file, 10, tmp_path / "all.xyz")}
    for r in rows:
        assert r["energy"] == pytest.approx(2.5 * raw_rows[r["pool_index"]]["energy"], rel=1e-12)


def test_select_needs_a_committee(committee_run, water48_file, tmp_path):
    _, out = committee_run
    with pytest.raises(InputError, match="expected a committee checkpoint"):
        select_frames(out / "member_0" / "best.pt", water48_file, 2, tmp_path / "sel.xyz")


def test_calculator_exposes_the_spread(committee_run, water48_file):
    from pbcgnn.calculator import PbcgnnCalculator

    model, _ = load_checkpoint(committee_run[0].best)
    atoms = read_frames(water48_file)[3].copy()
    atoms.calc = PbcgnnCalculator(model)
    energy = atoms.get_potential_energy()
    ref = committee_properties(model, atoms_to_graph(atoms, model.cutoff))
    assert energy == pytest.approx(float(ref["energy"][0]), rel=1e-12)
    assert atoms.calc.results["energy_std"] == pytest.approx(float(ref["energy_std"][0]), rel=1e-9)
    np.testing.assert_allclose(atoms.calc.results["forces_std"], ref["forces_std"].numpy(), rtol=1e-8, atol=1e-12)


def test_predict_on_a_committee_matches_per_frame_properties(committee_run, water48_file):
    model, _ = load_checkpoint(committee_run[0].best)
    dataset = FrameDataset(water48_file, model.cutoff)
    pred = predict(model, dataset, batch_size=4)
    assert pred.energy_std.shape == (len(dataset),) and pred.forces_std.shape == (len(dataset) * 48, 3)
    first = committee_properties(model, atoms_to_graph(read_frames(water48_file)[0], model.cutoff))
    np.testing.assert_allclose(pred.forces_std[:48], first["forces_std"].numpy(), rtol=1e-8, atol=1e-12)
