r"""Fitting a committee's spread calibration on labelled frames, and scoring it as a Gaussian (numpy).

Samples per quantity (:func:`calibration_samples`): the energy per atom, one per frame
(error :math:`e = (\bar E - E_\mathrm{ref}) / N`, spread :math:`s = s_E / N`), and every force
component of frames with reference forces (:math:`e = \bar F_{i\alpha} - F_{i\alpha}^\mathrm{ref}`,
:math:`s = s_{F,i\alpha}`). An uncertainty :math:`\sigma = a s^b`
(:class:`pbcgnn.model.calibration.PowerLaw`) is scored by treating each error as
:math:`\mathcal N(0, \sigma^2)`:

* coverage at :math:`k` sigma: the fraction with :math:`|e| \le k\sigma` (ideal 68.3 % at 1,
  95.4 % at 2);
* negative log-likelihood, the mean of :math:`\tfrac12 \log(2\pi\sigma^2) + e^2 / (2\sigma^2)`
  (lower is better; it depends on units: shifted by :math:`\log 1000` from eV to meV);
* miscalibration area: with :math:`p_i = \mathrm{erf}(|e_i| / (\sigma_i \sqrt 2))`, the level of
  the smallest centred interval holding :math:`e_i`, :math:`\int_0^1 |F(p) - p|\, dp` for the
  empirical CDF :math:`F` of the :math:`p_i` (0 when calibrated, at most 0.5).

The fit maximises the Gaussian likelihood. For a fixed :math:`b` the best
:math:`a^2 = \langle e^2 / s^{2b} \rangle`; :math:`b = 1` is a plain scale, and the power law
searches :math:`b` on :data:`EXPONENTS`. Since the power law always fits its own samples at least
as well, the form is chosen per quantity by cross-validation over frames: the frames are cut
into :data:`FOLDS` contiguous blocks, each block scored by both forms fitted on the others, and
the power law is kept only when its held-out negative log-likelihood is lower (and only with at
least :data:`POWER_LAW_MIN_FRAMES` frames). The chosen form is then fitted on all frames.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from ..errors import InputError
from ..model.calibration import CALIBRATED, Calibration, PowerLaw
from .predict import Predictions

__all__ = ["MIN_FRAMES", "POWER_LAW_MIN_FRAMES", "calibration_samples", "coverage", "gaussian_nll",
           "miscalibration_area", "uncertainty_scores", "binned_rms", "fit_scale", "fit_power_law", "fit_calibration",
           "recalibrate"]

#: Fewest labelled frames a quantity is calibrated on.
MIN_FRAMES = 3
#: Fewest frames for the power law to be considered (else a scale).
POWER_LAW_MIN_FRAMES = 10
#: Cross-validation blocks for the choice of form.
FOLDS = 5
#: Exponents the power law searches.
EXPONENTS = np.linspace(0.25, 2.0, 176)
#: Smallest spread used (eV, eV/Angstrom): a zero spread would give an infinite likelihood.
SPREAD_FLOOR = 1e-9


def calibration_samples(pred: Predictions, raw: bool = True) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Errors, spreads and frame indices of the calibration samples (see the module docstring).

    Args:
        pred: committee predictions.
        raw: take the members' raw std (to fit) rather than the calibrated one (to score).

    Returns:
        Per quantity (``energy`` eV/atom, ``forces`` eV/Angstrom) ``(error, spread, frame)``, each
        [S]; frames without the reference (NaN energy, no forces) are left out.
    """
    e_std, f_std = (pred.energy_std_raw, pred.forces_std_raw) if raw else (pred.energy_std, pred.forces_std)
    if e_std is None or f_std is None:
        raise ValueError("calibration_samples: predictions carry no committee spread")
    frames = np.arange(len(pred.natoms))
    e_err = (pred.energy - pred.energy_ref) / pred.natoms  # [F]
    ok = np.isfinite(e_err)
    atom_frame = np.repeat(frames, pred.natoms)  # [N]
    mask = pred.atom_has_forces
    return {
        "energy": (e_err[ok], (e_std / pred.natoms)[ok], frames[ok]),
        "forces": ((pred.forces - pred.forces_ref)[mask].ravel(), f_std[mask].ravel(),
                   np.repeat(atom_frame[mask], 3)),
    }


def coverage(err: np.ndarray, sigma: np.ndarray, k: float = 1.0) -> float:
    """Fraction of errors [S] within ``k`` sigma [S] (NaN for no samples)."""
    return float(np.mean(np.abs(err) <= k * sigma)) if np.size(err) else float("nan")


def gaussian_nll(err: np.ndarray, sigma: np.ndarray) -> float:
    """Mean Gaussian negative log-likelihood of errors [S] with std ``sigma`` [S], in their units."""
    if not np.size(err):
        return float("nan")
    var = np.maximum(np.asarray(sigma, dtype=float), SPREAD_FLOOR) ** 2
    return float(np.mean(0.5 * np.log(2 * np.pi * var) + np.square(err) / (2 * var)))


def miscalibration_area(err: np.ndarray, sigma: np.ndarray) -> float:
    """Area between the observed and the expected coverage of centred Gaussian intervals, exactly
    (the empirical CDF is a step function); 0 when calibrated, 0.5 at most."""
    if not np.size(err):
        return float("nan")
    z = np.abs(err) / (np.maximum(sigma, SPREAD_FLOOR) * math.sqrt(2.0))
    levels = np.sort(np.vectorize(math.erf, otypes=[float])(z))  # [S] in [0, 1]
    n = len(levels)
    knots = np.r_[0.0, levels, 1.0]  # [S + 2]
    step = np.arange(n + 1) / n  # the CDF on [knots[k], knots[k + 1])

    def antiderivative(p: np.ndarray) -> np.ndarray:  # of |step - p| in p
        return np.sign(p - step) * (p - step) ** 2 / 2

    return float(np.sum(antiderivative(knots[1:]) - antiderivative(knots[:-1])))


def uncertainty_scores(err: np.ndarray, sigma: np.ndarray) -> dict[str, float]:
    """``coverage_1sigma``, ``coverage_2sigma``, ``miscalibration_area`` and ``nll`` of errors
    [S] against uncertainties [S] (same units; the NLL is in those units)."""
    return {"coverage_1sigma": coverage(err, sigma, 1.0), "coverage_2sigma": coverage(err, sigma, 2.0),
            "miscalibration_area": miscalibration_area(err, sigma), "nll": gaussian_nll(err, sigma)}


def binned_rms(err: np.ndarray, sigma: np.ndarray, bins: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """RMS uncertainty and RMS error per bin of samples of similar uncertainty (equal counts,
    ``bins`` at most); for a calibrated Gaussian the two agree (the reliability diagram's diagonal).

    Returns:
        ``(rms_sigma, rms_err)``, each [K] with K = min(bins, S).
    """
    order = np.argsort(sigma, kind="stable")
    groups = [g for g in np.array_split(order, min(bins, len(order))) if len(g)]
    rms = lambda x: float(np.sqrt(np.mean(np.square(x))))  # noqa: E731
    return np.array([rms(sigma[g]) for g in groups]), np.array([rms(err[g]) for g in groups])


def fit_scale(err: np.ndarray, spread: np.ndarray) -> PowerLaw:
    """Maximum-likelihood scale: :math:`a = \\sqrt{\\langle e^2 / s^2 \\rangle}`, :math:`b = 1`."""
    s = np.maximum(spread, SPREAD_FLOOR)
    return PowerLaw(max(float(np.sqrt(np.mean(np.square(err / s)))), 1e-12), 1.0)


def fit_power_law(err: np.ndarray, spread: np.ndarray) -> PowerLaw:
    """Maximum-likelihood :math:`a s^b` with :math:`b` on :data:`EXPONENTS`: the profile
    :math:`\\tfrac12 \\log \\langle e^2 / s^{2b} \\rangle + b \\langle \\log s \\rangle` is minimised."""
    log_s = np.log(np.maximum(spread, SPREAD_FLOOR))  # [S]
    e2 = np.maximum(np.square(err), 1e-300)
    mean_sq = np.array([np.mean(e2 * np.exp(-2 * b * log_s)) for b in EXPONENTS])  # [B]
    profile = 0.5 * np.log(mean_sq) + EXPONENTS * log_s.mean()
    k = int(np.argmin(profile))
    return PowerLaw(float(np.sqrt(mean_sq[k])), float(EXPONENTS[k]))


def _held_out_nll(err: np.ndarray, spread: np.ndarray, frame: np.ndarray, fit) -> float:
    """Mean NLL of every sample under ``fit`` of the other frames' blocks (:data:`FOLDS`)."""
    total = 0.0
    for block in np.array_split(np.unique(frame), FOLDS):
        test = np.isin(frame, block)
        law = fit(err[~test], spread[~test])
        total += gaussian_nll(err[test], law(np.maximum(spread[test], SPREAD_FLOOR))) * int(test.sum())
    return float(total / len(err))  # a plain float: checkpoints hold no numpy scalars


def _fit_quantity(err: np.ndarray, spread: np.ndarray, frame: np.ndarray) -> tuple[PowerLaw, dict]:
    """The chosen law for one quantity and what decided it (NLLs in eV-based units)."""
    n_frames = len(np.unique(frame))
    info: dict = {"frames": n_frames, "samples": int(len(err))}
    if n_frames >= POWER_LAW_MIN_FRAMES:
        info["cv_nll_scale"] = _held_out_nll(err, spread, frame, fit_scale)
        info["cv_nll_power"] = _held_out_nll(err, spread, frame, fit_power_law)
        power = info["cv_nll_power"] < info["cv_nll_scale"]
    else:
        power = False
    law = fit_power_law(err, spread) if power else fit_scale(err, spread)
    sigma = law(np.maximum(spread, SPREAD_FLOOR))
    info.update(form="power" if power else "scale", coverage_1sigma_raw=coverage(err, spread),
                coverage_1sigma=coverage(err, sigma))
    return law, info


def fit_calibration(pred: Predictions, fitted_on: str) -> Calibration:
    """The calibration of a committee's raw spreads on labelled predictions.

    A quantity with fewer than :data:`MIN_FRAMES` labelled frames keeps the identity (its
    ``details`` entry says why), e.g. forces of energy-only coupled-cluster frames.

    Args:
        pred: committee predictions with references (:func:`pbcgnn.evaluation.predict`).
        fitted_on: what the frames are, in words (stored with the calibration).

    Raises:
        InputError: neither quantity has :data:`MIN_FRAMES` labelled frames.
    """
    laws, details = {}, {}
    for q, (err, spread, frame) in calibration_samples(pred, raw=True).items():
        n_frames = len(np.unique(frame))
        if n_frames < MIN_FRAMES:
            laws[q] = PowerLaw()
            details[q] = {"form": "none", "frames": n_frames,
                          "reason": f"{n_frames} frames with reference {q}, at least {MIN_FRAMES} needed"}
            continue
        laws[q], details[q] = _fit_quantity(err, spread, frame)
    if all(details[q]["form"] == "none" for q in CALIBRATED):
        found = ", ".join(f"{details[q]['frames']} with {q}" for q in CALIBRATED)
        raise InputError(f"expected at least {MIN_FRAMES} labelled frames to fit a calibration, found {found}")
    return Calibration(**laws, fitted_on=fitted_on, n_frames=int(len(pred.natoms)), details=details)


def recalibrate(pred: Predictions, calibration: Calibration) -> Predictions:
    """``pred`` with its calibrated spreads recomputed from the raw ones by ``calibration``."""
    if pred.energy_std_raw is None or pred.forces_std_raw is None:
        raise ValueError("recalibrate: predictions carry no committee spread")
    return dataclasses.replace(pred, energy_std=calibration.energy_std(pred.energy_std_raw, pred.natoms),
                               forces_std=calibration.forces_std(pred.forces_std_raw))
