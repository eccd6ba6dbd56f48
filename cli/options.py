"""Click options shared by several commands (data units and format)."""
from __future__ import annotations

import click

from pbcgnn.units import ENERGY_UNITS, LENGTH_UNITS


def data_options(f):
    """``--format``, ``--length-unit``, ``--energy-unit`` for commands that read data files."""
    f = click.option(
        "--energy-unit",
        type=click.Choice(list(ENERGY_UNITS), case_sensitive=False),
        default=None,
        help="Energy unit of the data files [default: hartree for n2p2, ev otherwise].",
    )(f)
    f = click.option(
        "--length-unit",
        type=click.Choice(list(LENGTH_UNITS), case_sensitive=False),
        default=None,
        help="Length unit of the data files [default: bohr for n2p2, angstrom otherwise].",
    )(f)
    f = click.option(
        "--format",
        "fmt",
        default=None,
        metavar="FORMAT",
        help="n2p2, or an ASE format name such as extxyz [default: detect].",
    )(f)
    return f


data_paths = click.argument(
    "data", nargs=-1, type=click.Path(exists=True, dir_okay=False, readable=True)
)
