"""The only unit conversion factors in pbcgnn (CODATA 2018), to eV and Angstrom.

Internally pbcgnn uses eV, Angstrom, eV/Angstrom, eV/Angstrom^3 and amu, as ASE
does. Readers convert once, here; no other module multiplies by Bohr or Hartree.

The table is CODATA 2018 (``ase.units.create_units("2018")``), the one used to
make the shared reference water sets. ASE's module-level constants are CODATA
2014, which differs by about 0.27 meV per 48-atom water frame in total energy.
"""
from __future__ import annotations

from ase.units import create_units

from .errors import InputError

CODATA_VERSION = "2018"
_U = create_units(CODATA_VERSION)

BOHR: float = _U["Bohr"]  #: Angstrom per Bohr
HARTREE: float = _U["Hartree"]  #: eV per Hartree
KCAL_PER_MOL: float = _U["kcal"] / _U["mol"]  #: eV per kcal/mol
KJ_PER_MOL: float = _U["kJ"] / _U["mol"]  #: eV per kJ/mol

#: Angstrom per unit of length.
LENGTH_UNITS: dict[str, float] = {"angstrom": 1.0, "bohr": BOHR, "nm": 10.0}
#: eV per unit of energy.
ENERGY_UNITS: dict[str, float] = {
    "ev": 1.0,
    "hartree": HARTREE,
    "kcal/mol": KCAL_PER_MOL,
    "kj/mol": KJ_PER_MOL,
}

_ALIASES = {"a": "angstrom", "ang": "angstrom", "å": "angstrom", "ha": "hartree", "au": None}


def _lookup(table: dict[str, float], name: str, kind: str) -> float:
    key = name.strip().lower()
    key = _ALIASES.get(key, key) or key
    if key not in table:
        raise InputError(f"unknown {kind} unit {name!r}; expected one of {', '.join(table)}")
    return table[key]


def length_factor(name: str) -> float:
    """Angstrom per one ``name`` (``"bohr"``, ``"angstrom"``, ``"nm"``)."""
    return _lookup(LENGTH_UNITS, name, "length")


def energy_factor(name: str) -> float:
    """eV per one ``name`` (``"hartree"``, ``"ev"``, ``"kcal/mol"``, ``"kj/mol"``)."""
    return _lookup(ENERGY_UNITS, name, "energy")
