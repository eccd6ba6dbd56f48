"""What ``pbcgnn inspect`` reports of a data file: statistics gathered one frame at a time, each frame checked as training checks it."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from ase import Atoms

from .frames import checked_frames

__all__ = ["FrameSummary", "summarize_frames"]


@dataclass
class FrameSummary:
    """Counts and ranges over frames (eV, Angstrom); memory does not grow with the frame count.

    Attributes:
        frames, with_forces: frames, and those with reference forces.
        atoms, atoms_min, atoms_max: atoms in all, fewest and most in a frame.
        symbols: the chemical symbols present.
        energy_range: (lowest, highest) energy per atom in eV over frames with an energy, or None.
        volume_range: (smallest, largest) cell volume in A^3 over 3-D periodic frames, or None.
    """

    frames: int = 0
    with_forces: int = 0
    atoms: int = 0
    atoms_min: int | None = None
    atoms_max: int | None = None
    symbols: set[str] = field(default_factory=set)
    energy_range: tuple[float, float] | None = None
    volume_range: tuple[float, float] | None = None

    def add(self, atoms: Atoms) -> None:
        """Count one frame in."""
        n = len(atoms)
        self.frames += 1
        self.with_forces += bool(atoms.info.get("has_forces", False))
        self.atoms += n
        self.atoms_min = n if self.atoms_min is None else min(self.atoms_min, n)
        self.atoms_max = n if self.atoms_max is None else max(self.atoms_max, n)
        self.symbols.update(atoms.get_chemical_symbols())
        if atoms.calc is not None and "energy" in atoms.calc.results:
            self.energy_range = _widen(self.energy_range, atoms.calc.results["energy"] / n)
        if atoms.pbc.all():
            self.volume_range = _widen(self.volume_range, atoms.cell.volume)


def _widen(bounds: tuple[float, float] | None, value: float) -> tuple[float, float]:
    return (value, value) if bounds is None else (min(bounds[0], value), max(bounds[1], value))


def summarize_frames(frames: Iterable[Atoms]) -> FrameSummary:
    """The summary of ``frames`` (e.g. :func:`pbcgnn.io.iter_frames`, read as it goes), each frame
    first checked as building training graphs checks it (:func:`~pbcgnn.dataset.checked_frames`).

    Raises:
        InputError: the reader's, or overlapping atoms / an unusable cell, naming file and frame.
    """
    summary = FrameSummary()
    for atoms in checked_frames(frames):
        summary.add(atoms)
    return summary
