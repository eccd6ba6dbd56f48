"""Query by committee: rank a pool of frames by a committee's calibrated spread and write the most informative ones."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
from ase import Atoms

from .checkpoint import load_checkpoint
from .dataset import FrameDataset
from .errors import InputError, ensure_writable_dir
from .evaluation.metrics import SPREAD_MEASURES, frame_spread
from .evaluation.predict import predict
from .io import read_frames, write_format, write_frames
from .io.checks import check_supported
from .model import Committee

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
    if model.calibration.is_identity:
        log.warning("%s has no spread calibration: ranking by the members' raw spread (fit one with "
                    "`pbcgnn calibrate`)", checkpoint)
    opts = dict(format=format, length_unit=length_unit, energy_unit=energy_unit)
    frames = read_frames(pool, require_energy=False, **opts)
    for k, atoms in enumerate(frames):  # the check of eval and md: a spread on unknown elements means nothing
        check_supported(atoms, ckpt.get("elements"), bool(ckpt.get("periodic", True)), pool, k)
    dataset = FrameDataset(pool, model.cutoff, require_energy=False, **opts)
    pred = predict(model, dataset, device=device, batch_size=batch_size)
    spread = frame_spread(pred.energy_std, pred.forces_std, pred.natoms)
    chosen = rank_by_spread(spread[by], n)
    selected, rows = [], []
    for k in chosen.tolist():
        src = frames[k]
        atoms = Atoms(numbers=src.numbers, positions=src.positions, cell=src.cell, pbc=src.pbc)
        atoms.info.update(pool_index=k, committee_spread=float(spread[by][k]), committee_spread_measure=by,
                          comment=f"pbcgnn select: pool frame {k} of {os.fspath(pool)}, "
                                  f"{by} spread {spread[by][k]:.6g}")
        selected.append(atoms)
        rows.append({"pool_index": k, **{m: float(spread[m][k]) for m in SPREAD_MEASURES}})
    write_frames(out, selected, format=out_format)
    log.info("selected %d of %d frames by %s spread into %s", len(selected), len(frames), by, out)
    return rows
