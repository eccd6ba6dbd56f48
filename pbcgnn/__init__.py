"""pbcgnn: machine-learned interatomic potentials for periodic systems, on PyTorch Geometric.

The public API is re-exported here lazily, so ``import pbcgnn`` (and the CLI's
``--help``) does not import torch until a name is used. Importing has no side effects.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "InputError": "pbcgnn.errors",
    "iter_frames": "pbcgnn.io",
    "read_frames": "pbcgnn.io",
    "write_frames": "pbcgnn.io",
    "neighbor_list": "pbcgnn.neighbors",
    "radius_graph_pbc": "pbcgnn.neighbors",
    "atoms_to_graph": "pbcgnn.graph",
    "PeriodicInteractionGraph": "pbcgnn.graph",
    "FrameDataset": "pbcgnn.dataset",
    "SchNet": "pbcgnn.model",
    "compute_properties": "pbcgnn.model",
    "PbcgnnCalculator": "pbcgnn.calculator",
    "Config": "pbcgnn.config",
    "TransferConfig": "pbcgnn.config",
    "CommitteeConfig": "pbcgnn.config",
    "DataConfig": "pbcgnn.config",
    "ModelConfig": "pbcgnn.config",
    "TrainConfig": "pbcgnn.config",
    "fit": "pbcgnn.train.run",
    "load_checkpoint": "pbcgnn.checkpoint",
    "evaluate": "pbcgnn.evaluation.report",
    "Committee": "pbcgnn.model.committee",
    "select_frames": "pbcgnn.select",
    "MDConfig": "pbcgnn.md",
    "run_md": "pbcgnn.md",
    "analyze": "pbcgnn.analysis",
    "rdf": "pbcgnn.analysis",
    "energy_drift": "pbcgnn.analysis",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'pbcgnn' has no attribute {name!r}")


if TYPE_CHECKING:  # for type checkers and IDEs only
    from .calculator import PbcgnnCalculator
    from .analysis import analyze, energy_drift, rdf
    from .model.committee import Committee
    from .select import select_frames
    from .md import MDConfig, run_md
    from .evaluation.report import evaluate
    from .checkpoint import load_checkpoint
    from .config import CommitteeConfig, Config, DataConfig, ModelConfig, TrainConfig, TransferConfig
    from .train.run import fit
    from .dataset import FrameDataset
    from .errors import InputError
    from .graph import PeriodicInteractionGraph, atoms_to_graph
    from .io import iter_frames, read_frames, write_frames
    from .model import SchNet, compute_properties
    from .neighbors import neighbor_list, radius_graph_pbc
