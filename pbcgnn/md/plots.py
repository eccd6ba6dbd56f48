"""Figures of MD runs: radial distribution functions and temperature/energy time series."""
from __future__ import annotations

import os

import numpy as np
from matplotlib.figure import Figure

__all__ = ["plot_rdf", "plot_thermo"]


def _figure(**kwargs) -> Figure:
    """A figure on the Agg canvas of its own: no pyplot, so the process's backend is untouched."""
    return Figure(layout="constrained", **kwargs)


def plot_rdf(r: np.ndarray, curves: dict[str, np.ndarray], path: str | os.PathLike, title: str = "") -> None:
    """g(r) of each pair (e.g. ``{"O-O": g, "O-H": g, "H-H": g}``) against r in Angstrom. A peak more
    than three times higher than every other curve's (water's O-H bond) is clipped."""
    fig = _figure(figsize=(6, 4.2))
    ax = fig.subplots()
    for name, g in curves.items():
        ax.plot(r, g, label=name)
    ax.axhline(1.0, color="0.7", lw=0.8)
    peaks = sorted((float(np.max(g)) for g in curves.values()), reverse=True)
    if len(peaks) > 1 and peaks[0] > 3 * peaks[1]:  # e.g. water's intramolecular O-H: clip it
        ax.set_ylim(0, 1.3 * peaks[1])
        ax.text(0.98, 0.02, f"highest peak {peaks[0]:.3g}, clipped", transform=ax.transAxes, ha="right",
                fontsize=8, color="0.4")
    ax.set_xlabel("r (A)")
    ax.set_ylabel("g(r)")
    ax.set_xlim(0, float(r[-1]) + 0.5 * float(r[1] - r[0]))
    ax.legend()
    if title:
        ax.set_title(title, fontsize=10)
    fig.savefig(path, dpi=120)


def plot_thermo(thermo: dict[str, np.ndarray], path: str | os.PathLike, natoms: int | None = None) -> None:
    """Temperature (K), energies (eV, relative to the first total energy) and, when it
    changes, the volume (Angstrom^3) against time in ps."""
    t = thermo["time_ps"]
    volume = thermo["volume_A3"]
    panels = 3 if np.ptp(volume) > 0 else 2
    fig = _figure(figsize=(7, 2.4 * panels))
    axes = fig.subplots(panels, 1, sharex=True)
    axes[0].plot(t, thermo["temperature_K"], lw=0.8)
    axes[0].set_ylabel("T (K)")
    e0 = thermo["total_eV"][0]
    for key, label in (("potential_eV", "potential"), ("kinetic_eV", "kinetic"), ("total_eV", "total")):
        base = e0 if key == "total_eV" else thermo[key][0]
        axes[1].plot(t, thermo[key] - base, lw=0.8, label=label)
    axes[1].set_ylabel("E - E(0) (eV)")
    axes[1].legend(fontsize=8)
    if panels == 3:
        axes[2].plot(t, volume, lw=0.8)
        axes[2].set_ylabel("V (A^3)")
    axes[-1].set_xlabel("time (ps)")
    if natoms:
        axes[0].set_title(f"{natoms} atoms", fontsize=10)
    fig.savefig(path, dpi=120)
