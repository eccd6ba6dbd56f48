"""Classical against path-integral RDFs of two i-PI runs (run.py's OUT folders): peak heights and widths.

    python benchmarks/md/ipi/compare.py runs/ipi/classical runs/ipi/pimd8 --skip 0.2 --out benchmarks/md/ipi

Each run is analysed with `pbcgnn.analysis.analyze` (i-PI folders: RDFs averaged over all beads,
0.01 A bins) into RUN/analysis; then OUT/ipi_water.json holds, per run, the intramolecular O-H
peak (position, height, full width at half maximum), the first intermolecular O-O peak
(position, height, between 2.4 and 3.2 A), the intramolecular H-H peak, the mean temperature,
the centroid-virial kinetic energy per atom (i-PI's kinetic_cv) and the length of the run, and
OUT/ipi_water_rdf.png plots O-O, O-H and H-H of both. Each peak height and width comes with its
standard error over 4 consecutive blocks of the run (frames 10 fs apart are correlated, so the
blocks are the honest unit).
"""
from __future__ import annotations

import argparse
import json
from itertools import pairwise
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from pbcgnn.analysis import analyze, rdf, read_run

#: Peak: (pair, window in A, RDF bins on [0, 6] A). The O-H bond needs 0.01 A bins; the broader
#: O-O and H-H peaks are read from 0.05 A bins, which have less noise.
PEAKS = {"OH_intramolecular": (("O", "H"), 0.8, 1.3, 600), "OO_first": (("O", "O"), 2.4, 3.2, 120),
         "HH_intramolecular": (("H", "H"), 1.3, 1.9, 120)}
BLOCKS = 4  #: consecutive blocks of time for the standard errors


def peak(r: np.ndarray, g: np.ndarray, lo: float, hi: float) -> dict[str, float]:
    """Highest point of g in [lo, hi] A, and its full width at half maximum (linear interpolation)."""
    window = np.flatnonzero((r >= lo) & (r <= hi))
    k = window[np.argmax(g[window])]
    half = g[k] / 2
    left, right = k, k
    while left > 0 and g[left] > half:
        left -= 1
    while right < len(g) - 1 and g[right] > half:
        right += 1
    r_left = np.interp(half, [g[left], g[left + 1]], [r[left], r[left + 1]])
    r_right = np.interp(half, [g[right], g[right - 1]], [r[right], r[right - 1]])
    return {"r_A": float(r[k]), "height": float(g[k]), "fwhm_A": float(r_right - r_left)}


def peaks(frames: list, blocks: int = BLOCKS) -> tuple[dict, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Each peak of :data:`PEAKS` in the RDF of all ``frames`` (``{name: (r, g)}`` too), with the
    standard error of its height and width over ``blocks`` consecutive blocks of time (None
    when the frames span fewer distinct times than blocks)."""
    times = np.array([f.info["time_ps"] for f in frames])
    edges = np.linspace(times.min(), times.max() + 1e-9, blocks + 1)
    parts = [[f for f, t in zip(frames, times) if a <= t < b] for a, b in pairwise(edges)]
    numbers, curves = {}, {}
    for name, (pair, lo, hi, nbins) in PEAKS.items():
        curves["-".join(pair)] = r, g = rdf(frames, pair, 6.0, nbins)
        numbers[name] = peak(r, g, lo, hi)
        per_block = [peak(*rdf(part, pair, 6.0, nbins), lo, hi) for part in parts] if all(parts) else None
        for key in ("height", "fwhm_A"):
            numbers[name][f"{key}_err"] = None if per_block is None else \
                float(np.std([b[key] for b in per_block], ddof=1) / np.sqrt(blocks))
    return numbers, curves


def summarise(run: Path, skip_ps: float) -> tuple[dict, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """(numbers, {pair: (r, g)}) of one i-PI run."""
    s = analyze(run, run / "analysis", r_max=6.0, nbins=600, skip_ps=skip_ps)
    thermo, frames, _ = read_run(run, skip_ps)
    numbers, curves = peaks(frames)
    numbers = {
        "beads": s["ipi_beads"], "frames": s["frames"], "analysed_ps": s["time_ps"],
        "temperature_K": s["temperature_K"], "density_g_cm3": s["density_g_cm3"]["mean"],
        "conserved_drift_mev_per_atom_per_ps": s["energy_drift_mev_per_atom_per_ps"],
        "kinetic_cv_meV_per_atom": 1e3 * float(thermo["kinetic_eV"][thermo["time_ps"] >= skip_ps].mean()) / s["natoms"],
        **numbers,
    }
    run_json = run / "run.json"
    if run_json.is_file():
        numbers["run"] = json.loads(run_json.read_text())
    return numbers, curves


def plot(results: dict, path: Path) -> None:
    """O-H (0.01 A bins), O-O and H-H (0.05 A bins) of every run."""
    fig = Figure(figsize=(10, 3.4), layout="constrained")
    axes = fig.subplots(1, 3)
    for label, (_, curves) in results.items():
        for ax, (name, lo, hi) in zip(axes, (("O-H", 0.75, 1.35), ("O-O", 2.2, 6.0), ("H-H", 1.2, 6.0))):
            r, g = curves[name]
            keep = (r >= lo) & (r <= hi)
            ax.plot(r[keep], g[keep], label=label, lw=1.2)
            ax.set_title(name + (" (intramolecular)" if name == "O-H" else ""), fontsize=10)
            ax.set_xlabel("r (A)")
    axes[0].set_ylabel("g(r)")
    axes[0].legend(fontsize=8)
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("classical", type=Path)
    parser.add_argument("pimd", type=Path)
    parser.add_argument("--skip", type=float, default=0.2, help="ps of equilibration left out")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent)
    args = parser.parse_args(argv)
    results = {}
    for label, run in (("classical (1 bead)", args.classical), ("PIMD", args.pimd)):
        results[label] = summarise(run, args.skip)
    pimd_label = f"PIMD ({results['PIMD'][0]['beads']} beads)"
    results[pimd_label] = results.pop("PIMD")
    numbers = {label: value[0] for label, value in results.items()}
    numbers["skip_ps"] = args.skip
    (args.out / "ipi_water.json").write_text(json.dumps(numbers, indent=2))
    plot(results, args.out / "ipi_water_rdf.png")
    for label, n in numbers.items():
        if isinstance(n, dict):
            oh, oo = n["OH_intramolecular"], n["OO_first"]
            print(f"{label}: O-H {oh['r_A']:.3f} A, height {oh['height']:.2f} +- {oh['height_err']}, FWHM "
                  f"{oh['fwhm_A']:.3f} +- {oh['fwhm_A_err']} A; O-O {oo['r_A']:.3f} A, height {oo['height']:.2f} "
                  f"+- {oo['height_err']}; T {n['temperature_K']['mean']:.0f} K")
    return numbers


if __name__ == "__main__":
    main()
