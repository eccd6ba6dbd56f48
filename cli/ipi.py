"""``pbcgnn ipi``: serve a checkpoint's energies, forces and virial to a running i-PI server."""
from __future__ import annotations

import click

from .options import model_options, read_structure, structure_options


@click.command("ipi")
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False))
@structure_options
@click.option("--unix", "unixsocket", metavar="NAME", default=None,
              help="i-PI's unix socket <address> (the file /tmp/ipi_NAME).")
@click.option("--host", default=None, help="i-PI's host, for an inet socket (with --port) [default: localhost].")
@click.option("--port", type=click.IntRange(min=1, max=65535), default=None, help="i-PI's inet port.")
@model_options
def ipi(checkpoint, structure, frame, fmt, length_unit, energy_unit, unixsocket, host, port, tabulate, device,
        dtype) -> None:
    """Be an i-PI force client for the potential in CHECKPOINT until i-PI ends the run.

    STRUCTURE must be the structure i-PI was started with (i-PI sends positions only: the
    elements and their order come from this file). Start i-PI first (i-pi input.xml), then
    one or more clients; i-PI hands each free client a bead. Energies in eV, forces in
    eV/A and the virial go back over the socket; committee checkpoints add their spread as
    i-PI extras (JSON).
    """
    from pbcgnn.calculator import PbcgnnCalculator
    from pbcgnn.device import resolve_device
    from pbcgnn.md.ipi import IPI_LISTS, serve_ipi

    if (unixsocket is None) == (port is None) or (host is not None and port is None):
        raise click.UsageError("give either --unix NAME or --host HOST --port PORT")
    atoms = read_structure(structure, frame, fmt, length_unit, energy_unit)
    calc = PbcgnnCalculator.from_checkpoint(checkpoint, device=str(resolve_device(device)), dtype=dtype,
                                            tabulate=tabulate, lists=IPI_LISTS)
    result = serve_ipi(calc, atoms, unixsocket=unixsocket, host=host or "localhost", port=port)
    click.echo(f"i-PI ended the run: {result.requests} force requests served ({len(atoms)} atoms) in "
               f"{result.wall_s:.1f} s, {calc.rebuilds} neighbour-list builds")
