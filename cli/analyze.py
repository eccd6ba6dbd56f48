"""``pbcgnn analyze``: RDFs, temperature and energy plots, NVE drift and density of an MD run."""
from __future__ import annotations

import click


def report(run_dir, out, r_max: float, nbins: int, skip_ps: float) -> None:
    """Analyse and print the summary (shared with ``pbcgnn md --analyze``)."""
    from pbcgnn.analysis import analyze

    s = analyze(run_dir, out, r_max=r_max, nbins=nbins, skip_ps=skip_ps)
    t, d = s["temperature_K"], s["density_g_cm3"]
    run = f"i-PI, {s['ipi_beads']} bead trajectories" if s["ipi_beads"] else s["ensemble"] or "unknown ensemble"
    click.echo(f"{s['frames']} frames from {s['time_ps'][0]:g} to {s['time_ps'][1]:g} ps ({run}, {s['natoms']} atoms)")
    click.echo(f"  temperature    {t['mean']:.1f} +- {t['std']:.1f} K")
    click.echo(f"  density        {d['mean']:.4f} +- {d['std']:.4f} g/cm^3")
    click.echo(f"  energy drift   {s['energy_drift_mev_per_atom_per_ps']:.4g} meV/atom/ps"
               + ("" if s["ensemble"] in (None, "nve") else " (not conserved in this ensemble)"))
    click.echo("  RDF peaks      " + ", ".join(f"{k} {v:.2f} A" for k, v in s["rdf_peak_A"].items()))
    out = out or run_dir
    click.echo(f"wrote {out}/rdf.csv, rdf.png, thermo.png, analysis.json")


@click.command()
@click.argument("run_dir", metavar="DIR", type=click.Path(exists=True, file_okay=False))
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Output folder [default: DIR].")
@click.option("--r-max", type=click.FloatRange(min=0, min_open=True), default=6.0, show_default=True,
              help="Largest RDF distance in A.")
@click.option("--bins", type=click.IntRange(min=1), default=120, show_default=True, help="RDF bins.")
@click.option("--skip", "skip_ps", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Leave out the first SKIP ps (equilibration).")
def analyze(run_dir, out, r_max, bins, skip_ps) -> None:
    """Analyse the MD run in DIR (written by `pbcgnn md`, or by i-PI with `pbcgnn ipi` clients).

    Writes rdf.csv and rdf.png (every element pair, e.g. O-O, O-H, H-H), thermo.png
    (temperature and energies against time) and analysis.json (mean temperature, density in
    g/cm^3, NVE energy drift in meV/atom/ps).

    An i-PI folder (no thermo.csv) needs i-PI's properties file with step, time, potential,
    kinetic_cv or kinetic_md, conserved, temperature and volume, and the bead trajectories
    written by <trajectory format='ase'> positions </trajectory>; its RDFs average over all
    beads and its drift is that of i-PI's conserved quantity.
    """
    report(run_dir, out, r_max, bins, skip_ps)
