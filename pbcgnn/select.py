"""Query by committee: rank a pool of frames by a committee's calibrated spread and write the most informative ones.

The pool is read as a stream, three times, in memory that does not grow with its size: every
frame is checked, then scored a chunk of frames at a time (keeping three spreads per frame), then
the chosen frames are picked out of a last pass and written.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from ase import Atoms

from .checkpoint import load_checkpoint
from .dataset import check_frames, iter_graphs
from .errors import InputError, ensure_writable_dir
from .evaluation.metrics import SPREAD_MEASURES, frame_spread
from .evaluation.predict import graph_chunks, predict
from .io import iter_frames, write_format, write_frames
from .io.checks import check_supported
from .model import Committee
from .model.tabulate import tabulate as tabulated

__all__ = ["rank_by_spread", "select_frames"]

log = logging.getLogger(__name__)


def rank_by_spread(spread: np.ndarray, n: int | None = None) -> np.ndarray:
    """Indices of the ``n`` largest spreads, largest first (ties: lower index first)."""
    order = np.argsort(-np.asarray(spread, dtype=float), kind="stable")
    return order if n is None else order[:n]


def _check_request(by: str, n: int, out: str | os.PathLike, out_format: str | None) -> str:
    """The output format, once ``by``, ``n`` and ``out`` are checked: before any work, as scoring a pool takes hours."""
    if by not in SPREAD_MEASURES:
        raise InputError(f"expected a spread measure in {SPREAD_MEASURES}, found {by!r}")
    if n < 1:
        raise InputError(f"expected n >= 1 frames to select, found {n}")
    out_format = write_format(out, out_format, n)
    ensure_writable_dir(Path(out).parent)
    return out_format


def select_frames(
    checkpoint: str | os.PathLike,
    pool: str | os.PathLike,
    n: int,
    out: str | os.PathLike,
    *,
    by: str = "forces",
    out_format: str | None = None,
    format: str | None = None,
    length_unit: str | None = None,
    energy_unit: str | None = None,
    device: str = "cpu",
    batch_size: int = 8,
    tabulate: bool = True,
) -> list[dict[str, float]]:
    """Query by committee: write the ``n`` frames of ``pool`` on which the committee disagrees most.

    Spreads are the committee's calibrated ones (:mod:`pbcgnn.model.calibration`; a power law
    can reorder frames by their per-frame RMS force spread); a checkpoint without a calibration
    ranks by the raw spread and says so in a warning. The frames are written as structures only
    (labels a pool frame carries, e.g. from the MD run that made it, are dropped: they are not the
    reference method's), with ``committee_spread`` (the ranking value), ``pool_index`` and an
    n2p2 ``comment``.

    Args:
        checkpoint: a committee checkpoint (``pbcgnn train --committee N``).
        pool: candidate frames in any readable format; energies are not needed.
        n: how many frames to select (all if the pool is smaller).
        out: output file; format by ``out_format`` or the name (``input.data``/``*.data``: n2p2).
        by: spread measure, one of :data:`SPREAD_MEASURES`.
        format, length_unit, energy_unit: how to read ``pool`` (:func:`pbcgnn.io.read_frames`).
        device, batch_size: for the predictions.
        tabulate: score with the members' filters tabulated (:func:`pbcgnn.model.tabulate.tabulate`:
            equal to the exact networks within float32 rounding and about 6x faster for a SchNet
            64x3 committee on 192-atom water); ``False``: the filter networks.

    Returns:
        Per selected frame, largest spread first: ``pool_index`` and the three spreads.

    Raises:
        InputError: not a committee checkpoint, a bad ``by``, ``n`` or output name (checked before
            any work), an unreadable pool, or a pool frame the model cannot know (elements it
            was not trained on, no 3-D periodic cell: :func:`pbcgnn.io.checks.check_supported`).
        OutputError: the folder of ``out`` cannot be written (checked before any work).
    """
    out_format = _check_request(by, n, out, out_format)
    model, ckpt = load_checkpoint(checkpoint, device=device)
    if not isinstance(model, Committee) or len(model) < 2:
        raise InputError("expected a committee checkpoint (train with --committee N, N >= 2)", path=checkpoint)
    if tabulate:
        model = tabulated(model)
    if model.calibration.is_identity:
        log.warning("%s has no spread calibration: ranking by the members' raw spread (fit one with "
                    "`pbcgnn calibrate`)", checkpoint)
    read = dict(format=format, length_unit=length_unit, energy_unit=energy_unit, require_energy=False)
    support = {"elements": ckpt.get("elements"), "periodic": bool(ckpt.get("periodic", True))}
    size = check_frames(_supported(pool, read, **support))  # all of it before hours of scoring
    spread = _score(model, iter_graphs(pool, model.cutoff, **support, **read), device, batch_size)
    chosen = rank_by_spread(spread[by], n).tolist()
    picked = _pick(iter_frames(pool, **read), chosen)
    selected, rows = [], []
    for k in chosen:
        src = picked[k]
        atoms = Atoms(numbers=src.numbers, positions=src.positions, cell=src.cell, pbc=src.pbc)
        atoms.info.update(pool_index=k, committee_spread=float(spread[by][k]), committee_spread_measure=by,
                          comment=f"pbcgnn select: pool frame {k} of {os.fspath(pool)}, "
                                  f"{by} spread {spread[by][k]:.6g}")
        selected.append(atoms)
        rows.append({"pool_index": k, **{m: float(spread[m][k]) for m in SPREAD_MEASURES}})
    write_frames(out, selected, format=out_format)
    log.info("selected %d of %d frames by %s spread into %s", len(selected), size, by, out)
    return rows


def _supported(pool: str | os.PathLike, read: dict, elements: Sequence[int] | None,
               periodic: bool) -> Iterator[Atoms]:
    """The pool's frames, each checked as eval and md check it: a spread on unknown elements means nothing."""
    for k, atoms in enumerate(iter_frames(pool, **read)):
        check_supported(atoms, elements, periodic, pool, k)
        yield atoms


def _score(model: Committee, graphs: Iterator, device: str, batch_size: int) -> dict[str, np.ndarray]:
    """The per-frame spreads (:func:`~pbcgnn.evaluation.metrics.frame_spread`) of a stream of
    graphs, predicted a chunk at a time: [F] each, nothing per atom kept."""
    parts: dict[str, list[np.ndarray]] = {m: [] for m in SPREAD_MEASURES}
    for chunk in graph_chunks(graphs, batch_size):
        pred = predict(model, chunk, device=device, batch_size=batch_size)
        for measure, values in frame_spread(pred.energy_std, pred.forces_std, pred.natoms).items():
            parts[measure].append(values)
    return {m: np.concatenate(values) for m, values in parts.items()}


def _pick(frames: Iterator[Atoms], wanted: Sequence[int]) -> dict[int, Atoms]:
    """The frames of the given indices, read up to the last of them (checked already: no need to read on)."""
    wanted_set, picked = set(wanted), {}
    for k, atoms in enumerate(frames):
        if k in wanted_set:
            picked[k] = atoms
            if len(picked) == len(wanted_set):
                break
    return picked
