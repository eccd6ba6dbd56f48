"""Scores of a spread as a Gaussian uncertainty on hand-made cases, and the fit on synthetic committees."""
from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch

from pbcgnn.errors import InputError
from pbcgnn.evaluation.calibration import (
    binned_rms,
    coverage,
    fit_calibration,
    fit_power_law,
    fit_scale,
    gaussian_nll,
    miscalibration_area,
    recalibrate,
)
from pbcgnn.evaluation.metrics import calibration_metrics
from pbcgnn.evaluation.predict import Predictions
from pbcgnn.model.calibration import Calibration, PowerLaw


def test_coverage_and_nll_by_hand():
    err, sigma = np.array([0.5, -1.5, 2.5, 0.1]), np.ones(4)
    assert coverage(err, sigma, 1.0) == 0.5 and coverage(err, sigma, 2.0) == 0.75
    assert coverage(np.array([1.0]), np.array([1.0])) == 1.0  # the boundary is inside
    expected = 0.5 * math.log(2 * math.pi) + np.mean(err**2) / 2
    assert gaussian_nll(err, sigma) == pytest.approx(expected, rel=1e-14)
    # sigma 2 on an error of 2: 0.5 log(2 pi 4) + 4 / 8
    assert gaussian_nll(np.array([2.0]), np.array([2.0])) == pytest.approx(0.5 * math.log(8 * math.pi) + 0.5)
    # units: errors and sigma 1000x larger shift the NLL by log 1000
    assert gaussian_nll(1000 * err, 1000 * sigma) == pytest.approx(expected + math.log(1000), rel=1e-14)


def test_miscalibration_area_by_hand():
    # one error at the median of |N(0, 1)|: its level is 0.5; the CDF is 0 then 1, area 1/8 + 1/8
    median = 0.6744897501960817
    assert miscalibration_area(np.array([median]), np.array([1.0])) == pytest.approx(0.25, abs=1e-12)
    # errors far outside their sigma (all levels ~1): the CDF is 0 until 1, area 1/2
    assert miscalibration_area(np.full(5, 50.0), np.ones(5)) == pytest.approx(0.5, abs=1e-9)
    # zero errors (all levels 0): area 1/2 too (overconfident and underconfident alike)
    assert miscalibration_area(np.zeros(3), np.ones(3)) == pytest.approx(0.5, abs=1e-12)
    # errors at the levels 1/4 and 3/4: the CDF is 0, 1/2, 1 on quarters-halves-quarters
    levels = np.array([0.3186393639643752, 1.1503493803760079])  # |z| with erf(z / sqrt 2) = 1/4, 3/4
    area = 2 * (0.25**2 / 2) + 2 * (0.25**2 / 2)  # |F - p| is a triangle of height 1/4 on each quarter
    assert miscalibration_area(levels, np.ones(2)) == pytest.approx(area, abs=1e-12)


def test_calibrated_gaussian_scores_near_ideal():
    rng = np.random.default_rng(0)
    sigma = rng.lognormal(0, 1, 200_000)
    err = rng.normal(0, sigma)
    assert coverage(err, sigma, 1) == pytest.approx(0.6827, abs=0.005)
    assert coverage(err, sigma, 2) == pytest.approx(0.9545, abs=0.003)
    assert miscalibration_area(err, sigma) < 0.005
    rms_sigma, rms_err = binned_rms(err, sigma, bins=5)
    np.testing.assert_allclose(rms_err, rms_sigma, rtol=0.03)
    assert np.all(np.diff(rms_sigma) > 0)  # bins in order of sigma


def test_binned_rms_by_hand():
    rms_sigma, rms_err = binned_rms(np.array([3.0, -4.0, 1.0, 1.0]), np.array([2.0, 2.0, 1.0, 1.0]), bins=2)
    np.testing.assert_allclose(rms_sigma, [1.0, 2.0])
    np.testing.assert_allclose(rms_err, [1.0, math.sqrt(12.5)])


def test_fit_recovers_a_scale_and_a_power_law():
    rng = np.random.default_rng(1)
    s = rng.lognormal(-3, 1, 20_000)
    assert fit_scale(rng.normal(0, 8.0 * s), s).a == pytest.approx(8.0, rel=0.03)
    law = fit_power_law(rng.normal(0, 0.5 * s**0.6), s)
    assert law.b == pytest.approx(0.6, abs=0.03) and law.a == pytest.approx(0.5, rel=0.15)


def synthetic(n_frames: int, factor_e: float, factor_f: float, seed: int = 0, power: float = 1.0) -> Predictions:
    """A committee on frames of 3 atoms whose raw spread is too small by ``factor`` (energy per atom,
    force components): the errors are drawn from N(0, (factor s^power)^2)."""
    rng = np.random.default_rng(seed)
    natoms = np.full(n_frames, 3)
    e_std = rng.lognormal(-5, 0.7, n_frames) * natoms  # eV
    f_std = rng.lognormal(-3, 0.7, (3 * n_frames, 3))  # eV/A
    energy_ref = rng.normal(-40, 1, n_frames)
    forces_ref = rng.normal(0, 1, (3 * n_frames, 3))
    energy = energy_ref + natoms * rng.normal(0, factor_e * (e_std / natoms) ** power)
    forces = forces_ref + rng.normal(0, factor_f * f_std**power)
    return Predictions(energy, energy_ref, natoms, forces, forces_ref, np.ones(n_frames, bool), [""] * n_frames,
                       [], e_std, f_std, e_std, f_std)


def test_fit_calibration_finds_the_factor_a_committee_is_too_small_by():
    pred = synthetic(400, factor_e=4.0, factor_f=8.0)
    cal = fit_calibration(pred, "synthetic frames")
    assert cal.energy.a == pytest.approx(4.0, rel=0.1) and cal.forces.a == pytest.approx(8.0, rel=0.03)
    assert cal.energy.b == 1.0 and cal.forces.b == 1.0  # a true scale: the power law does not predict better
    assert cal.details["forces"]["form"] == "scale" and cal.n_frames == 400 and cal.fitted_on == "synthetic frames"
    before, after = calibration_metrics(pred), calibration_metrics(recalibrate(pred, cal), cal)
    assert before["coverage_1sigma_forces"] < 0.15 and after["coverage_1sigma_forces"] == pytest.approx(0.683, abs=0.02)
    assert after["nll_forces"] < before["nll_forces"] and after["miscalibration_area_forces"] < 0.02
    assert after["calibration_forces_a"] == cal.forces.a


def test_fit_calibration_chooses_the_power_law_where_it_predicts_better():
    cal = fit_calibration(synthetic(200, 2.0, 3.0, seed=2, power=0.5), "synthetic frames")
    assert cal.details["forces"]["form"] == "power"
    assert cal.details["forces"]["cv_nll_power"] < cal.details["forces"]["cv_nll_scale"]
    assert cal.forces.b == pytest.approx(0.5, abs=0.05)
    buffer = io.BytesIO()  # the fit's details are plain values a checkpoint can hold
    torch.save(cal.to_dict(), buffer)
    buffer.seek(0)
    assert Calibration.from_dict(torch.load(buffer, weights_only=True)) == cal


def test_recalibrate_applies_the_laws_to_the_raw_spread():
    pred = synthetic(5, 1.0, 1.0)
    cal = Calibration(energy=PowerLaw(2.0, 0.5), forces=PowerLaw(3.0, 1.0))
    out = recalibrate(pred, cal)
    np.testing.assert_allclose(out.energy_std, 3 * 2.0 * np.sqrt(pred.energy_std_raw / 3), rtol=1e-14)
    np.testing.assert_array_equal(out.forces_std, 3.0 * pred.forces_std_raw)
    np.testing.assert_array_equal(out.forces_std_raw, pred.forces_std_raw)


def test_too_few_frames_are_refused_and_energy_only_frames_calibrate_the_energy():
    with pytest.raises(InputError, match="expected at least 3 labelled frames to fit a calibration, found 2"):
        fit_calibration(synthetic(2, 1.0, 1.0), "two frames")
    pred = synthetic(6, 4.0, 1.0)
    pred.has_forces[:] = False
    cal = fit_calibration(pred, "energy-only frames")
    assert cal.forces == PowerLaw() and cal.energy.a != 1.0
    assert cal.details["forces"]["form"] == "none" and "0 frames with reference forces" in cal.details["forces"]["reason"]
