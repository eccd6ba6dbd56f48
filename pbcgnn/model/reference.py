"""Per-element reference energies and the energy scale: fit (with a rank check) and float64 buffers."""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
import torch

__all__ = ["AtomicReference", "fit_reference_energies", "estimate_scale"]

logger = logging.getLogger(__name__)


class AtomicReference(torch.nn.Module):
    r"""Maps network outputs to atomic energies: :math:`E_i = s\,y_i + E_0[Z_i]`.

    ``e0`` [max_z + 1] (eV, indexed by atomic number) and ``scale`` [] (eV) are buffers, so
    they are saved with the model and applied identically in training and inference. They
    stay float64 whatever dtype the model is cast to: a float32 total of -33 keV resolves
    only ~4 meV, so the large reference part is added in float64.

    Args:
        max_z: largest atomic number (default 118).

    Shapes:
        - **input:** network outputs :math:`y` (N) any float dtype, atomic numbers (N) int64
        - **output:** atomic energies (N) float64, eV
    """

    def __init__(self, max_z: int = 118) -> None:
        super().__init__()
        self.register_buffer("e0", torch.zeros(max_z + 1, dtype=torch.float64))  # [max_z+1] eV
        self.register_buffer("scale", torch.tensor(1.0, dtype=torch.float64))  # [] eV

    def set_values(self, e0: Mapping[int, float] | None = None, scale: float | None = None) -> None:
        """Overwrite reference energies (eV, by Z; elements not given keep their value) and/or scale (eV)."""
        with torch.no_grad():
            for z, value in (e0 or {}).items():
                self.e0[int(z)] = float(value)
            if scale is not None:
                if not scale > 0:
                    raise ValueError(f"AtomicReference: scale must be positive, got {scale}")
                self.scale.fill_(float(scale))

    def forward(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.scale * y.to(torch.float64) + self.e0[z]

    def _apply(self, fn, recurse: bool = True):  # noqa: ANN001 (torch's private signature)
        # Module.float()/.half()/.to(dtype) cast every floating buffer. Keep the float64
        # originals (not a float16 round trip, which would lose digits) on the new device.
        before = {name: self._buffers[name] for name in ("e0", "scale")}
        super()._apply(fn, recurse)
        for name, old in before.items():
            new = self._buffers[name]
            if new.dtype != torch.float64:
                self._buffers[name] = old.to(device=new.device, dtype=torch.float64)
        return self

    def extra_repr(self) -> str:
        nonzero = {int(z): round(float(v), 6) for z, v in enumerate(self.e0) if v != 0}
        return f"e0={nonzero}, scale={float(self.scale):.6g}"


def fit_reference_energies(
    numbers_per_frame: Sequence[np.ndarray], energies: np.ndarray
) -> tuple[dict[int, float], dict]:
    """Least-squares per-element reference energies from total energies.

    Solves ``counts @ e0 ~= energies`` in float64, where ``counts[f, k]`` is the number of
    atoms of element k in frame f.

    Rank-deficient data (pure water: every frame has H = 2 O, so the columns are
    collinear) does not determine the per-element values: only the combinations in the
    span of the training compositions, here ``2 e0[H] + e0[O]``, are fixed. Any solution
    then gives the same reference energy for every frame whose composition lies in that
    span, which is all the model ever sees of e0 during training and when simulating the
    same chemistry; the network learns the same residual either way. We log a warning and
    take the minimum-norm least-squares solution (``numpy.linalg.lstsq``), a deterministic
    choice. The individual values are then not physical atomic energies: do not compare
    them across datasets or use them for other compositions (e.g. an isolated H atom).

    Args:
        numbers_per_frame: per frame, the atomic numbers [N_f] of its atoms.
        energies: [F] total energies, eV.

    Returns:
        e0: atomic number -> reference energy in eV, for each element present.
        info: ``elements`` (sorted Z), ``rank`` of the count matrix, ``full_rank`` (bool),
        ``rmse_per_atom`` (eV, residual after subtracting the reference).
    """
    energies = np.asarray(energies, dtype=np.float64).reshape(-1)
    if len(numbers_per_frame) != len(energies) or len(energies) == 0:
        raise ValueError(
            f"fit_reference_energies: expected one energy per frame and at least one frame, "
            f"found {len(numbers_per_frame)} frames and {len(energies)} energies"
        )
    numbers = [np.asarray(n, dtype=np.int64).reshape(-1) for n in numbers_per_frame]
    elements = np.unique(np.concatenate(numbers))
    counts = np.stack([(n[:, None] == elements[None, :]).sum(0) for n in numbers]).astype(np.float64)
    rank = int(np.linalg.matrix_rank(counts))
    if rank < len(elements):
        logger.warning(
            "Composition matrix has rank %d < %d elements %s (e.g. pure water, H:O always 2:1): "
            "per-element reference energies are not determined; using the minimum-norm "
            "least-squares split, which is exact for compositions in the span of the training data",
            rank, len(elements), elements.tolist(),
        )
    solution, *_ = np.linalg.lstsq(counts, energies, rcond=None)
    residual = (energies - counts @ solution) / counts.sum(1)
    info = {
        "elements": elements.tolist(),
        "rank": rank,
        "full_rank": rank == len(elements),
        "rmse_per_atom": float(np.sqrt(np.mean(residual**2))),
    }
    return {int(z): float(v) for z, v in zip(elements, solution)}, info


def estimate_scale(
    forces_list: Sequence[np.ndarray | None], residual_energy_per_atom: np.ndarray
) -> float:
    """Energy scale (eV) for the network output: RMS force component, else residual energy spread.

    Forces (eV/Angstrom over a length scale of ~1 Angstrom) set the natural size of
    per-atom energy variations and are plentiful; the energy spread is the fallback for
    energy-only data.

    Args:
        forces_list: per frame, forces [N_f, 3] in eV/Angstrom, or None where absent.
        residual_energy_per_atom: [F] (E - sum e0) / N per frame, eV.

    Returns:
        A positive float; 1.0 when the data give no usable (finite, non-zero) scale.
    """
    forces = [np.asarray(f, dtype=np.float64).reshape(-1) for f in forces_list if f is not None]
    forces = [f for f in forces if f.size]
    if forces:
        scale = float(np.sqrt(np.mean(np.concatenate(forces) ** 2)))
    else:
        residual = np.asarray(residual_energy_per_atom, dtype=np.float64).reshape(-1)
        scale = float(np.std(residual)) if residual.size > 1 else 0.0
    if not np.isfinite(scale) or scale <= 1e-12:
        logger.warning("estimate_scale: no usable scale from the data (got %r); using 1.0 eV", scale)
        return 1.0
    return scale
