"""``pbcgnn train``: fit a SchNet or PaiNN potential to periodic ab initio frames."""
from __future__ import annotations

from pathlib import Path

import click

from pbcgnn.config import (ARCHITECTURES, FINETUNE_LR, RECIPES, CommitteeConfig, DataConfig, ModelConfig,
                           TrainConfig, TransferConfig)

from .options import config_field, config_from_params, data_options, data_paths, label_key_options

_D, _M, _T, _X, _C = DataConfig(), ModelConfig(), TrainConfig(), TransferConfig(), CommitteeConfig()
#: Options that define the architecture: taken from the checkpoint when fine-tuning.
ARCHITECTURE = ("model", "cutoff", "features", "filters", "interactions", "rbf")
BUNDLED = Path(__file__).resolve().parents[1] / "data" / "n2p2_h2o_rpbe_d3" / "input.data"


def bundled_data() -> Path:
    """The real RPBE-D3 water sample shipped in ``data/`` (source checkouts)."""
    if not BUNDLED.is_file():
        raise click.UsageError(f"no DATA given and the bundled sample {BUNDLED} is missing; pass data files")
    return BUNDLED


def _on_command_line(ctx: click.Context) -> list[str]:
    """The parameters given on the command line, not defaulted."""
    return [name for name in ctx.params if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE]


def _recipe_help(field: str) -> str:
    """`` [default: X; --model painn: Y]`` for an option whose default depends on the architecture."""
    section, name = field.split(".")
    default = getattr({"model": _M, "train": _T}[section], name)
    others = "; ".join(f"--model {arch}: {recipe[field]:g}" for arch, recipe in RECIPES.items() if field in recipe)
    return f" [default: {default:g}; {others}]"


def _apply_recipe(ctx: click.Context, options: dict) -> None:
    """The chosen architecture's recipe (:data:`pbcgnn.config.RECIPES`) for the options not given."""
    recipe, given = RECIPES[options["model"]], _on_command_line(ctx)
    for name in options:
        if config_field(name) in recipe and name not in given:
            options[name] = recipe[config_field(name)]


@click.command()
@data_paths
@data_options
@label_key_options
@click.option("--out", type=click.Path(file_okay=False), default="runs/pbcgnn", show_default=True,
              help="Output folder: best.pt, last.pt, TensorBoard logs.")
@click.option("--val", "val_paths", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Validation file(s); default: a random --val-fraction of DATA.")
@click.option("--val-fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=_D.val_fraction,
              show_default=True)
@click.option("--split-seed", type=int, default=_D.split_seed, show_default=True)
@click.option("--cutoff", type=click.FloatRange(min=0, min_open=True), default=_M.cutoff,
              help="Neighbour cutoff in Angstrom." + _recipe_help("model.cutoff"))
@click.option("--model", type=click.Choice(ARCHITECTURES), default=_M.architecture, show_default=True,
              help="schnet: invariant filters, fastest per epoch; painn: equivariant (directions), more accurate.")
@click.option("--features", type=click.IntRange(min=1), default=_M.hidden_channels, show_default=True)
@click.option("--filters", type=click.IntRange(min=1), default=_M.num_filters, show_default=True,
              help="SchNet's convolution width (PaiNN's filters are 3 x --features).")
@click.option("--interactions", type=click.IntRange(min=1), default=_M.num_interactions, show_default=True)
@click.option("--rbf", type=click.IntRange(min=1), default=_M.num_rbf,
              help="Radial basis functions (SchNet: Gaussians; PaiNN: sines)." + _recipe_help("model.num_rbf"))
@click.option("--dtype", type=click.Choice(["float32", "float64"]), default=_M.dtype, show_default=True)
@click.option("--epochs", type=click.IntRange(min=1), default=_T.epochs, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=_T.batch_size, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=_T.lr,
              help=f"Learning rate (with --init-from: {FINETUNE_LR:g} unless given)." + _recipe_help("train.lr"))
@click.option("--energy-weight", type=click.FloatRange(min=0), default=_T.energy_weight, show_default=True,
              help="Weight of the energy-per-atom MSE (eV^2).")
@click.option("--force-weight", type=click.FloatRange(min=0), default=_T.force_weight, show_default=True,
              help="Weight of the force MSE ((eV/A)^2).")
@click.option("--lr-schedule", type=click.Choice(["cosine", "plateau"]), default=_T.lr_schedule, show_default=True,
              help="cosine: decay to --min-lr over --epochs or --max-minutes; plateau: halve when validation stalls, "
                   "then --anneal.")
@click.option("--anneal", type=click.FloatRange(0, 1), default=_T.anneal, show_default=True,
              help="plateau: decay to --min-lr over this last fraction of --epochs or --max-minutes (0: never).")
@click.option("--final-energy-weight", type=click.FloatRange(min=0), default=_T.final_energy_weight,
              help="Energy weight that the last --anneal fraction of the budget rises to as the rate "
                   "falls (as MACE's SWA stage) [default: --energy-weight].")
@click.option("--huber-delta", type=click.FloatRange(min=0, min_open=True), default=_T.huber_delta,
              help="Train on Huber losses with this delta (eV/atom, eV/A) instead of squares, as MACE "
                   "[default: squares].")
@click.option("--min-lr", type=click.FloatRange(min=0), default=_T.min_lr, show_default=True)
@click.option("--ema-decay", type=click.FloatRange(0, 1, max_open=True), default=_T.ema_decay, show_default=True)
@click.option("--patience", type=click.IntRange(min=1), default=_T.patience, show_default=True,
              help="Early stop after this many epochs without improvement.")
@click.option("--seed", type=int, default=_T.seed, show_default=True)
@click.option("--device", default=_T.device, show_default=True, help="auto, cpu or cuda.")
@click.option("--max-minutes", type=click.FloatRange(min=0, min_open=True), default=_T.max_minutes,
              help="Stop after this wall-clock time, resumed parts included (the schedule's budget).")
@click.option("--stop-after", type=click.FloatRange(min=0, min_open=True), default=_T.stop_after, metavar="MINUTES",
              help="Pause after MINUTES of this invocation, schedule untouched; --resume continues the run.")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=_D.cache_dir,
              help="Cache processed graphs and frame stores here [default: graphs in memory, stores in "
                   "$PBCGNN_CACHE_DIR or ~/.cache/pbcgnn].")
@click.option("--storage", type=click.Choice(["auto", "memory", "disk"]), default=_D.storage, show_default=True,
              help="memory: every graph in RAM; disk: frames in an on-disk store (--cache-dir), each graph built "
                   "when its batch needs it; auto: memory when the graphs fit in half the free memory.")
@click.option("--workers", type=click.IntRange(min=0), default=_T.workers, show_default=True,
              help="DataLoader processes that read frames and build graphs while the model trains.")
@click.option("--init-from", type=click.Path(exists=True, dir_okay=False), default=_X.init_from,
              help="Fine-tune this checkpoint: architecture and cutoff from it, E0 refitted on DATA.")
@click.option("--freeze", default=",".join(_X.freeze), metavar="GROUPS",
              help="With --init-from: keep these fixed, e.g. embedding,interactions:0-1,readout.")
@click.option("--keep-scale", is_flag=True, default=_X.keep_scale,
              help="With --init-from: keep the checkpoint's energy scale [default: re-estimate from DATA].")
@click.option("--committee", type=click.IntRange(min=1), default=_C.size, show_default=True,
              help="Train this many models (seeds SEED, SEED+1, ...) into one committee checkpoint.")
@click.option("--bootstrap", is_flag=True, default=_C.bootstrap,
              help="Each model trains on a bootstrap resample of the training frames.")
@click.option("--resume", is_flag=True,
              help="Continue from OUT/last.pt with its options; --epochs/--max-minutes change its budget.")
@click.option("--progress/--no-progress", default=True, show_default=True)
@click.pass_context
def train(ctx, data, out, resume, progress, **options) -> None:
    """Train SchNet (or --model painn) on DATA (n2p2 input.data, extended XYZ, any ASE format).

    With no DATA, trains on the bundled real water sample (16 RPBE-D3 frames).
    With --init-from, fine-tunes a trained checkpoint on DATA (e.g. a higher level of theory;
    frames without forces train on their energy only). With --committee N, trains N models
    whose spread, calibrated on the validation frames (refit with `pbcgnn calibrate`), `pbcgnn
    select`, `eval`, `md`, `ipi` and `export` use.
    """
    from pbcgnn.errors import ensure_writable_dir
    from pbcgnn.train.run import fit

    ensure_writable_dir(out)  # before reading data and fitting: an unwritable OUT fails at once
    if options["init_from"] is not None:
        given = [f"--{name}" for name in ARCHITECTURE if name in _on_command_line(ctx)]
        if given:
            raise click.UsageError(f"{', '.join(given)}: with --init-from the architecture comes from the checkpoint")
        if "lr" not in _on_command_line(ctx):
            options["lr"] = FINETUNE_LR  # the from-scratch rate would undo the pretrained weights
    elif not resume:  # a resumed run keeps its stored options
        _apply_recipe(ctx, options)
    freeze = options.pop("freeze")
    config = config_from_params({**options, "data": tuple(data) or (str(bundled_data()),),
                                 "freeze": tuple(f.strip() for f in freeze.split(",")) if freeze else ()})
    given = {config_field(name) for name in _on_command_line(ctx)} - {None}  # a resumed run checks these
    result = fit(config, out, resume=resume, given=given, progress=progress)  # validates (after taking the architecture)
    m = result.metrics
    members = {rec["member"] for rec in result.history if "member" in rec}
    if resume and result.trained == 0:  # a finished run, or its budget spent: say so, claim no writes
        click.echo(f"nothing to train: the run in {out} has finished ({result.stopped}, {len(result.history)} "
                   "epochs); its checkpoints are as they were. Give a larger --epochs or --max-minutes to go on")
        return
    if result.stopped == "paused":
        click.echo(f"paused (--stop-after) after {len(result.history)} epochs; continue with "
                   f"`pbcgnn train --out {out} --resume`")
        return
    if members:  # a committee (also when resumed without --committee)
        click.echo(f"committee of {len(members)} trained ({result.stopped})")
    else:
        click.echo(f"stopped: {result.stopped} after {len(result.history)} epochs")
    click.echo(f"best validation: energy RMSE {m['energy_rmse_mev_per_atom']:.3f} meV/atom, "
               f"force RMSE {m['force_rmse_mev_per_A']:.1f} meV/A")
    if "spearman_forces" in m:
        click.echo(f"committee spread vs error (Spearman): energy {m['spearman_energy']:.2f}, "
                   f"forces {m['spearman_forces']:.2f}")
        laws = {q: (m.get(f"calibration_{q}_a", 1.0), m.get(f"calibration_{q}_b", 1.0)) for q in ("energy", "forces")}
        if all(law == (1.0, 1.0) for law in laws.values()):
            click.echo("spread calibration: none, raw spreads (too few validation frames; see `pbcgnn calibrate`)")
        else:
            said = ", ".join(f"{q} {a:.4g} s^{b:.3g}" for q, (a, b) in laws.items())
            click.echo(f"spread calibration (fitted on the validation frames; s in eV/atom, eV/A): {said}")
    click.echo(f"wrote {result.best} and {result.last}; TensorBoard: tensorboard --logdir {out}")
