"""``pbcgnn eval``: errors of a trained checkpoint on data files, as a table and metrics.json."""
from __future__ import annotations

import click

from .options import data_options, data_paths, label_key_options

COLUMNS = [("energy_rmse_mev_per_atom", "E RMSE"), ("energy_mae_mev_per_atom", "E MAE"),
           ("force_rmse_mev_per_A", "F RMSE"), ("force_mae_mev_per_A", "F MAE")]
SPREAD_COLUMNS = [("energy_spread_mev_per_atom", "E spread"), ("force_spread_mev_per_A", "F spread"),
                  ("spearman_energy", "rho E"), ("spearman_forces", "rho F"),
                  ("calibration_energy", "E err/sd"), ("calibration_forces", "F err/sd")]


@click.command(name="eval")
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False))
@data_paths
@data_options
@label_key_options
@click.option("--out", type=click.Path(file_okay=False), default="eval", show_default=True,
              help="Folder for metrics.json, predictions.xyz and parity.png.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:K.")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True)
def evaluate(checkpoint, data, fmt, length_unit, energy_unit, energy_key, forces_key, stress_key, out, device,
             batch_size) -> None:
    """Evaluate CHECKPOINT on DATA files (default: the validation frames of its training run).

    Energies in meV/atom, forces in meV/A per Cartesian component. For a committee the errors
    are those of the mean, and the per-frame spread is compared with the error: Spearman rank
    correlation (rho) and RMS error over RMS spread (err/sd), plotted in calibration.png.
    """
    from pbcgnn.device import resolve_device
    from pbcgnn.errors import ensure_writable_dir
    from pbcgnn.evaluation.report import evaluate as run_eval

    dev = str(resolve_device(device))
    ensure_writable_dir(out)  # before any work: metrics.json etc. are written at the end
    if data:
        results = run_eval(checkpoint, data, out, format=fmt, length_unit=length_unit, energy_unit=energy_unit,
                           energy_key=energy_key, forces_key=forces_key, stress_key=stress_key, device=dev,
                           batch_size=batch_size)
    else:
        from pbcgnn.evaluation.report import evaluate_validation

        results = evaluate_validation(checkpoint, out, device=dev, batch_size=batch_size)
    width = max(len(k) for k in results)
    click.echo(f"{'data':<{width}}  {'frames':>6}  " + "  ".join(f"{h:>9}" for _, h in COLUMNS))
    click.echo(f"{'':<{width}}  {'':>6}  {'meV/atom':>9}  {'meV/atom':>9}  {'meV/A':>9}  {'meV/A':>9}")
    for name, m in results.items():
        click.echo(f"{name:<{width}}  {m['n_frames']:>6}  " + "  ".join(f"{m[k]:>9.3f}" for k, _ in COLUMNS))
    if "spearman_forces" in results["total"]:
        click.echo("committee mean errors above; spread per frame vs error of the mean:")
        click.echo(f"{'data':<{width}}  " + "  ".join(f"{h:>9}" for _, h in SPREAD_COLUMNS))
        click.echo(f"{'':<{width}}  {'meV/atom':>9}  {'meV/A':>9}  {'':>9}  {'':>9}  {'':>9}  {'':>9}")
        for name, m in results.items():
            click.echo(f"{name:<{width}}  " + "  ".join(f"{m[k]:>9.3f}" for k, _ in SPREAD_COLUMNS))
        click.echo(f"wrote {out}/metrics.json, predictions.xyz, parity.png, calibration.png")
    else:
        click.echo(f"wrote {out}/metrics.json, predictions.xyz, parity.png")
