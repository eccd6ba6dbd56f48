"""Shared by the CLI error tests: a tiny training run's options and the one-error-line check."""
from __future__ import annotations

from click.testing import CliRunner
from pbcgnn.cli import main

TRAIN = ["--epochs", "1", "--features", "8", "--filters", "8", "--interactions", "1", "--rbf", "6",
         "--cutoff", "3.0", "--batch-size", "8", "--device", "cpu", "--no-progress"]


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def one_error(result) -> str:
    """The single ``Error:`` line of a failed command (asserting there is exactly one, and no traceback)."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    return errors[0]
