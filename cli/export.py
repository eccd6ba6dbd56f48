"""``pbcgnn export``: a checkpoint's model as a metatomic TorchScript file for LAMMPS, i-PI, ASE and TorchSim."""
from __future__ import annotations

import click


@click.command()
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", type=click.Path(dir_okay=False), default="model.pt", show_default=True,
              help="The model file to write (an existing file is replaced only when the export succeeds).")
@click.option("--dtype", type=click.Choice(["float32", "float64"]), default="float32", show_default=True,
              help="dtype of the exported model and of the positions engines pass it (float64: absolute "
                   "energies to full precision).")
def export(checkpoint: str, out: str, dtype: str) -> None:
    """Export the model in CHECKPOINT as a metatomic model (TorchScript, needs `pip install 'pbcgnn[metatomic]'`).

    Engines (LAMMPS pair_style metatomic, i-PI's metatomic driver, metatomic_ase.MetatomicCalculator,
    TorchSim) compute the neighbour list and take forces and stress by autograd of the energy
    (eV, Angstrom). A committee exports its mean energy, its members as "energy_ensemble" and
    its std as "energy_uncertainty", both with its stored calibration applied.
    """
    from pbcgnn.export import export_metatomic

    path = export_metatomic(checkpoint, out, dtype=dtype)
    click.echo(f"wrote {path} (metatomic model, {dtype})")
