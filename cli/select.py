"""``pbcgnn select``: the pool frames a committee disagrees on most, for the next reference calculation."""
from __future__ import annotations

import click

from .options import data_options, tabulate_option


@click.command(name="select")
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False))
@click.argument("pool", type=click.Path(exists=True, dir_okay=False, readable=True))
@data_options
@click.option("--n", "n", type=click.IntRange(min=1), required=True, help="How many frames to select.")
@click.option("--out", type=click.Path(dir_okay=False), required=True,
              help="Output file: n2p2 for input.data or *.data, extended XYZ for *.xyz.")
@click.option("--out-format", type=click.Choice(["n2p2", "extxyz"]), default=None,
              help="Output format [default: from the --out name].")
@click.option("--by", type=click.Choice(["forces", "max_force", "energy"]), default="forces", show_default=True,
              help="Calibrated spread to rank by: RMS force std, largest atomic force std, or energy std per atom.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:K.")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True)
@tabulate_option
def select(checkpoint, pool, fmt, length_unit, energy_unit, n, out, out_format, by, device, batch_size,
           tabulate) -> None:
    """Rank the frames of POOL (e.g. an MD trajectory) by the disagreement of the committee
    CHECKPOINT and write the N most informative ones to OUT (query by committee).

    Spreads are the committee's calibrated standard deviations (the members' raw ones for a
    checkpoint without a calibration; see `pbcgnn calibrate`), in meV/A (forces) or meV/atom (energy).
    POOL of any size is read as it goes (checked, scored, then the chosen frames picked out), in
    bounded memory.
    """
    from pbcgnn.device import resolve_device
    from pbcgnn.select import select_frames

    rows = select_frames(checkpoint, pool, n, out, by=by, out_format=out_format, format=fmt,
                         length_unit=length_unit, energy_unit=energy_unit, device=str(resolve_device(device)),
                         batch_size=batch_size, tabulate=tabulate)
    click.echo(f"{'rank':>4}  {'frame':>6}  {'F spread':>9}  {'max F sd':>9}  {'E spread':>9}")
    click.echo(f"{'':>4}  {'':>6}  {'meV/A':>9}  {'meV/A':>9}  {'meV/atom':>9}")
    for rank, row in enumerate(rows, 1):
        click.echo(f"{rank:>4}  {row['pool_index']:>6}  {1000 * row['forces']:>9.2f}  "
                   f"{1000 * row['max_force']:>9.2f}  {1000 * row['energy']:>9.3f}")
    click.echo(f"wrote {len(rows)} frames to {out}")
