"""Reading an i-PI run's output: the properties file as ``thermo.csv`` columns, the bead trajectories as frames.

i-PI writes ``PREFIX.out`` (``<properties>``; a ``# column K --> name{unit} : help`` header,
then whitespace-separated rows) and, with ``<trajectory format='ase'> positions </trajectory>``,
one extended XYZ file per bead, ``PREFIX.pos_K.extxyz`` (Angstrom, the cell as ``Lattice``,
``Step: N`` in ``ipi_comment``). Those are what :func:`pbcgnn.analysis.analyze` reads from a
folder without ``thermo.csv``.

=================  =========================================================================
``thermo.csv``     i-PI property (units converted to those of ``thermo.csv``)
=================  =========================================================================
``step``           ``step``
``time_ps``        ``time``
``potential_eV``   ``potential`` (bead average)
``kinetic_eV``     ``kinetic_cv`` (centroid-virial estimator), else ``kinetic_md``
``total_eV``       ``conserved`` (includes the thermostat's work: conserved in NVT too)
``temperature_K``  ``temperature``
``volume_A3``      ``volume``
=================  =========================================================================
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
from ase import Atoms

from ..errors import InputError
from ..io import read_frames
from ..units import BOHR, HARTREE, KB

__all__ = ["IPI_COLUMNS", "find_ipi_output", "read_ipi_properties", "read_ipi_frames"]

#: thermo.csv column -> the i-PI properties that may fill it, preferred first.
IPI_COLUMNS = {
    "step": ("step",), "time_ps": ("time",), "potential_eV": ("potential",),
    "kinetic_eV": ("kinetic_cv", "kinetic_md"), "total_eV": ("conserved",), "temperature_K": ("temperature",),
    "volume_A3": ("volume",),
}
_IPI_EV = 0.036749326  #: Hartree per i-PI "electronvolt" (i-PI's own rounded constant)
_IPI_ANGSTROM = 1.8897261  #: Bohr per i-PI "angstrom" (likewise)
#: Factor to thermo.csv's unit per (dimension, i-PI unit). "ase" is eV or Angstrom^3 as ASE defines
#: them (the socket's units); i-PI's "electronvolt" and "angstrom3" go back through its own constants.
_UNITS = {
    "time": {"picosecond": 1.0, "femtosecond": 1e-3},
    "energy": {"ase": 1.0, "electronvolt": _IPI_EV * HARTREE, "atomic_unit": HARTREE, "": HARTREE},
    "temperature": {"kelvin": 1.0, "": HARTREE / KB},
    "volume": {"angstrom3": (_IPI_ANGSTROM * BOHR) ** 3, "ase": 1.0, "atomic_unit": BOHR**3, "": BOHR**3},
    "step": {"": 1.0},
}
_DIMENSION = {"step": "step", "time": "time", "potential": "energy", "kinetic_cv": "energy", "kinetic_md": "energy",
              "conserved": "energy", "temperature": "temperature", "volume": "volume"}
_HEADER = re.compile(r"#\s*col(?:umn)?s?\.?\s+(\d+)(?:-\d+)?\s*-->\s*([A-Za-z_]+)(?:\{([^}]*)\})?")


def find_ipi_output(run_dir: str | os.PathLike) -> tuple[Path, list[Path]] | None:
    """``(properties file, [bead trajectories])`` of the i-PI run in ``run_dir``, or None.

    The properties file is the one ``*.out`` file whose header has i-PI's ``# column``
    lines; the trajectories are ``*.pos_K.extxyz``, ordered by bead K.
    """
    run = Path(run_dir)
    props = [p for p in sorted(run.glob("*.out")) if _starts_with(p, "# col")]
    if len(props) != 1:
        return None
    beads = sorted(run.glob("*.pos_*.extxyz"), key=lambda p: int(re.search(r"pos_(\d+)", p.name).group(1)))
    return props[0], beads


def _starts_with(path: Path, text: str) -> bool:
    with open(path, errors="replace") as f:
        return f.read(len(text) + 64).lstrip().startswith(text)


def read_ipi_properties(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """An i-PI properties file as ``thermo.csv`` columns (:data:`IPI_COLUMNS`; eV, ps, K, Angstrom^3).

    Raises:
        InputError: a property of :data:`IPI_COLUMNS` is missing, a unit is unknown, or a
            row is not numbers.
    """
    lines = Path(path).read_text().splitlines()
    found: dict[str, tuple[int, str]] = {}
    for line in lines:
        if m := _HEADER.match(line):
            found.setdefault(m.group(2), (int(m.group(1)) - 1, m.group(3) or ""))
    rows = [line.split() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    try:
        table = np.array(rows, dtype=np.float64).reshape(len(rows), -1)
    except ValueError:
        raise InputError("expected rows of numbers after the header", path=path) from None
    missing = [names[0] for names in IPI_COLUMNS.values() if not any(n in found for n in names)]
    if missing:
        raise InputError(f"expected the i-PI properties {', '.join(missing)} in <properties>, found "
                         f"{', '.join(found) or 'no # column header'}", path=path)
    thermo = {}
    for column, names in IPI_COLUMNS.items():
        name = next(n for n in names if n in found)
        index, unit = found[name]
        factor = _UNITS[_DIMENSION[name]].get(unit)
        if factor is None:
            raise InputError(f"unknown unit {name}{{{unit}}}; expected one of "
                             f"{', '.join(u for u in _UNITS[_DIMENSION[name]] if u)}", path=path)
        thermo[column] = table[:, index] * factor
    return thermo


def read_ipi_frames(paths: list[Path], timestep_ps: float, skip_ps: float = 0.0) -> list[Atoms]:
    """The frames of i-PI's bead trajectories (``format='ase'``) at or after ``skip_ps``.

    Every bead's frames are returned (the RDF of a path-integral run is the average over
    beads), each with ``time_ps`` (= step * ``timestep_ps``) and ``bead`` in ``info``.
    """
    frames = []
    for bead, path in enumerate(paths):
        for atoms in read_frames(path, format="extxyz", require_energy=False):
            step = re.search(r"Step:\s*(\d+)", str(atoms.info.get("ipi_comment", "")))
            if step is None:
                raise InputError("expected an i-PI trajectory (format='ase', 'Step: N' in ipi_comment)", path=path)
            atoms.info.update(time_ps=int(step.group(1)) * timestep_ps, bead=bead)
            if atoms.info["time_ps"] >= skip_ps - 1e-12:
                frames.append(atoms)
    return frames

