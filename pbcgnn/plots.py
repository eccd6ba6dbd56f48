"""Parity plots of predictions against references; the only module importing matplotlib."""
from __future__ import annotations

import os

import numpy as np

from .evaluate import Predictions, error_metrics

__all__ = ["parity_plot"]


def parity_plot(pred: Predictions, path: str | os.PathLike) -> None:
    """Energy per atom (eV/atom) and force components (eV/Angstrom), predicted vs reference."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    m = error_metrics(pred)
    fig, (ax_e, ax_f) = plt.subplots(1, 2, figsize=(10, 4.6), constrained_layout=True)
    e_ref, e = pred.energy_ref / pred.natoms, pred.energy / pred.natoms
    _panel(ax_e, e_ref, e, "energy per atom (eV/atom)",
           f"RMSE {m['energy_rmse_mev_per_atom']:.2f} meV/atom, MAE {m['energy_mae_mev_per_atom']:.2f}")
    mask = pred.atom_has_forces
    _panel(ax_f, pred.forces_ref[mask].ravel(), pred.forces[mask].ravel(), "force component (eV/A)",
           f"RMSE {m['force_rmse_mev_per_A']:.1f} meV/A, MAE {m['force_mae_mev_per_A']:.1f}")
    fig.suptitle(f"{m['n_frames']} frames, {m['n_atoms']} atoms")
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _panel(ax, ref: np.ndarray, pred: np.ndarray, label: str, title: str) -> None:
    if ref.size:
        lo, hi = float(min(ref.min(), pred.min())), float(max(ref.max(), pred.max()))
        ax.plot([lo, hi], [lo, hi], color="0.6", lw=1)
        ax.scatter(ref, pred, s=4, alpha=0.5, rasterized=True)
    ax.set_xlabel(f"reference {label}")
    ax.set_ylabel(f"predicted {label}")
    ax.set_title(title, fontsize=10)
