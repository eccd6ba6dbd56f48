"""fit_committee(): train N members (own seeds, optional bootstrap) and combine them into one checkpoint."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from .checkpoint import read_checkpoint, save_checkpoint
from .config import Config

__all__ = ["fit_committee", "member_config", "combine_checkpoints"]

log = logging.getLogger(__name__)

UNITS = {"energy": "eV", "length": "Angstrom"}


def member_config(config: Config, k: int, init_members: int = 1) -> Config:
    """The single-model config of member ``k``: seed ``train.seed + k``, committee size 1 (the
    bootstrap flag kept, so the member draws its own resample from its seed) and, when
    fine-tuning from a committee of ``init_members``, member ``k % init_members`` as the start."""
    changes: dict[str, dict[str, Any]] = {"train": {"seed": config.train.seed + k}, "committee": {"size": 1}}
    if config.transfer.init_from is not None:
        changes["transfer"] = {"init_member": k % init_members}
    return config.replace(**changes)


def combine_checkpoints(config: Config, members: list[dict[str, Any]], dirs: list[Path]) -> dict[str, Any]:
    """One committee checkpoint from the members' single-model checkpoints (plain types only).

    Args:
        config: the committee's config (``committee.size`` = number of members).
        members: the members' checkpoint dicts (``best.pt`` or ``last.pt``), in member order.
        dirs: the members' run folders.
    """
    model = {f"members.{k}.{key}": value for k, ckpt in enumerate(members) for key, value in ckpt["model"].items()}
    info = [{"seed": Config.from_dict(c["config"]).train.seed, "epoch": c["epoch"], "metrics": c.get("metrics", {}),
             "dir": str(d)} for c, d in zip(members, dirs)]
    elements = sorted(set().union(*(c["elements"] for c in members)))
    return {"config": config.to_dict(), "model": model, "members": info, "elements": elements,
            "epoch": max(c["epoch"] for c in members), "units": UNITS}


def _committee_metrics(ckpt: dict[str, Any], val_set, device) -> dict[str, float]:
    """Errors of the committee mean and calibration of its spread on the validation frames."""
    from ..evaluate import predict, prediction_metrics
    from .checkpoint import model_from_checkpoint

    model = model_from_checkpoint(ckpt, device=device)
    return prediction_metrics(predict(model, val_set, device=device))


def fit_committee(config: Config, out_dir, *, resume: bool = False, progress: bool = True, datasets=None):
    """Train ``config.committee.size`` members one after the other, then combine them.

    Member k is an ordinary single-model run (:func:`pbcgnn.train.loop.fit`) in
    ``out_dir/member_k`` with the config of :func:`member_config`; all members share the
    training/validation split. ``out_dir/best.pt`` combines the members' ``best.pt`` and
    ``out_dir/last.pt`` their ``last.pt``; both load as a :class:`pbcgnn.committee.Committee`.
    Their ``metrics`` are the committee mean's validation errors and the spread calibration.
    ``train.max_minutes`` applies to each member.

    Args:
        config: validated committee config (``committee.size`` > 1).
        out_dir: output folder.
        resume: resume unfinished members from their ``last.pt`` and train missing ones.
        progress, datasets: as :func:`pbcgnn.train.loop.fit`.

    Returns:
        A :class:`pbcgnn.train.loop.FitResult` for the committee; ``history`` holds every
        member's epochs with a ``member`` key.
    """
    from .loop import FitResult, fit, load_datasets, resolve_device

    out = Path(out_dir)
    n = config.committee.size
    if not resume:  # a resumable marker first: an interrupted committee run is resumed as one
        save_checkpoint(out / "last.pt", {"config": config.to_dict(), "model": {}, "elements": [], "epoch": 0,
                                          "units": UNITS, "train_state": {"committee_size": n}})
    train_set, val_set = datasets if datasets is not None else load_datasets(config)
    init_members = 1
    if config.transfer.init_from is not None:
        init_members = len(read_checkpoint(config.transfer.init_from).get("members", [None]))
    results, dirs = [], []
    for k in range(n):
        member_dir = out / f"member_{k}"
        again = resume and (member_dir / "last.pt").is_file()
        log.info("committee member %d of %d (seed %d)%s", k + 1, n, config.train.seed + k,
                 ", resumed" if again else "")
        results.append(fit(member_config(config, k, init_members), member_dir, resume=again, progress=progress,
                           datasets=(train_set, val_set)))
        dirs.append(member_dir)
    device = resolve_device(config.train.device)
    metrics = {}
    for name in ("best", "last"):
        ckpt = combine_checkpoints(config, [read_checkpoint(getattr(r, name)) for r in results], dirs)
        if name == "last":
            ckpt["train_state"] = {"committee_size": n}
        metrics[name] = ckpt["metrics"] = _committee_metrics(ckpt, val_set, device)
        save_checkpoint(out / f"{name}.pt", ckpt)
    m = metrics["best"]
    log.info("committee of %d: val E RMSE %.3f meV/atom, F RMSE %.1f meV/A; spread vs error Spearman "
             "energy %.2f, forces %.2f", n, m["energy_rmse_mev_per_atom"], m["force_rmse_mev_per_A"],
             m["spearman_energy"], m["spearman_forces"])
    history = [{**rec, "member": k} for k, r in enumerate(results) for rec in r.history]
    stopped = "; ".join(f"member {k}: {r.stopped}" for k, r in enumerate(results))
    return FitResult(out / "best.pt", out / "last.pt", metrics["best"], history, stopped)
