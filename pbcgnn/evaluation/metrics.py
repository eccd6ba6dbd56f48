r"""Errors of predictions in meV/atom and meV/Angstrom, and calibration of a committee's spread (pure numpy).

Metric definitions (all against the reference labels):

* ``energy_rmse_mev_per_atom`` / ``energy_mae_mev_per_atom``: root mean square / mean
  absolute of ``(E_pred - E_ref) / N`` over frames, in meV per atom.
* ``force_rmse_mev_per_A`` / ``force_mae_mev_per_A``: over every Cartesian force
  component of every atom of frames that have forces, in meV/Angstrom.

Per-frame committee spreads (:func:`frame_spread`), used for calibration and selection:

* ``energy``: energy std per atom, eV/atom;
* ``forces``: RMS over the frame's atoms and components of the force std, eV/Angstrom;
* ``max_force``: the largest per-atom force deviation ``|std(F_i)|`` (as DP-GEN), eV/Angstrom.

Calibration compares them with the per-frame errors of the committee mean (|dE|/N and the
per-frame force RMSE) by Spearman rank correlation: does a larger spread mean a larger error?
and scores the calibrated spread as a Gaussian uncertainty per sample (energy per atom per frame,
every force component): coverage, miscalibration area and negative log-likelihood
(:mod:`pbcgnn.evaluation.calibration`).
"""
from __future__ import annotations

import math

import numpy as np

from ..model.calibration import CALIBRATED, Calibration
from .calibration import calibration_samples, uncertainty_scores
from .predict import Predictions

__all__ = ["error_metrics", "prediction_metrics", "frame_spread", "frame_errors", "spearman",
           "calibration_metrics", "SPREAD_MEASURES"]

#: The per-frame spreads of :func:`frame_spread`.
SPREAD_MEASURES = ("forces", "max_force", "energy")


def error_metrics(pred: Predictions) -> dict[str, float]:
    """Energy (meV/atom) and force (meV/Angstrom) RMSE and MAE; see the module docstring."""
    de = (pred.energy - pred.energy_ref) / pred.natoms * 1000.0
    df = (pred.forces - pred.forces_ref)[pred.atom_has_forces].ravel() * 1000.0
    nan = float("nan")
    return {
        "energy_rmse_mev_per_atom": float(np.sqrt(np.mean(de**2))) if de.size else nan,
        "energy_mae_mev_per_atom": float(np.mean(np.abs(de))) if de.size else nan,
        "force_rmse_mev_per_A": float(np.sqrt(np.mean(df**2))) if df.size else nan,
        "force_mae_mev_per_A": float(np.mean(np.abs(df))) if df.size else nan,
        "n_frames": int(pred.natoms.size),
        "n_atoms": int(pred.natoms.sum()),
    }


def prediction_metrics(pred: Predictions, calibration: Calibration | None = None) -> dict[str, float]:
    """:func:`error_metrics`, plus the committee's spread and calibration
    (:func:`calibration_metrics`) when the predictions carry one."""
    metrics = error_metrics(pred)
    if pred.energy_std is not None:
        metrics.update(calibration_metrics(pred, calibration))
    return metrics


def frame_spread(energy_std: np.ndarray, forces_std: np.ndarray, natoms: np.ndarray) -> dict[str, np.ndarray]:
    """Per-frame committee spreads (see the module docstring).

    Args:
        energy_std: [F] total-energy std, eV.
        forces_std: [N, 3] force-component std, eV/Angstrom, frames concatenated.
        natoms: [F] atoms per frame.

    Returns:
        ``energy`` [F] eV/atom, ``forces`` [F] and ``max_force`` [F] eV/Angstrom.
    """
    natoms = np.asarray(natoms)
    frame = np.repeat(np.arange(len(natoms)), natoms)  # [N]
    var_atom = (np.asarray(forces_std) ** 2).sum(1)  # [N] eV^2/A^2
    forces = np.sqrt(np.bincount(frame, var_atom, len(natoms)) / (3 * natoms))
    max_force = np.zeros(len(natoms))
    np.maximum.at(max_force, frame, np.sqrt(var_atom))
    return {"energy": np.asarray(energy_std) / natoms, "forces": forces, "max_force": max_force}


def frame_errors(pred: Predictions) -> dict[str, np.ndarray]:
    """Per-frame errors of the predictions: ``energy`` |dE|/N [F] eV/atom, ``forces`` RMSE [F]
    eV/Angstrom (NaN for frames without reference forces)."""
    frame = np.repeat(np.arange(len(pred.natoms)), pred.natoms)
    sq = ((pred.forces - pred.forces_ref) ** 2).sum(1)  # [N]
    forces = np.sqrt(np.bincount(frame, sq, len(pred.natoms)) / (3 * pred.natoms))
    forces[~pred.has_forces] = np.nan
    return {"energy": np.abs(pred.energy - pred.energy_ref) / pred.natoms, "forces": forces}


def _rank(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given their average rank (as ``scipy.stats.rankdata``)."""
    order = np.argsort(x, kind="stable")
    sorted_x = x[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_x)) + 1]
    ends = np.r_[starts[1:], len(x)]
    avg = (starts + ends + 1) / 2.0  # average of ranks start+1 .. end
    ranks = np.empty(len(x))
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two [F] arrays (pairs with a NaN are dropped); NaN if undefined."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    keep = np.isfinite(a) & np.isfinite(b)
    if keep.sum() < 3:
        return float("nan")
    ra, rb = _rank(a[keep]), _rank(b[keep])
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = np.sqrt((ra**2).sum() * (rb**2).sum())
    return float((ra * rb).sum() / denom) if denom > 0 else float("nan")


def calibration_metrics(pred: Predictions, calibration: Calibration | None = None) -> dict[str, float]:
    """How well the committee's calibrated spread predicts the error of its mean.

    Args:
        pred: committee predictions (calibrated and raw spreads).
        calibration: the committee's, to report its laws (``calibration_{q}_a``/``_b``).

    Returns:
        ``spearman_energy`` (energy std per atom vs |dE|/N), ``spearman_forces`` (RMS force std
        vs force RMSE), ``spearman_forces_atoms`` (a per-atom diagnostic: norm of the force std
        vs norm of the force error), the RMS spreads ``energy_spread_mev_per_atom`` and
        ``force_spread_mev_per_A`` (and their ``_raw`` values), ``calibration_energy``/
        ``calibration_forces``: RMS error over RMS spread (1 for a calibrated committee), and per
        quantity ``coverage_1sigma_{q}``, ``coverage_2sigma_{q}``, ``miscalibration_area_{q}`` and
        ``nll_{q}`` (Gaussian, errors in meV/atom and meV/Angstrom).
    """
    if pred.energy_std is None or pred.forces_std is None:
        raise ValueError("calibration_metrics: predictions carry no committee spread")
    spread = frame_spread(pred.energy_std, pred.forces_std, pred.natoms)
    err = frame_errors(pred)
    f_mask = pred.atom_has_forces
    f_err = (pred.forces - pred.forces_ref)[f_mask]
    f_spread = pred.forces_std[f_mask]
    ok = np.isfinite(err["energy"])
    metrics = {
        "spearman_energy": spearman(spread["energy"], err["energy"]),
        "spearman_forces": spearman(spread["forces"], err["forces"]),
        "spearman_forces_atoms": spearman(np.linalg.norm(f_spread, axis=1), np.linalg.norm(f_err, axis=1)),
        "energy_spread_mev_per_atom": 1000 * _rms(spread["energy"]),
        "force_spread_mev_per_A": 1000 * _rms(f_spread),
        "calibration_energy": _rms(err["energy"][ok]) / _rms(spread["energy"][ok]) if ok.any() else math.nan,
        "calibration_forces": _rms(f_err) / _rms(f_spread) if f_spread.size else math.nan,
    }
    if pred.energy_std_raw is not None:
        metrics["energy_spread_raw_mev_per_atom"] = 1000 * _rms(pred.energy_std_raw / pred.natoms)
        metrics["force_spread_raw_mev_per_A"] = 1000 * _rms(pred.forces_std_raw[f_mask])
    for q, (e, sigma, _) in calibration_samples(pred, raw=False).items():
        metrics.update({f"{k}_{q}": v for k, v in uncertainty_scores(1000 * e, 1000 * sigma).items()})
    if calibration is not None:
        for q in CALIBRATED:
            law = getattr(calibration, q)
            metrics[f"calibration_{q}_a"], metrics[f"calibration_{q}_b"] = law.a, law.b
    return metrics


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x)))) if np.size(x) else math.nan
