"""``pbcgnn md``: molecular dynamics of a structure with a trained checkpoint (ASE or OpenMM)."""
from __future__ import annotations

import click

from pbcgnn.md.config import ENGINES, ENSEMBLES, MDConfig

from .options import model_options, read_structure, structure_options

_C = MDConfig()


@click.command()
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False))
@structure_options
@click.option("--repeat", type=click.IntRange(min=1), nargs=3, default=(1, 1, 1), show_default=True,
              help="Replicate the cell, e.g. 2 2 2 for 8x the atoms.")
@click.option("--engine", type=click.Choice(ENGINES), default=_C.engine, show_default=True)
@click.option("--ensemble", type=click.Choice(ENSEMBLES), default=_C.ensemble, show_default=True,
              help="nve: Verlet; nvt: Langevin; npt: MTK (ase) or Langevin + Monte Carlo barostat (openmm).")
@click.option("--temperature", type=click.FloatRange(min=0), default=_C.temperature_K, show_default=True,
              help="Target temperature in K (and of the initial velocities).")
@click.option("--timestep", type=click.FloatRange(min=0, min_open=True), default=_C.timestep_fs, show_default=True,
              help="Time step in fs.")
@click.option("--steps", type=click.IntRange(min=0), default=_C.steps, show_default=True,
              help="MD steps (0: evaluate and write the starting state only).")
@click.option("--friction", type=click.FloatRange(min=0, min_open=True), default=_C.friction_per_ps,
              show_default=True, help="Langevin friction in 1/ps (nvt; npt with openmm).")
@click.option("--pressure", type=float, default=_C.pressure_bar, show_default=True, help="Pressure in bar (npt).")
@click.option("--initial-temperature", type=click.FloatRange(min=0), default=None,
              help="Temperature of the Maxwell-Boltzmann velocities in K [default: --temperature].")
@click.option("--velocities", type=click.Choice(["maxwell", "file"]), default=_C.velocities, show_default=True,
              help="maxwell: draw them (seeded); file: keep the structure's momenta.")
@click.option("--seed", type=click.IntRange(min=0), default=_C.seed, show_default=True)
@click.option("--interval", type=click.IntRange(min=1), default=_C.interval, show_default=True,
              help="Steps between thermo.csv rows and trajectory frames.")
@click.option("--skin", type=click.FloatRange(min=0), default=_C.skin, show_default=True,
              help="Verlet skin of the neighbour list in A (0: rebuild every step).")
@click.option("--openmm-platform", default=_C.openmm_platform, show_default=True,
              help="OpenMM platform (Reference keeps positions in double precision).")
@click.option("--beads", type=click.IntRange(min=1), default=_C.beads, show_default=True,
              help="Ring-polymer beads: path-integral MD (openmm; nvt or nve). 1: classical.")
@model_options
@click.option("--out", type=click.Path(file_okay=False), default="runs/md", show_default=True,
              help="Folder for trajectory.xyz, thermo.csv and run.json.")
@click.option("--analyze", "do_analyze", is_flag=True, help="Run `pbcgnn analyze` on OUT afterwards.")
@click.option("--progress/--no-progress", default=True, show_default=True)
def md(checkpoint, structure, frame, fmt, length_unit, energy_unit, repeat, engine, ensemble, temperature, timestep,
       steps, friction, pressure, initial_temperature, velocities, seed, interval, skin, openmm_platform, beads,
       tabulate, device, dtype, out, do_analyze, progress) -> None:
    """Run MD of a STRUCTURE frame with the potential in CHECKPOINT.

    Writes OUT/trajectory.xyz (extended XYZ with energies and forces), OUT/thermo.csv (time in
    ps; energies in eV; temperature in K; volume in A^3) and OUT/run.json (speed in ns/day).
    """
    from pbcgnn.device import resolve_device
    from pbcgnn.errors import ensure_writable_dir
    from pbcgnn.md import run_md

    dev = str(resolve_device(device))
    ensure_writable_dir(out)
    config = MDConfig(engine=engine, ensemble=ensemble, temperature_K=temperature, timestep_fs=timestep,
                      steps=steps, friction_per_ps=friction, pressure_bar=pressure,
                      initial_temperature_K=initial_temperature, velocities=velocities, seed=seed,
                      interval=interval, skin=skin, openmm_platform=openmm_platform, beads=beads,
                      tabulate=tabulate).validate()
    atoms = read_structure(structure, frame, fmt, length_unit, energy_unit)
    if tuple(repeat) != (1, 1, 1):
        atoms = atoms.repeat(tuple(repeat))
    result = run_md(checkpoint, atoms, config, out, device=dev, dtype=dtype,
                    progress=progress)
    if result.steps_per_s is None:  # --steps 0: the starting state only, no speed to report
        click.echo(f"0 steps: the starting state of {len(atoms)} atoms evaluated and written, no dynamics run")
    else:
        click.echo(f"{result.steps} steps of {timestep:g} fs ({result.steps * timestep * 1e-3:g} ps), {len(atoms)} "
                   f"atoms, {engine} {ensemble}: {result.steps_per_s:.3g} steps/s, {result.ns_per_day:.3g} ns/day, "
                   f"{result.rebuilds} neighbour-list builds")
    click.echo(f"wrote {out}/trajectory.xyz, thermo.csv, run.json")
    if do_analyze:
        from .analyze import report

        report(out, out, r_max=6.0, nbins=120, skip_ps=0.0)
