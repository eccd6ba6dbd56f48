"""A round's picks: the most uncertain candidates, never two of nearly the same configuration, capped."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from ase import Atoms

__all__ = ["configuration_rmsd", "pick"]


def configuration_rmsd(a: Atoms, b: Atoms) -> float:
    """RMS displacement (Angstrom) between two frames of the same atoms in the same cell, each
    atom's displacement taken to its nearest periodic image; ``inf`` for other atoms or another cell.

    The dynamics keeps the centre of mass fixed, so frames of one trajectory need no alignment.
    """
    if not np.array_equal(a.numbers, b.numbers) or not np.allclose(a.cell.array, b.cell.array, atol=1e-8):
        return float("inf")
    d = b.positions - a.positions  # [N, 3] Angstrom
    if a.cell.rank == 3:
        frac = d @ np.linalg.inv(a.cell.array)
        frac -= np.round(frac) * a.pbc
        d = frac @ a.cell.array
    return float(np.sqrt(np.mean(np.sum(d * d, axis=1))))


def pick(candidates: Sequence[Atoms], spreads: Sequence[float], n: int, min_rmsd: float) -> list[int]:
    """Indices of up to ``n`` candidates, largest spread first (ties: lower index first), each
    skipped when it lies within ``min_rmsd`` (Angstrom, :func:`configuration_rmsd`) of one already picked.

    Args:
        candidates: frames above the threshold.
        spreads: their spreads, eV/Angstrom.
        n: the most to pick.
        min_rmsd: the smallest RMSD between two picks; 0 skips nothing.
    """
    order = np.argsort(-np.asarray(spreads, dtype=float), kind="stable")
    chosen: list[int] = []
    for k in order.tolist():
        if len(chosen) == n:
            break
        if all(configuration_rmsd(candidates[p], candidates[k]) >= min_rmsd for p in chosen):
            chosen.append(k)
    return chosen
