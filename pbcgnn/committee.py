r"""Committees of models: mean and spread of energy and forces, calibration, query-by-committee selection.

A committee of M independently trained members predicts the mean :math:`\bar E = \frac1M
\sum_m E_m` (forces are then the mean member forces, exactly :math:`-\partial \bar E /
\partial \mathbf r`) and, as its uncertainty, the sample standard deviation over members
(``correction=1``) of the total energy and of every force component.

Per-frame spreads (``frame_spread``) used for calibration and selection:

* ``energy``: energy std per atom, eV/atom;
* ``forces``: RMS over the frame's atoms and components of the force std, eV/Angstrom;
* ``max_force``: the largest per-atom force deviation ``|std(F_i)|`` (as DP-GEN), eV/Angstrom.

Calibration compares them with the per-frame errors of the committee mean (|dE|/N and the
per-frame force RMSE) by Spearman rank correlation: does a larger spread mean a larger error?
"""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor
from torch.nn import ModuleList
from torch_geometric.data import Data

from .errors import InputError
from .model import compute_properties

if TYPE_CHECKING:
    from .evaluate import Predictions

__all__ = ["Committee", "committee_properties", "frame_spread", "frame_errors", "spearman",
           "calibration_metrics", "rank_by_spread", "select_frames", "bootstrap_indices", "SPREAD_MEASURES"]

log = logging.getLogger(__name__)

SPREAD_MEASURES = ("forces", "max_force", "energy")


class Committee(torch.nn.Module):
    """M energy models evaluated on the same graphs; ``forward`` gives their mean energy.

    It has SchNet's ``forward`` signature, so :func:`pbcgnn.model.compute_properties` and the
    evaluation code use it unchanged (mean energy, forces and stress).
    :meth:`committee_properties` adds the spread; :class:`pbcgnn.PbcgnnCalculator` calls it and
    puts ``energy_std``, ``forces_std`` and ``energies`` into ``results``.

    Args:
        members: models with a ``cutoff`` attribute (Angstrom) and SchNet's ``forward``;
            all with the same cutoff.

    Attributes:
        members: the ``ModuleList`` of models (state-dict keys ``members.K.*``).
        cutoff: the common cutoff, Angstrom.
    """

    def __init__(self, members: Sequence[torch.nn.Module]) -> None:
        super().__init__()
        if len(members) < 1:
            raise ValueError("Committee: expected at least one member, found none")
        cutoffs = {float(m.cutoff) for m in members}
        if len(cutoffs) != 1:
            raise ValueError(f"Committee: expected members with one cutoff, found {sorted(cutoffs)}")
        self.members = ModuleList(members)
        self.cutoff = cutoffs.pop()

    def __len__(self) -> int:
        return len(self.members)

    def reset_parameters(self) -> None:
        """Re-draw every member's weights (their fitted references are kept)."""
        for member in self.members:
            member.reset_parameters()

    def member_energies(self, z: Tensor, pos: Tensor, edge_index: Tensor, cell_offsets: Tensor, cell: Tensor,
                        batch: Tensor | None = None, num_graphs: int | None = None) -> Tensor:
        """Energies of every member, [M, B] float64 eV; arguments as in :meth:`forward`."""
        return torch.stack([m(z, pos, edge_index, cell_offsets, cell, batch, num_graphs) for m in self.members])

    def forward(self, z: Tensor, pos: Tensor, edge_index: Tensor, cell_offsets: Tensor, cell: Tensor,
                batch: Tensor | None = None, num_graphs: int | None = None) -> Tensor:
        """Mean total energy per frame, [B] float64 eV; arguments as :meth:`pbcgnn.model.SchNet.forward`."""
        return self.member_energies(z, pos, edge_index, cell_offsets, cell, batch, num_graphs).mean(0)

    def committee_properties(self, data: Data, forces: bool = True, stress: bool = False) -> dict[str, Tensor]:
        """Mean and spread of energy, forces and stress; see :func:`committee_properties`."""
        return committee_properties(self, data, forces=forces, stress=stress)

    def extra_repr(self) -> str:
        return f"size={len(self.members)}, cutoff={self.cutoff:g}"


def _std(x: Tensor) -> Tensor:
    """Sample std over dim 0 (zero for one member)."""
    return x.std(0, correction=1) if x.shape[0] > 1 else torch.zeros_like(x[0])


def committee_properties(model: Committee, data: Data, forces: bool = True,
                         stress: bool = False) -> dict[str, Tensor]:
    """Mean and sample standard deviation over members of energy, forces and stress.

    Each member is differentiated separately (:func:`pbcgnn.model.compute_properties`);
    outputs are detached.

    Args:
        model: a :class:`Committee`.
        data: a PyG ``Data`` or ``Batch`` of periodic graphs (fields of :mod:`pbcgnn.graph`).
        forces, stress: what to compute besides the energy.

    Returns:
        ``energy`` and ``energy_std`` [B] float64 eV, ``energies`` [M, B]; with ``forces``:
        ``forces``, ``forces_std`` [N, 3] eV/Angstrom; with ``stress``: ``stress``,
        ``stress_std`` [B, 3, 3] eV/Angstrom^3.
    """
    outs = [compute_properties(m, data, forces=forces, stress=stress) for m in model.members]
    result: dict[str, Tensor] = {}
    for key in ("energy", "forces", "stress"):
        if key in outs[0]:
            stacked = torch.stack([o[key].detach() for o in outs])  # [M, ...]
            result[key] = stacked.mean(0)
            result[f"{key}_std"] = _std(stacked)
            if key == "energy":
                result["energies"] = stacked
    return result


def frame_spread(energy_std: np.ndarray, forces_std: np.ndarray, natoms: np.ndarray) -> dict[str, np.ndarray]:
    """Per-frame committee spreads (see the module docstring).

    Args:
        energy_std: [F] total-energy std, eV.
        forces_std: [N, 3] force-component std, eV/Angstrom, frames concatenated.
        natoms: [F] atoms per frame.

    Returns:
        ``energy`` [F] eV/atom, ``forces`` [F] and ``max_force`` [F] eV/Angstrom.
    """
    natoms = np.asarray(natoms)
    frame = np.repeat(np.arange(len(natoms)), natoms)  # [N]
    var_atom = (np.asarray(forces_std) ** 2).sum(1)  # [N] eV^2/A^2
    forces = np.sqrt(np.bincount(frame, var_atom, len(natoms)) / (3 * natoms))
    max_force = np.zeros(len(natoms))
    np.maximum.at(max_force, frame, np.sqrt(var_atom))
    return {"energy": np.asarray(energy_std) / natoms, "forces": forces, "max_force": max_force}


def frame_errors(pred: Predictions) -> dict[str, np.ndarray]:
    """Per-frame errors of the predictions: ``energy`` |dE|/N [F] eV/atom, ``forces`` RMSE [F]
    eV/Angstrom (NaN for frames without reference forces)."""
    frame = np.repeat(np.arange(len(pred.natoms)), pred.natoms)
    sq = ((pred.forces - pred.forces_ref) ** 2).sum(1)  # [N]
    forces = np.sqrt(np.bincount(frame, sq, len(pred.natoms)) / (3 * pred.natoms))
    forces[~pred.has_forces] = np.nan
    return {"energy": np.abs(pred.energy - pred.energy_ref) / pred.natoms, "forces": forces}


def _rank(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given their average rank (as ``scipy.stats.rankdata``)."""
    order = np.argsort(x, kind="stable")
    sorted_x = x[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_x)) + 1]
    ends = np.r_[starts[1:], len(x)]
    avg = (starts + ends + 1) / 2.0  # average of ranks start+1 .. end
    ranks = np.empty(len(x))
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two [F] arrays (pairs with a NaN are dropped); NaN if undefined."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    keep = np.isfinite(a) & np.isfinite(b)
    if keep.sum() < 3:
        return float("nan")
    ra, rb = _rank(a[keep]), _rank(b[keep])
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = np.sqrt((ra**2).sum() * (rb**2).sum())
    return float((ra * rb).sum() / denom) if denom > 0 else float("nan")


def calibration_metrics(pred: Predictions) -> dict[str, float]:
    """How well the committee spread predicts the error of its mean, per frame.

    Returns:
        ``spearman_energy`` (energy std per atom vs |dE|/N), ``spearman_forces`` (RMS force std
        vs force RMSE), ``spearman_forces_atoms`` (a per-atom diagnostic: norm of the force std
        vs norm of the force error), the RMS spreads ``energy_spread_mev_per_atom`` and
        ``force_spread_mev_per_A``, and ``calibration_energy``/``calibration_forces``: RMS error
        over RMS spread (1 for a calibrated committee; multiply the spread by it).
    """
    if pred.energy_std is None or pred.forces_std is None:
        raise ValueError("calibration_metrics: predictions carry no committee spread")
    spread = frame_spread(pred.energy_std, pred.forces_std, pred.natoms)
    err = frame_errors(pred)
    f_mask = pred.atom_has_forces
    f_err = (pred.forces - pred.forces_ref)[f_mask]
    f_spread = pred.forces_std[f_mask]
    rms = lambda x: float(np.sqrt(np.mean(np.square(x)))) if np.size(x) else float("nan")  # noqa: E731
    ok = np.isfinite(err["energy"])
    return {
        "spearman_energy": spearman(spread["energy"], err["energy"]),
        "spearman_forces": spearman(spread["forces"], err["forces"]),
        "spearman_forces_atoms": spearman(np.linalg.norm(f_spread, axis=1), np.linalg.norm(f_err, axis=1)),
        "energy_spread_mev_per_atom": 1000 * rms(spread["energy"]),
        "force_spread_mev_per_A": 1000 * rms(f_spread),
        "calibration_energy": rms(err["energy"][ok]) / rms(spread["energy"][ok]) if ok.any() else float("nan"),
        "calibration_forces": rms(f_err) / rms(f_spread) if f_spread.size else float("nan"),
    }


def bootstrap_indices(n: int, seed: int) -> torch.Tensor:
    """A bootstrap resample of ``range(n)``: n indices drawn with replacement, [n] int64, sorted.

    Depends only on ``n`` and ``seed`` (an explicit generator; the global RNG is untouched).
    About 63 % of the frames appear, some several times.
    """
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(n, (n,), generator=generator).sort().values


def rank_by_spread(spread: np.ndarray, n: int | None = None) -> np.ndarray:
    """Indices of the ``n`` largest spreads, largest first (ties: lower index first)."""
    order = np.argsort(-np.asarray(spread, dtype=float), kind="stable")
    return order if n is None else order[:n]


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

    The frames are written as structures only (labels a pool frame carries, e.g. from the MD
    run that made it, are dropped: they are not the reference method's), with
    ``committee_spread`` (the ranking value), ``pool_index`` and an n2p2 ``comment``.

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
        InputError: not a committee checkpoint, a bad ``by`` or ``n``, unreadable pool.
    """
    from ase import Atoms

    from .dataset import FrameDataset
    from .evaluate import predict
    from .io import read_frames, write_frames
    from .train.checkpoint import load_checkpoint

    if by not in SPREAD_MEASURES:
        raise InputError(f"expected a spread measure in {SPREAD_MEASURES}, found {by!r}")
    if n < 1:
        raise InputError(f"expected n >= 1 frames to select, found {n}")
    model, _ = load_checkpoint(checkpoint, device=device)
    if not isinstance(model, Committee) or len(model) < 2:
        raise InputError("expected a committee checkpoint (train with --committee N, N >= 2)", path=checkpoint)
    opts = dict(format=format, length_unit=length_unit, energy_unit=energy_unit)
    frames = read_frames(pool, require_energy=False, **opts)
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
