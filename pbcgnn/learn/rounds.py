"""The active-learning loop: rounds of explore, select, label and retrain; its state on disk; the stop rule.

Files under ``OUT``::

    state.json          options, base training data, the round and its stage, the exploring
                        committee, the stop reason; replaced atomically after every stage
    round_NNN/
      explore/mdKK/     the round's MD (trajectory.xyz with the spread, thermo.csv, run.json or failed.json)
      scores.csv        id and calibrated spreads (eV/A, eV/atom) of every explored frame
      candidates.xyz    the explored frames above the threshold, and each failed trajectory's last
                        sampled frame (learn_failure; picked first)
      to_label.xyz      the picks: structures with learn_id and learn_spread
      labelled.xyz      the labels (energy, forces, learn_id), appended frame by frame
      failed.jsonl      failed reference calculations, id and error
      committee/        the retrained committee; its best.pt explores the next round
      round.json        the round's record: counts, fraction above the threshold, failures, errors

Every stage's result is on disk before ``state.json`` moves on, so a run killed anywhere repeats
at most the stage it was in: exploration reruns the trajectories that had not finished (seeded),
labelling skips every id already labelled or failed, and training resumes its committee.
"""
from __future__ import annotations

import csv
import io
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..checkpoint import atomic_output
from ..config import DataConfig
from ..device import resolve_device
from ..errors import InputError, ensure_writable_dir
from ..io import read_frames, write_frames
from ..train.lock import run_lock
from .config import LearnConfig, resumed_options
from .explore import check_frames, explore
from .label import failed_ids, label_frames, labelled_ids, load_calculator, read_external
from .pick import pick
from .retrain import base_data, check_committee, retrain

__all__ = ["LearnResult", "learn", "stop_reason", "round_dir"]

log = logging.getLogger(__name__)

STATE_FORMAT = 1


@dataclass
class LearnResult:
    """Where a call of :func:`learn` left the run.

    Attributes:
        status: ``stopped`` (a stop rule fired; ``reason`` says which) or ``waiting`` (external
            labels: label ``to_label`` into ``labelled.xyz`` beside it, then resume).
        reason: why it stopped or waits.
        round: the current round (0-based).
        labels: frames labelled so far, all rounds.
        committee: the newest committee checkpoint.
        rounds: the ``round.json`` record of every round so far.
        to_label: the frames waiting for external labels.
    """

    status: str
    reason: str
    round: int
    labels: int
    committee: Path
    rounds: list[dict[str, Any]] = field(default_factory=list)
    to_label: Path | None = None


def round_dir(out: Path, r: int) -> Path:
    return out / f"round_{r:03d}"


def _write_text(path: Path, text: str) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(text)


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def stop_reason(fraction: float, explored: int, labels: int, config: LearnConfig, failed: int = 0) -> str | None:
    """Why the loop stops after exploring ``explored`` frames, ``fraction`` of them above the
    threshold, with ``labels`` labelled so far and ``failed`` trajectories of the round failed; None
    when it goes on. A round whose dynamics broke has not converged, however few frames lie above."""
    if labels >= config.max_labels:
        return f"label budget spent: {labels} labels, --max-labels {config.max_labels}"
    if explored == 0 and not failed:
        return "nothing explored: no frame left to score"
    if (fraction < config.stop_fraction or fraction == 0) and not failed:
        return (f"converged: {100 * fraction:.1f} % of {explored} explored frames above the threshold "
                f"{config.threshold:g} eV/A, below --stop-fraction {100 * config.stop_fraction:g} %")
    return None


def _labels_so_far(out: Path, last: int) -> list[Path]:
    """The label files of rounds 0..last that hold frames."""
    files = [round_dir(out, r) / "labelled.xyz" for r in range(last + 1)]
    return [f for f in files if f.is_file() and f.stat().st_size > 0]


def _count(out: Path, last: int) -> int:
    return sum(len(labelled_ids(f)) for f in _labels_so_far(out, last))


def _record(folder: Path, **values: Any) -> dict[str, Any]:
    """Update the round's ``round.json`` with ``values``; returns the record."""
    record = {**_read_json(folder / "round.json"), **values}
    _write_text(folder / "round.json", json.dumps(record, indent=2))
    return record


def _explore_stage(out: Path, state: dict[str, Any], config: LearnConfig, device: str, progress: bool) -> str | None:
    """Explore and score; write ``scores.csv``, ``candidates.xyz`` and the record. The stop reason, if the
    round or label budget is spent before."""
    r = state["round"]
    folder = round_dir(out, r)
    labels = _count(out, r - 1)
    if r >= config.max_rounds:
        return f"round budget spent: {r} rounds, --max-rounds {config.max_rounds}"
    if labels >= config.max_labels:
        return stop_reason(1.0, 1, labels, config)
    seen: set[str] = set()  # a pool frame labelled, or failed, in an earlier round is not scored again
    for q in range(r):
        folder_q = round_dir(out, q)
        seen |= set(labelled_ids(folder_q / "labelled.xyz")) | set(failed_ids(folder_q / "failed.jsonl"))
    found = explore(state["committee"], config, r, folder / "explore", exclude=seen, device=device,
                    progress=progress)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, ["id", "max_force", "forces", "energy"])
    writer.writeheader()
    writer.writerows(found.rows)
    _write_text(folder / "scores.csv", buffer.getvalue())
    if found.candidates:
        with atomic_output(folder / "candidates.xyz") as tmp:
            write_frames(tmp, found.candidates, format="extxyz")
    _record(folder, round=r, committee=state["committee"], explored=len(found.rows),
            above_threshold=found.above, candidates=len(found.candidates), fraction=found.fraction,
            md_failures=found.failures)
    log.info("round %d: %d frames explored, %d above %g eV/A (%.1f %%), %d trajectories failed", r, len(found.rows),
             found.above, config.threshold, 100 * found.fraction, len(found.failures))
    return None


def _select_stage(out: Path, state: dict[str, Any], config: LearnConfig) -> str | None:
    """Apply the stop rule; pick the round's frames into ``to_label.xyz``. The stop reason, if it fired."""
    folder = round_dir(out, state["round"])
    record = _read_json(folder / "round.json")
    labels = _count(out, state["round"] - 1)
    failed = len(record.get("md_failures", {}))
    reason = stop_reason(record["fraction"], record["explored"], labels, config, failed)
    if reason is not None:
        return reason
    if not (folder / "candidates.xyz").is_file():  # the failed trajectories broke before their first sample
        raise InputError(f"{folder}: round {state['round']}: {failed} trajectories failed before their first sampled "
                         f"frame and no explored frame lies above the threshold: nothing to label (try a smaller "
                         f"--timestep, a smaller --sample-every or a better-trained committee)")
    candidates = read_frames(folder / "candidates.xyz", format="extxyz", require_energy=False)
    n = min(config.max_per_round, config.max_labels - labels)
    # the last frames before a trajectory failed come first: the loop must learn where the dynamics broke
    rank = [np.inf if a.info.get("learn_failure") else float(a.info["learn_spread"]) for a in candidates]
    chosen = pick(candidates, rank, n, config.min_rmsd)
    with atomic_output(folder / "to_label.xyz") as tmp:
        write_frames(tmp, [candidates[k] for k in chosen], format="extxyz")
    _record(folder, picked=len(chosen))
    log.info("round %d: picked %d of %d candidates (largest %s spread, %g A apart)", state["round"], len(chosen),
             len(candidates), config.by, config.min_rmsd)
    return None


def _label_stage(out: Path, state: dict[str, Any], labeller, resumed_here: bool) -> bool:
    """Label the picks (in process, or the external step's file). False: waiting for external labels."""
    folder = round_dir(out, state["round"])
    to_label = read_frames(folder / "to_label.xyz", format="extxyz", require_energy=False)
    if labeller is not None:
        label_frames(to_label, labeller, folder / "labelled.xyz", folder / "failed.jsonl")
    elif not resumed_here:
        return False
    else:
        read_external(to_label, folder / "labelled.xyz", folder / "failed.jsonl")
    failures = failed_ids(folder / "failed.jsonl")
    record = _record(folder, labelled=len(labelled_ids(folder / "labelled.xyz")), failed=len(failures),
                     failures=failures)
    log.info("round %d: %d labelled, %d failed", state["round"], record["labelled"], record["failed"])
    return True


def _train_stage(out: Path, state: dict[str, Any], config: LearnConfig, device: str, progress: bool) -> None:
    """Retrain on all labels so far (none new this round: the committee stays); the next round explores."""
    r = state["round"]
    folder = round_dir(out, r)
    if _read_json(folder / "round.json").get("labelled", 0) > 0:
        result = retrain(state["committee"], DataConfig(**_tuples(state["base"])), _labels_so_far(out, r), config,
                         folder / "committee", device=device, progress=progress)
        state["committee"] = str(Path(result.best).resolve())
        _record(folder, trained=str(result.best), validation=result.metrics)
    else:
        log.warning("round %d: no new labels, the committee is not retrained", r)
        _record(folder, trained=None)
    state["round"] = r + 1


def _tuples(d: dict[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}


def _save(out: Path, state: dict[str, Any]) -> None:
    _write_text(out / "state.json", json.dumps(state, indent=2))


def _start(config: LearnConfig, out: Path) -> dict[str, Any]:
    """A new run's state (written), once the committee and its training files are found."""
    if (out / "state.json").is_file():
        raise InputError("holds a learning run (state.json): continue it with --resume, or choose another --out",
                         path=out)
    committee, ckpt = check_committee(config.committee)
    check_frames(config, ckpt.get("elements"), bool(ckpt.get("periodic", True)))
    base = base_data(config, committee, out)
    state = {"format": STATE_FORMAT, "options": config.to_dict(), "base": asdict(base), "round": 0,
             "stage": "explore", "committee": config.committee, "stopped": None}
    _save(out, state)
    return state


def _resume(out: Path, given: dict[str, Any]) -> tuple[LearnConfig, dict[str, Any]]:
    """The stored state, with the options this call may change (:func:`resumed_options`)."""
    if not (out / "state.json").is_file():
        raise InputError("expected a learning run to resume (state.json), found none", path=out)
    state = json.loads((out / "state.json").read_text())
    if state.get("format") != STATE_FORMAT:
        raise InputError(f"expected state format {STATE_FORMAT}, found {state.get('format')!r}",
                         path=out / "state.json")
    config = resumed_options(LearnConfig.from_dict(state["options"]), given)
    if state["stopped"] is not None and (round_dir(out, state["round"]) / "round.json").is_file():
        _record(round_dir(out, state["round"]), stopped=None)  # the stop rule is checked again with these options
    state["options"], state["stopped"] = config.to_dict(), None
    return config, state


def _result(out: Path, state: dict[str, Any], status: str, reason: str) -> LearnResult:
    rounds = [_read_json(round_dir(out, r) / "round.json") for r in range(state["round"] + 1)]
    to_label = round_dir(out, state["round"]) / "to_label.xyz" if status == "waiting" else None
    return LearnResult(status, reason, state["round"], _count(out, state["round"]), Path(state["committee"]),
                       [r for r in rounds if r], to_label)


def learn(config: LearnConfig | None, out: str | Path, *, resume: bool = False, given: dict[str, Any] | None = None,
          progress: bool = False) -> LearnResult:
    """Active learning: rounds of explore, select, label and retrain until a stop rule fires.

    Each round explores with its committee (MD from ``config.structures`` at each temperature, or
    the frames of ``config.pool``), scores every frame by its calibrated force spread, stops when
    the fraction above ``config.threshold`` is below ``config.stop_fraction`` (or when the label or
    round budget is spent), picks up to ``config.max_per_round`` of the most uncertain frames at
    least ``config.min_rmsd`` apart, labels them (``config.calculator``, or an external step) and
    fine-tunes the committee on every label so far. State and files: the module docstring.

    Args:
        config: the options; None with ``resume`` (the stored ones are used).
        out: the run's folder (held by one process at a time).
        resume: continue the run in ``out`` from where it stopped, was killed or waits for labels.
        given: with ``resume``, options to change (field -> value): those of
            :data:`pbcgnn.learn.config.RESUMABLE`; any other must equal the stored one.
        progress: progress bars of MD and training.

    Returns:
        A :class:`LearnResult`: ``stopped``, or ``waiting`` for the labels of ``to_label``.

    Raises:
        InputError: bad options, not a committee, a calculator that cannot be made, a missing or
            wrong ``labelled.xyz`` on resume, a run already in ``out`` (without ``resume``) or none (with it).
    """
    out = ensure_writable_dir(out).resolve()
    with run_lock(out):
        if resume:
            config, state = _resume(out, given or {})
        else:
            config = config.validate().absolute()
        # the calculator is made before a new run's state is written: a bad one leaves no run behind
        labeller = load_calculator(config.calculator) if config.calculator else None
        device = str(resolve_device(config.device))
        if not resume:
            state = _start(config, out)
        first = True
        while True:
            stage, reason = state["stage"], None
            if stage == "explore":
                reason = _explore_stage(out, state, config, device, progress)
            elif stage == "select":
                reason = _select_stage(out, state, config)
            elif stage == "label" and not _label_stage(out, state, labeller, resumed_here=first and resume):
                _save(out, state)
                return _result(out, state, "waiting", "the picks wait for external labels")
            elif stage == "train":
                _train_stage(out, state, config, device, progress)
            if reason is not None:
                state["stopped"] = reason
                _save(out, state)
                if round_dir(out, state["round"]).is_dir():
                    _record(round_dir(out, state["round"]), stopped=reason)
                log.info("stopped: %s", reason)
                return _result(out, state, "stopped", reason)
            state["stage"] = {"explore": "select", "select": "label", "label": "train", "train": "explore"}[stage]
            _save(out, state)
            first = False
