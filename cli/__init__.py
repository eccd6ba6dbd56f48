"""The ``pbcgnn`` command group: logging set-up; bad input and failed writes -> one clean line, exit 1.

Each command lives in its own module and imports torch inside its body, so
``pbcgnn --help`` stays fast.
"""
from __future__ import annotations

import logging

import click

from pbcgnn.errors import InputError, OutputError, TrainingError, first_line

log = logging.getLogger("pbcgnn.cli")


def _os_message(err: OSError) -> str:
    """``path: reason`` of an operating-system error (a full disk, a read-only or missing folder)."""
    if isinstance(err, OutputError) or not err.strerror:
        return str(err) or type(err).__name__
    where = f"{err.filename}: " if err.filename is not None else ""
    return f"{where}{err.strerror}"


class _Group(click.Group):
    """A click group that reports bad user input and failed reads or writes without a traceback.

    An ``OSError`` (disk full, read-only file system, a path through a file) is the machine's
    answer, not a bug in pbcgnn, so it is one line too; ``-vv`` logs its traceback.
    """

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (InputError, TrainingError) as err:
            raise click.ClickException(str(err)) from None
        except OSError as err:
            log.debug("operating-system error", exc_info=True)
            raise click.ClickException(_os_message(err)) from None
        except (MemoryError, RuntimeError) as err:
            if not _out_of_memory(err):
                raise
            log.debug("out of memory", exc_info=True)
            raise click.ClickException("out of memory: try a smaller --batch-size or --cutoff, or fewer frames "
                                       f"({first_line(err)})") from None


def _out_of_memory(err: BaseException) -> bool:
    """Whether ``err`` is the machine running out of memory (torch's CPU or CUDA allocator, Python's)."""
    return (isinstance(err, MemoryError) or type(err).__name__ == "OutOfMemoryError"
            or "can't allocate memory" in str(err) or "CUDA out of memory" in str(err))


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
from .calibrate import calibrate  # noqa: E402
from .eval import evaluate  # noqa: E402
from .export import export  # noqa: E402
from .inspect import inspect  # noqa: E402
from .ipi import ipi  # noqa: E402
from .learn import learn  # noqa: E402
from .md import md  # noqa: E402
from .select import select  # noqa: E402
from .train import train  # noqa: E402

for _command in (train, evaluate, calibrate, inspect, md, ipi, analyze, select, export, learn):
    main.add_command(_command)
