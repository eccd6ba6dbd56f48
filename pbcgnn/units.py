"""The only unit conversion factors in pbcgnn (CODATA 2018), to eV and Angstrom.

Internally pbcgnn uses eV, Angstrom, eV/Angstrom, eV/Angstrom^3 and amu, as ASE
does. Readers convert once, here; no other module multiplies by Bohr or Hartree.

The table is CODATA 2018 (``ase.units.create_units("2018")``), the one used to
make the shared reference water sets. ASE's module-level constants are CODATA
2014, which differs by about 0.27 meV per 48-atom water frame in total energy.

Molecular dynamics: ASE's integrators work in ASE's own time unit
(Angstrom * sqrt(amu/eV), about 10.18 fs) with ASE's module-level table, so the
ASE engine takes its femtosecond from there (:data:`ASE_FS`). OpenMM works in nm,
ps, kJ/mol, amu and K with CODATA 2018 constants; the OpenMM factors below are
derived from the same 2018 table, so an energy survives the round trip
eV -> kJ/mol -> eV exactly up to rounding.
"""
from __future__ import annotations

import ase.units
from ase.units import create_units

from .errors import InputError

CODATA_VERSION = "2018"
_U = create_units(CODATA_VERSION)

BOHR: float = _U["Bohr"]  #: Angstrom per Bohr
HARTREE: float = _U["Hartree"]  #: eV per Hartree
KCAL_PER_MOL: float = _U["kcal"] / _U["mol"]  #: eV per kcal/mol
KJ_PER_MOL: float = _U["kJ"] / _U["mol"]  #: eV per kJ/mol
KB: float = _U["kB"]  #: Boltzmann constant, eV/K
BAR: float = _U["bar"]  #: eV/Angstrom^3 per bar
AMU_PER_A3: float = _U["_amu"] * 1e3 / 1e-24  #: g/cm^3 per amu/Angstrom^3

# --- Molecular dynamics -------------------------------------------------------
ASE_FS: float = ase.units.fs  #: ASE time units per fs, in the table ASE's integrators use
NM: float = 10.0  #: Angstrom per nm (OpenMM length)
EV_TO_KJ_PER_MOL: float = 1.0 / KJ_PER_MOL  #: kJ/mol per eV (OpenMM energy)
FORCE_TO_OPENMM: float = EV_TO_KJ_PER_MOL * NM  #: kJ/mol/nm per eV/Angstrom
#: nm/ps per ASE velocity unit (Angstrom per ASE time unit): 1 ps is 1000 fs of ASE time.
VELOCITY_TO_OPENMM: float = 1000.0 * _U["fs"] / NM

#: Angstrom per unit of length.
LENGTH_UNITS: dict[str, float] = {"angstrom": 1.0, "bohr": BOHR, "nm": 10.0}
#: eV per unit of energy.
ENERGY_UNITS: dict[str, float] = {
    "ev": 1.0,
    "hartree": HARTREE,
    "kcal/mol": KCAL_PER_MOL,
    "kj/mol": KJ_PER_MOL,
}

_ALIASES = {"a": "angstrom", "ang": "angstrom", "å": "angstrom", "ha": "hartree"}


def _lookup(table: dict[str, float], name: str, kind: str) -> float:
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in table:
        raise InputError(f"unknown {kind} unit {name!r}; expected one of {', '.join(table)}")
    return table[key]


def length_factor(name: str) -> float:
    """Angstrom per one ``name`` (``"bohr"``, ``"angstrom"``, ``"nm"``)."""
    return _lookup(LENGTH_UNITS, name, "length")


def energy_factor(name: str) -> float:
    """eV per one ``name`` (``"hartree"``, ``"ev"``, ``"kcal/mol"``, ``"kj/mol"``)."""
    return _lookup(ENERGY_UNITS, name, "energy")
