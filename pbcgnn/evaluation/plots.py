"""Parity, calibration and learning-curve plots, drawn on matplotlib's Agg canvas (no pyplot, no global backend)."""
from __future__ import annotations

import os

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

from .calibration import binned_rms
from .predict import Predictions
from .running import RunningMetrics

__all__ = ["parity_plot", "calibration_plot", "learning_curve_plot"]


def _running(pred: Predictions | RunningMetrics) -> RunningMetrics:
    return pred if isinstance(pred, RunningMetrics) else RunningMetrics.of(pred)


def parity_plot(pred: Predictions | RunningMetrics, path: str | os.PathLike) -> None:
    """Energy per atom (eV/atom) and force components (eV/Angstrom), predicted vs reference.

    Every frame's energy is drawn; the forces of predictions added to a :class:`RunningMetrics`
    are its sample (every atom up to :data:`~pbcgnn.evaluation.running.SAMPLE_ATOMS`, then a
    seeded random subset of that many), those of :class:`Predictions` all.
    """
    running = _running(pred)
    m = running.metrics()
    fig = Figure(figsize=(10, 4.6), layout="constrained")  # a figure of its own: pyplot's state untouched
    ax_e, ax_f = fig.subplots(1, 2)
    e_ref, e, f_ref, f = running.parity_points()
    _panel(ax_e, e_ref, e, "energy per atom (eV/atom)",
           f"RMSE {m['energy_rmse_mev_per_atom']:.2f} meV/atom, MAE {m['energy_mae_mev_per_atom']:.2f}")
    _panel(ax_f, f_ref, f, "force component (eV/A)",
           f"RMSE {m['force_rmse_mev_per_A']:.1f} meV/A, MAE {m['force_mae_mev_per_A']:.1f}"
           + _sampled(running))
    fig.suptitle(f"{m['n_frames']} frames, {m['n_atoms']} atoms")
    fig.savefig(path, dpi=120)


def _panel(ax, ref: np.ndarray, pred: np.ndarray, label: str, title: str) -> None:
    if ref.size:
        lo, hi = float(min(ref.min(), pred.min())), float(max(ref.max(), pred.max()))
        ax.plot([lo, hi], [lo, hi], color="0.6", lw=1)
        ax.scatter(ref, pred, s=4, alpha=0.5, rasterized=True)
    ax.set_xlabel(f"reference {label}")
    ax.set_ylabel(f"predicted {label}")
    ax.set_title(title, fontsize=10)


def _sampled(running: RunningMetrics) -> str:
    """A title's note that the force panel shows a sample, when it does."""
    sample = running.sample
    return f"\n{len(sample.rows)} of {sample.seen} atoms drawn" if sample.seen > len(sample.rows) else ""


def calibration_plot(pred: Predictions | RunningMetrics, path: str | os.PathLike, bins: int = 10) -> None:
    """A committee's calibrated spread against the error of its mean, for the energy per atom
    (meV/atom, one sample per frame) and the force components (meV/Angstrom), on log axes: every
    sample faint, the RMS error of bins of similar spread against their RMS spread
    (:func:`pbcgnn.evaluation.calibration.binned_rms`), and the diagonal a calibrated committee
    follows. Force components are those of the sample, as in :func:`parity_plot`."""
    running = _running(pred)
    m = running.metrics()
    fig = Figure(figsize=(10, 4.6), layout="constrained")
    axes = fig.subplots(1, 2)
    units = {"energy": "meV/atom", "forces": "meV/A"}
    for ax, (key, (err, sigma)) in zip(axes, running.calibration_points().items()):
        x, y = 1000 * sigma, 1000 * np.abs(err)
        ok = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
        if ok.any():
            bx, by = binned_rms(1000 * err[ok], x[ok], bins)
            lo, hi = float(min(x[ok].min(), y[ok].min())), float(max(x[ok].max(), y[ok].max(), by.max()))
            ax.plot([lo, hi], [lo, hi], color="0.6", lw=1, label="error = spread")
            ax.scatter(x[ok], y[ok], s=3, alpha=0.15, color="0.4", rasterized=True, label="|error| per sample")
            ax.plot(bx, by, marker="o", color="C1", label=f"RMS error in {len(bx)} bins")
            _log_axes(ax, lo, hi)
            ax.legend(loc="upper left", fontsize=8)
        ax.set_xlabel(f"calibrated committee spread ({units[key]})")
        ax.set_ylabel(f"error of the mean ({units[key]})")
        covered = 100 * m[f"coverage_1sigma_{key}"]
        ax.set_title(f"{key}: Spearman {m[f'spearman_{key}']:.2f}, within 1 sigma {covered:.0f} % (ideal 68), "
                     f"NLL {m[f'nll_{key}']:.2f}", fontsize=9)
    fig.suptitle(f"{m['n_frames']} frames, committee calibration" + _sampled(running).replace("\n", ", "))
    fig.savefig(path, dpi=120)


def _log_axes(ax, lo: float, hi: float) -> None:
    ax.set_xscale("log")
    ax.set_yscale("log")
    subs = (1.0, 2.0, 5.0) if hi / lo < 100 else (1.0,)  # narrow ranges: more labels
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(LogLocator(base=10, subs=subs))
        axis.set_major_formatter(FormatStrFormatter("%g"))
        axis.set_minor_formatter(NullFormatter())


def learning_curve_plot(panels: dict[str, dict[str, dict[int, float]]], path: str | os.PathLike,
                        title: str = "") -> None:
    """Error vs number of training frames on log-log axes: one panel per quantity, one line per method.

    Args:
        panels: axis label (with unit) -> method name -> {frames: error}.
        path: the PNG to write.
        title: figure title.
    """
    fig = Figure(figsize=(5.2 * len(panels), 4.2), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)
    for ax, (ylabel, curves) in zip(axes[0], panels.items()):
        for name, points in curves.items():
            ks = sorted(k for k, v in points.items() if np.isfinite(v))
            if ks:
                ax.plot(ks, [points[k] for k in ks], marker="o", label=name)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("training frames of the target data")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=120)
