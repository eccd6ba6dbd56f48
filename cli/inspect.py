"""``pbcgnn inspect``: read data files, check them as training would, and print what pbcgnn sees."""
from __future__ import annotations

import click

from .options import data_options, label_key_options


@click.command()
@click.argument("data", nargs=-1, required=True, type=click.Path())
@data_options
@label_key_options
@click.option("--structures", is_flag=True,
              help="Frames need no energy (structures for md or select) [default: every frame needs one, "
                   "as for train].")
def inspect(data: tuple[str, ...], fmt: str | None, length_unit: str | None, energy_unit: str | None,
            energy_key: str | None, forces_key: str | None, stress_key: str | None, structures: bool) -> None:
    """Check DATA files and summarise them in eV and Angstrom.

    Every frame is read and checked as `pbcgnn train` checks it (a frame without an energy,
    overlapping atoms, ...); the first problem is reported with its file and line (or frame)
    and the command exits 1.
    """
    import numpy as np

    from pbcgnn.dataset import check_frames
    from pbcgnn.io import read_frames

    for path in data:
        frames = read_frames(path, format=fmt, length_unit=length_unit, energy_unit=energy_unit,
                             require_energy=not structures, energy_key=energy_key, forces_key=forces_key,
                             stress_key=stress_key)
        check_frames(frames)
        natoms = np.array([len(a) for a in frames])
        symbols = sorted({s for a in frames for s in a.get_chemical_symbols()})
        energies = [a.calc.results["energy"] / len(a) for a in frames if a.calc is not None and "energy" in a.calc.results]
        with_forces = sum(bool(a.info.get("has_forces", False)) for a in frames)
        click.echo(f"{path}")
        click.echo(f"  frames        {len(frames)} ({with_forces} with forces)")
        click.echo(f"  atoms/frame   {natoms.min()}-{natoms.max()} ({natoms.sum()} in all)")
        click.echo(f"  elements      {' '.join(symbols)}")
        if energies:
            click.echo(f"  energy/atom   {min(energies):.6f} to {max(energies):.6f} eV")
        volumes = [a.cell.volume for a in frames if a.pbc.all()]
        if volumes:
            click.echo(f"  cell volume   {min(volumes):.2f} to {max(volumes):.2f} A^3")
