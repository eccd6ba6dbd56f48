"""Which columns of an extended XYZ (or other ``ase.io``) frame are the energy, forces and stress.

By default the energy is ASE's ``energy`` (extxyz ``energy=``), else the ``info`` key
``energy``, ``Energy``, ``TotEnergy`` or ``free_energy``; forces are ``forces`` (extxyz
``forces:R:3``), else the array ``force``; stress is ``stress``. :class:`LabelKeys` names other
columns instead (MACE-style ``REF_energy``, ``REF_forces``, ``REF_stress``). Columns that look
like labels (their name holds energy, force, stress or virial) but are not read are reported,
so a file whose forces sit under another key does not train on energies alone unnoticed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ase import Atoms

__all__ = ["ENERGY_KEYS", "FORCE_KEYS", "LabelKeys", "Labels", "take_labels", "unread_message"]

ENERGY_KEYS = ("energy", "Energy", "TotEnergy", "free_energy")
FORCE_KEYS = ("forces", "force")
STRESS_KEYS = ("stress",)
#: Substrings (lower case) of column names that look like labels.
_LABEL_WORDS = ("energ", "force", "stress", "virial")


@dataclass(frozen=True)
class LabelKeys:
    """Column names of the labels; ``None`` means the defaults in the module docstring.

    Attributes:
        energy: ``info`` key (or ASE result) holding the total energy.
        forces: per-atom array [N, 3] holding the forces.
        stress: ``info`` key (or ASE result) holding the stress (6 Voigt or 9 values).
    """

    energy: str | None = None
    forces: str | None = None
    stress: str | None = None

    def candidates(self, what: str) -> tuple[str, ...]:
        """The column names tried, in order, for ``what`` (energy, forces, stress)."""
        named = getattr(self, what)
        if named is not None:
            return (named,)
        return {"energy": ENERGY_KEYS, "forces": FORCE_KEYS, "stress": STRESS_KEYS}[what]

    def given(self) -> dict[str, str]:
        """The keys the user named, e.g. ``{"forces": "REF_forces"}``."""
        return {w: k for w in ("energy", "forces", "stress") if (k := getattr(self, w)) is not None}


@dataclass
class Labels:
    """The label values of one frame (file units), where each came from, and what was left."""

    values: dict[str, Any] = field(default_factory=dict)  # "energy"/"forces"/"stress" -> raw value
    sources: dict[str, str] = field(default_factory=dict)  # "energy" -> column name read
    unread: set[str] = field(default_factory=set)  # look-alike columns not read


def _looks_like_label(name: str) -> bool:
    low = name.lower()
    # has_forces: pbcgnn's own flag, in files that plain ase.io.write made from frames it read
    return any(word in low for word in _LABEL_WORDS) and not low.startswith("n2p2_") and low != "has_forces"


def take_labels(atoms: Atoms, keys: LabelKeys) -> Labels:
    """Take the labels of a frame ``ase.io`` just read.

    A label found in ``atoms.info`` or ``atoms.arrays`` is removed there, so no unconverted copy
    stays behind; results are ASE's calculator results.

    Returns:
        The values (as read, not converted), the column each came from and the unread
        look-alike columns (``free_energy`` beside ``energy`` is not counted: ASE writes both).
    """
    results = dict(atoms.calc.results) if atoms.calc is not None else {}
    labels = Labels()
    for what, store in (("energy", atoms.info), ("forces", atoms.arrays), ("stress", atoms.info)):
        for name in keys.candidates(what):
            if name in results:
                labels.values[what], labels.sources[what] = results.pop(name), name
                break
            if name in store:
                labels.values[what], labels.sources[what] = store.pop(name), name
                break
    if labels.sources.get("energy") == "energy":
        results.pop("free_energy", None)
    left = [*results, *atoms.info, *(k for k in atoms.arrays if k not in ("numbers", "positions"))]
    labels.unread = {name for name in left if _looks_like_label(name)}
    return labels


def unread_message(path: str, unread: set[str], sources: dict[str, set[str]]) -> str:
    """One line naming the look-alike columns a file has but pbcgnn does not read."""
    read = ", ".join(f"{what} from {'/'.join(sorted(sources.get(what, ()))) or 'nowhere'}"
                     for what in ("energy", "forces", "stress"))
    return (f"{path}: not reading column(s) {', '.join(sorted(unread))} ({read}); "
            "name the columns to train on with --energy-key, --forces-key or --stress-key")
