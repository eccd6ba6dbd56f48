"""The ``pbcgnn`` command group: logging set-up and InputError -> one clean line, exit 1.

Each command lives in its own module and imports torch inside its body, so
``pbcgnn --help`` stays fast.
"""
from __future__ import annotations

import logging

import click

from pbcgnn.errors import InputError, TrainingError


class _Group(click.Group):
    """A click group that reports bad user input without a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (InputError, TrainingError) as err:
            raise click.ClickException(str(err)) from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
@click.version_option(package_name="pbcgnn")
def main(verbose: int, quiet: bool) -> None:
    """Machine-learned interatomic potentials for periodic systems (SchNet on PyG).

    Units inside pbcgnn are eV and Angstrom; readers convert on input.
    """
    level = logging.WARNING if quiet else logging.DEBUG if verbose > 1 else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


# Commands register on the group (their heavy imports stay inside their bodies).
from .analyze import analyze  # noqa: E402
from .eval import evaluate  # noqa: E402
from .inspect import inspect  # noqa: E402
from .md import md  # noqa: E402
from .select import select  # noqa: E402
from .train import train  # noqa: E402

for _command in (train, evaluate, inspect, md, analyze, select):
    main.add_command(_command)
