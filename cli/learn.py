"""``pbcgnn learn``: active learning, rounds of committee exploration, selection, labelling and retraining."""
from __future__ import annotations

import click

from pbcgnn.learn.config import BY, LearnConfig

from .options import data_options

_L = LearnConfig()
#: Parameters that are LearnConfig fields under another name.
_FIELDS = {"structure": "structures", "temperature": "temperatures_K", "timestep": "timestep_fs",
           "friction": "friction_per_ps", "fmt": "format"}


def _given(ctx: click.Context) -> dict:
    """The LearnConfig fields set on the command line (a resumed run checks or takes them)."""
    out = {}
    for name, value in ctx.params.items():
        if ctx.get_parameter_source(name) != click.core.ParameterSource.COMMANDLINE:
            continue
        field = _FIELDS.get(name, name)
        if field in LearnConfig.__dataclass_fields__:
            out[field] = tuple(value) if isinstance(value, (list, tuple)) else value
    return out


@click.command()
@click.argument("committee", required=False, type=click.Path(exists=True, dir_okay=False))
@click.option("--out", type=click.Path(file_okay=False), default="runs/learn", show_default=True,
              help="Folder of the run: state.json and round_NNN/.")
@click.option("--structure", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Explore by MD from every frame of this file (repeatable).")
@click.option("--pool", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Instead of MD: score the frames of this file each round.")
@data_options
@click.option("--temperature", multiple=True, type=float, default=_L.temperatures_K, show_default=True,
              help="NVT temperature in K (repeatable: each start frame runs at each).")
@click.option("--steps", type=int, default=_L.steps, show_default=True, help="MD steps per trajectory.")
@click.option("--sample-every", type=int, default=_L.sample_every, show_default=True,
              help="MD steps between the frames scored.")
@click.option("--timestep", type=float, default=_L.timestep_fs, show_default=True, help="Time step in fs.")
@click.option("--friction", type=float, default=_L.friction_per_ps, show_default=True, help="Langevin friction, 1/ps.")
@click.option("--threshold", type=float, default=None,
              help="Calibrated force spread (eV/A, --by) above which a frame is uncertain.  [required]")
@click.option("--by", type=click.Choice(BY), default=_L.by, show_default=True,
              help="max_force: the frame's largest atomic force spread; forces: RMS over its force components.")
@click.option("--min-rmsd", type=float, default=_L.min_rmsd, show_default=True,
              help="Skip a candidate closer than this RMSD (A) to a frame picked in the round.")
@click.option("--max-per-round", type=int, default=_L.max_per_round, show_default=True)
@click.option("--stop-fraction", type=float, default=_L.stop_fraction, show_default=True,
              help="Stop when the fraction of explored frames above the threshold falls below this.")
@click.option("--max-labels", type=int, default=_L.max_labels, show_default=True, help="Label budget.")
@click.option("--max-rounds", type=int, default=_L.max_rounds, show_default=True)
@click.option("--calculator", default=None, metavar="MODULE:FUNCTION",
              help="Reference method: a function returning an ASE calculator [default: external step, "
                   "ROUND/to_label.xyz -> ROUND/labelled.xyz, then --resume].")
@click.option("--data", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Training files of the committee [default: those stored in it].")
@click.option("--epochs", type=int, default=_L.epochs, show_default=True, help="Epochs of each retraining.")
@click.option("--max-minutes", type=float, default=_L.max_minutes, help="Time budget of each retraining.")
@click.option("--seed", type=int, default=_L.seed, show_default=True)
@click.option("--device", default=_L.device, show_default=True, help="auto, cpu or cuda.")
@click.option("--tabulate/--exact", default=_L.tabulate, show_default=True,
              help="MD and scoring through precomputed filter tables (--exact: the filter networks).")
@click.option("--resume", is_flag=True, help="Continue the run in OUT (after a kill, a stop, or external labels).")
@click.option("--progress/--no-progress", default=False, show_default=True)
@click.pass_context
def learn(ctx, committee, out, resume, progress, **options) -> None:
    """Active learning from the committee checkpoint COMMITTEE: rounds of exploration (MD from
    --structure at each --temperature, or the --pool frames), selection by calibrated force
    spread, labelling (--calculator, or an external step) and retraining, until the fraction of
    explored frames above --threshold falls below --stop-fraction or --max-labels is reached.
    """
    import os
    import sys

    from pbcgnn.learn import learn as run_learning

    sys.path.insert(0, os.getcwd())  # --calculator modules from the current folder, as `python -m` finds them
    given = _given(ctx)
    if resume:
        result = run_learning(None, out, resume=True, given=given, progress=progress)
    else:
        params = {_FIELDS.get(k, k): tuple(v) if isinstance(v, (list, tuple)) else v for k, v in options.items()}
        config = LearnConfig(committee=committee, **{**params, "threshold": params["threshold"] or 0.0,
                                                      "temperatures_K": tuple(map(float, params["temperatures_K"]))})
        result = run_learning(config, out, progress=progress)
    for rec in result.rounds:
        click.echo(_round_line(rec))
    if result.status == "waiting":
        click.echo(f"waiting for labels: label the frames of {result.to_label} (energy and forces, keeping each "
                   f"learn_id) into {result.to_label.with_name('labelled.xyz')}, then run `pbcgnn learn --out {out} "
                   "--resume`")
        return
    click.echo(f"stopped: {result.reason}")
    click.echo(f"{result.labels} labels; newest committee: {result.committee}")


def _round_line(rec: dict) -> str:
    """One line per round: explored, fraction above the threshold, picks, labels, failures, validation error."""
    line = (f"round {rec.get('round', '?')}: {rec.get('explored', 0)} explored, {rec.get('above_threshold', 0)} above "
            f"the threshold ({100 * rec.get('fraction', 0.0):.1f} %)")
    if "picked" in rec:
        line += f", {rec['picked']} picked"
    if "labelled" in rec:
        line += f", {rec['labelled']} labelled, {rec['failed']} failed"
    if rec.get("validation"):
        line += f"; retrained, validation force RMSE {rec['validation']['force_rmse_mev_per_A']:.1f} meV/A"
    return line
