"""``pbcgnn calibrate``: refit a committee checkpoint's spread calibration on labelled frames."""
from __future__ import annotations

import click

from .options import data_options, label_key_options


@click.command()
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False))
@click.argument("data", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, readable=True))
@data_options
@label_key_options
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="The checkpoint to write [default: CHECKPOINT itself]; replaced only when the write succeeds.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:K.")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True)
def calibrate(checkpoint, data, fmt, length_unit, energy_unit, energy_key, forces_key, stress_key, out, device,
              batch_size) -> None:
    """Fit the calibration of the committee CHECKPOINT's spread on the labelled frames of DATA.

    Per quantity (energy per atom, force components) the calibrated uncertainty is a * s^b of the
    members' standard deviation s (eV/atom, eV/A): a scale (b = 1), or a power law where it
    predicts held-out frames better (Gaussian likelihood, cross-validated over frames). It is
    stored in the checkpoint and used by the calculator, eval, select, md, ipi and export.
    Use frames the committee was not trained on.
    """
    from pbcgnn.device import resolve_device
    from pbcgnn.evaluation.recalibrate import calibrate_checkpoint

    result = calibrate_checkpoint(checkpoint, data, out, device=str(resolve_device(device)), batch_size=batch_size,
                                  format=fmt, length_unit=length_unit, energy_unit=energy_unit,
                                  energy_key=energy_key, forces_key=forces_key, stress_key=stress_key)
    click.echo(f"calibration: {result.calibration.describe()}")
    click.echo(f"{'':<8}  {'':<6}  {'1 sigma %':>9}  {'2 sigma %':>9}  {'miscal':>7}  {'NLL':>8}  {'err/sd':>6}")
    for q, unit in (("energy", "meV/atom"), ("forces", "meV/A")):
        for when, m in (("before", result.before), ("after", result.after)):
            click.echo(f"{q:<8}  {when:<6}  {100 * m[f'coverage_1sigma_{q}']:>9.1f}  "
                       f"{100 * m[f'coverage_2sigma_{q}']:>9.1f}  {m[f'miscalibration_area_{q}']:>7.3f}  "
                       f"{m[f'nll_{q}']:>8.2f}  {m[f'calibration_{q}']:>6.2f}")
    click.echo("(after: on the frames it was fitted on; NLL with errors in meV/atom and meV/A)")
    click.echo(f"wrote {result.out}")
