"""Metrics of predictions that arrive a chunk of frames at a time, in memory that does not grow with the atoms.

:class:`RunningMetrics` gives the numbers of :func:`pbcgnn.evaluation.metrics.prediction_metrics`
over all the chunks added (:func:`pbcgnn.evaluation.predict.graph_chunks`), keeping:

* sums over force components (squared and absolute errors, squared spreads, coverage counts,
  the Gaussian NLL): the force RMSE and MAE, RMS spreads, coverage and NLL, exact up to the order
  of summation (about 1e-15 relative);
* per-frame scalars (atoms, energies, spreads, per-frame force errors: a few 8-byte numbers per
  frame): every energy metric and the per-frame Spearman correlations, exactly;
* a uniform random sample of at most :data:`SAMPLE_ATOMS` atoms with reference forces
  (:class:`ReservoirSample`, seeded: the same sample however the stream is cut) for what needs
  every force component at once: the parity and calibration plots, ``spearman_forces_atoms`` and
  ``miscalibration_area_forces``. With fewer atoms the sample holds them all, in order, and these
  are exact too; with more, they are estimates from the sample.
"""
from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

from ..model.calibration import CALIBRATED, Calibration
from .calibration import gaussian_nll, miscalibration_area, uncertainty_scores
from .metrics import frame_errors, frame_spread, spearman
from .predict import Predictions

__all__ = ["RunningMetrics", "ReservoirSample", "SAMPLE_ATOMS", "SAMPLE_SEED"]

#: Atoms with forces kept for plots and per-component scores: 200,000 force components at most.
SAMPLE_ATOMS = 200_000 // 3
#: Seed of the sample's random keys: the same points are drawn on every run.
SAMPLE_SEED = 0


class ReservoirSample:
    """A uniform random sample of at most ``size`` rows of a stream, kept in stream order.

    Every row offered gets a uniform random key from a generator seeded with ``seed``; the sample
    is the ``size`` rows of smallest key. It depends on the rows and the seed only, not on how
    the stream was cut into :meth:`add` calls, and holds every row while there are at most ``size``.

    Args:
        size: rows kept at most.
        columns: values per row.
        seed: seed of the keys.
    """

    def __init__(self, size: int, columns: int, seed: int = SAMPLE_SEED) -> None:
        if size < 1:
            raise ValueError(f"ReservoirSample: expected a size >= 1, found {size}")
        self.size = size
        self.seen = 0
        self._rng = np.random.default_rng(seed)
        self._keys = np.empty(0)
        self._rows = np.empty((0, columns))

    def add(self, rows: np.ndarray) -> None:
        """Offer the next rows of the stream, [R, columns]."""
        keys = self._rng.random(len(rows))  # one key per row offered, kept or not: cut-independent
        self.seen += len(rows)
        if len(self._keys) == self.size:  # full: only a key below the largest kept can enter
            enter = keys < self._keys.max()
            keys, rows = keys[enter], rows[enter]
        keys, rows = np.concatenate([self._keys, keys]), np.concatenate([self._rows, rows])
        if len(keys) > self.size:
            keep = np.sort(np.argpartition(keys, self.size - 1)[: self.size])  # sorted: stream order
            keys, rows = keys[keep], rows[keep]
        self._keys, self._rows = keys, rows

    @property
    def rows(self) -> np.ndarray:
        """The sample, [K, columns] with K = min(size, seen), in stream order."""
        return self._rows


class RunningMetrics:
    """Errors (and a committee's spread scores) of predictions added chunk by chunk; see the module docstring.

    Args:
        sample_atoms: atoms with forces kept for plots and per-component scores (default
            :data:`SAMPLE_ATOMS`).
    """

    def __init__(self, sample_atoms: int | None = None) -> None:
        self.committee = False
        self._frames: dict[str, list[np.ndarray]] = defaultdict(list)
        self._sums: dict[str, float] = defaultdict(float)
        # per atom: reference forces, predicted forces, calibrated force std (eV/A)
        self.sample = ReservoirSample(SAMPLE_ATOMS if sample_atoms is None else sample_atoms, 9)

    @classmethod
    def of(cls, pred: Predictions) -> RunningMetrics:
        """All of ``pred`` at once, every atom in the sample (plots of predictions held in memory)."""
        running = cls(sample_atoms=max(1, int(pred.natoms.sum())))
        running.add(pred)
        return running

    def add(self, pred: Predictions) -> None:
        """Count in the next chunk of frames (a committee's or a single model's, never mixed)."""
        self.committee = pred.energy_std is not None
        frames = {"natoms": pred.natoms, "energy": pred.energy, "energy_ref": pred.energy_ref}
        mask = pred.atom_has_forces  # [N]
        err = (pred.forces - pred.forces_ref)[mask]  # [A, 3] eV/A
        mev = 1000.0 * err.ravel()  # as error_metrics: meV/A before squaring
        self._sums["f_n"] += mev.size
        self._sums["f_sq"] += float(np.sum(mev**2))
        self._sums["f_abs"] += float(np.sum(np.abs(mev)))
        std = np.full_like(err, np.nan)
        if self.committee:
            std = pred.forces_std[mask]
            frames.update(energy_std=pred.energy_std,
                          force_spread=frame_spread(pred.energy_std, pred.forces_std, pred.natoms)["forces"],
                          force_error=frame_errors(pred)["forces"])
            self._add_spread_sums(mev, std)
            if pred.energy_std_raw is not None:
                frames["energy_std_raw"] = pred.energy_std_raw
                self._sums["std_raw_sq"] += float(np.sum(pred.forces_std_raw[mask] ** 2))
        for key, values in frames.items():
            self._frames[key].append(np.asarray(values))
        self.sample.add(np.concatenate([pred.forces_ref[mask], pred.forces[mask], std], axis=1))

    def _add_spread_sums(self, mev: np.ndarray, std: np.ndarray) -> None:
        """Sums of the force-component scores of :func:`~pbcgnn.evaluation.metrics.calibration_metrics`."""
        sigma = 1000.0 * std.ravel()  # meV/A, as the scores are taken
        self._sums["std_sq"] += float(np.sum(std**2))
        self._sums["within_1"] += int(np.count_nonzero(np.abs(mev) <= 1.0 * sigma))
        self._sums["within_2"] += int(np.count_nonzero(np.abs(mev) <= 2.0 * sigma))
        if mev.size:
            self._sums["nll"] += gaussian_nll(mev, sigma) * mev.size

    def frames(self) -> dict[str, np.ndarray]:
        """Per-frame values, [F] each: ``natoms``, ``energy``, ``energy_ref`` (eV) and for a
        committee ``energy_std``, ``energy_std_raw`` (eV), ``force_spread`` and ``force_error`` (eV/A)."""
        return {key: np.concatenate(parts) for key, parts in self._frames.items()}

    def metrics(self, calibration: Calibration | None = None) -> dict[str, float]:
        """:func:`~pbcgnn.evaluation.metrics.prediction_metrics` of everything added."""
        f, s, nan = self.frames(), self._sums, math.nan
        de = (f["energy"] - f["energy_ref"]) / f["natoms"] * 1000.0  # [F] meV/atom
        n = s["f_n"]
        metrics = {
            "energy_rmse_mev_per_atom": float(np.sqrt(np.mean(de**2))) if de.size else nan,
            "energy_mae_mev_per_atom": float(np.mean(np.abs(de))) if de.size else nan,
            "force_rmse_mev_per_A": math.sqrt(s["f_sq"] / n) if n else nan,
            "force_mae_mev_per_A": s["f_abs"] / n if n else nan,
            "n_frames": int(f["natoms"].size),
            "n_atoms": int(f["natoms"].sum()),
        }
        if self.committee:
            metrics.update(self._spread_metrics(f, calibration))
        return metrics

    def _spread_metrics(self, f: dict[str, np.ndarray], calibration: Calibration | None) -> dict[str, float]:
        """:func:`~pbcgnn.evaluation.metrics.calibration_metrics` from the sums, frames and sample."""
        s, n, nan = self._sums, self._sums["f_n"], math.nan
        e_spread = f["energy_std"] / f["natoms"]  # [F] eV/atom
        e_err = np.abs(f["energy"] - f["energy_ref"]) / f["natoms"]
        ok = np.isfinite(e_err)
        f_err, f_std = self._sampled_errors()
        metrics = {
            "spearman_energy": spearman(e_spread, e_err),
            "spearman_forces": spearman(f["force_spread"], f["force_error"]),
            "spearman_forces_atoms": spearman(np.linalg.norm(f_std, axis=1), np.linalg.norm(f_err, axis=1)),
            "energy_spread_mev_per_atom": 1000 * _rms(e_spread),
            "force_spread_mev_per_A": 1000 * math.sqrt(s["std_sq"] / n) if n else nan,
            "calibration_energy": _rms(e_err[ok]) / _rms(e_spread[ok]) if ok.any() else nan,
            "calibration_forces": math.sqrt(s["f_sq"] / n) / 1000 / math.sqrt(s["std_sq"] / n) if n else nan,
        }
        if "energy_std_raw" in f:
            metrics["energy_spread_raw_mev_per_atom"] = 1000 * _rms(f["energy_std_raw"] / f["natoms"])
            metrics["force_spread_raw_mev_per_A"] = 1000 * math.sqrt(s["std_raw_sq"] / n) if n else nan
        e, sigma = _energy_samples(f)
        metrics.update({f"{k}_energy": v for k, v in uncertainty_scores(1000 * e, 1000 * sigma).items()})
        metrics.update({
            "coverage_1sigma_forces": s["within_1"] / n if n else nan,
            "coverage_2sigma_forces": s["within_2"] / n if n else nan,
            "miscalibration_area_forces": miscalibration_area(1000 * f_err.ravel(), 1000 * f_std.ravel()),
            "nll_forces": s["nll"] / n if n else nan,
        })
        if calibration is not None:
            for q in CALIBRATED:
                law = getattr(calibration, q)
                metrics[f"calibration_{q}_a"], metrics[f"calibration_{q}_b"] = law.a, law.b
        return metrics

    def _sampled_errors(self) -> tuple[np.ndarray, np.ndarray]:
        """The sample's force errors and calibrated force std, [K, 3] eV/A each."""
        rows = self.sample.rows
        return rows[:, 3:6] - rows[:, 0:3], rows[:, 6:9]

    def parity_points(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Reference and predicted energy per atom, [F] eV/atom, and force components of the sample, [3K] eV/A."""
        f, rows = self.frames(), self.sample.rows
        return (f["energy_ref"] / f["natoms"], f["energy"] / f["natoms"], rows[:, 0:3].ravel(),
                rows[:, 3:6].ravel())

    def calibration_points(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """A committee's (error, calibrated spread) samples as
        :func:`~pbcgnn.evaluation.calibration.calibration_samples` gives them: ``energy`` per atom,
        one per frame with a reference energy (eV/atom); ``forces``, components of the sample (eV/A)."""
        f_err, f_std = self._sampled_errors()
        return {"energy": _energy_samples(self.frames()), "forces": (f_err.ravel(), f_std.ravel())}


def _energy_samples(f: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Error of the energy per atom and its calibrated spread, [F'] eV/atom, over frames with a reference energy."""
    err = (f["energy"] - f["energy_ref"]) / f["natoms"]
    ok = np.isfinite(err)
    return err[ok], (f["energy_std"] / f["natoms"])[ok]


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x)))) if np.size(x) else math.nan
