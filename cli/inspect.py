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
    and the command exits 1. Files are read one frame at a time: any size fits in memory.
    """
    from pbcgnn.dataset import summarize_frames
    from pbcgnn.io import iter_frames

    for path in data:
        s = summarize_frames(iter_frames(path, format=fmt, length_unit=length_unit, energy_unit=energy_unit,
                                         require_energy=not structures, energy_key=energy_key,
                                         forces_key=forces_key, stress_key=stress_key))
        click.echo(f"{path}")
        click.echo(f"  frames        {s.frames} ({s.with_forces} with forces)")
        click.echo(f"  atoms/frame   {s.atoms_min}-{s.atoms_max} ({s.atoms} in all)")
        click.echo(f"  elements      {' '.join(sorted(s.symbols))}")
        if s.energy_range is not None:
            click.echo(f"  energy/atom   {s.energy_range[0]:.6f} to {s.energy_range[1]:.6f} eV")
        if s.volume_range is not None:
            click.echo(f"  cell volume   {s.volume_range[0]:.2f} to {s.volume_range[1]:.2f} A^3")
