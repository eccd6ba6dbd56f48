"""``pbcgnn eval``: errors of a trained checkpoint on data files, as a table and metrics.json."""
from __future__ import annotations

import click

from .options import data_options, data_paths, label_key_options

COLUMNS = [("energy_rmse_mev_per_atom", "E RMSE"), ("energy_mae_mev_per_atom", "E MAE"),
           ("force_rmse_mev_per_A", "F RMSE"), ("force_mae_mev_per_A", "F MAE")]
#: A committee's scores per quantity: (metric key before ``_{quantity}``, header, scale, format).
SPREAD_COLUMNS = [("spearman", "rho", 1, ".2f"), ("coverage_1sigma", "1 sigma %", 100, ".1f"),
                  ("coverage_2sigma", "2 sigma %", 100, ".1f"), ("miscalibration_area", "miscal", 1, ".3f"),
                  ("nll", "NLL", 1, ".2f"), ("calibration", "err/sd", 1, ".2f")]
#: Quantity -> (its RMS spread keys, calibrated and raw; unit).
QUANTITIES = {"energy": (("energy_spread_mev_per_atom", "energy_spread_raw_mev_per_atom"), "meV/atom"),
              "forces": (("force_spread_mev_per_A", "force_spread_raw_mev_per_A"), "meV/A")}


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
    are those of the mean, and its calibrated spread is scored as a Gaussian uncertainty of them,
    per energy per atom and force component: RMS spread (and raw, before calibration), Spearman
    rank correlation of per-frame spread and error (rho), the errors within 1 and 2 sigma (ideal
    68.3 and 95.4 %), miscalibration area (0 is ideal), mean negative log-likelihood (errors in
    meV) and RMS error over RMS spread (err/sd, ideal 1); binned in calibration.png.

    DATA of any size is read and evaluated a chunk of frames at a time, in bounded memory; plots
    draw at most 200,000 force components (a seeded sample of larger files).
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
        _spread_table(results, width)
        click.echo(f"wrote {out}/metrics.json, predictions.xyz, parity.png, calibration.png")
    else:
        click.echo(f"wrote {out}/metrics.json, predictions.xyz, parity.png")


def _spread_table(results: dict[str, dict[str, float]], width: int) -> None:
    """The committee's calibration and its scores, one row per data source and quantity."""
    total = results["total"]
    laws = {q: (total.get(f"calibration_{q}_a", 1.0), total.get(f"calibration_{q}_b", 1.0)) for q in QUANTITIES}
    if all(law == (1.0, 1.0) for law in laws.values()):
        said = "none: raw spreads (fit one with `pbcgnn calibrate`)"
    else:
        said = ", ".join(f"{q} {a:.4g} s^{b:.3g}" for q, (a, b) in laws.items()) + " (s in eV/atom, eV/A)"
    click.echo(f"committee mean errors above; its spread as an uncertainty, calibration: {said}")
    headers = ["spread", "raw"] + [h for _, h, _, _ in SPREAD_COLUMNS]
    click.echo(f"{'data':<{width}}  {'':<8}  " + "  ".join(f"{h:>9}" for h in headers))
    for name, m in results.items():
        for q, (spreads, unit) in QUANTITIES.items():
            cells = [f"{m.get(k, float('nan')):>9.3f}" for k in spreads]
            cells += [f"{scale * m[f'{k}_{q}']:>9{fmt}}" for k, _, scale, fmt in SPREAD_COLUMNS]
            click.echo(f"{name:<{width}}  {q:<8}  " + "  ".join(cells) + f"  ({unit})")
