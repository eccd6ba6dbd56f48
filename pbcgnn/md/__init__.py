"""Molecular dynamics with trained pbcgnn potentials: ASE and OpenMM engines, an i-PI client, one output format.

* :mod:`pbcgnn.md.config`: :class:`MDConfig`, the run options.
* :mod:`pbcgnn.md.run`: :func:`run_md` (velocities, engine, files).
* :mod:`pbcgnn.md.ase_md`, :mod:`pbcgnn.md.openmm_md`: the two engines (OpenMM is optional).
* :mod:`pbcgnn.md.ipi`: :func:`serve_ipi`, the force client of an i-PI server (path-integral MD).
* :mod:`pbcgnn.md.ipi_output`: i-PI's properties and bead trajectories, read for the analysis.
* :mod:`pbcgnn.md.output`: ``trajectory.xyz``, ``thermo.csv``, progress bar.
* :mod:`pbcgnn.md.plots`: RDF and thermodynamics plots (matplotlib).

Names are re-exported lazily, so the CLI can read :class:`MDConfig` defaults without ASE.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "MDConfig": "pbcgnn.md.config",
    "MDResult": "pbcgnn.md.run",
    "initial_state": "pbcgnn.md.run",
    "run_md": "pbcgnn.md.run",
    "read_thermo": "pbcgnn.md.output",
    "serve_ipi": "pbcgnn.md.ipi",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'pbcgnn.md' has no attribute {name!r}")


if TYPE_CHECKING:  # for type checkers and IDEs only
    from .config import MDConfig
    from .ipi import serve_ipi
    from .output import read_thermo
    from .run import MDResult, initial_state, run_md
