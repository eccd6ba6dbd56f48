"""Frames larger than memory: a :class:`~pbcgnn.store.FrameStore` on disk, graphs built on access.

:class:`StreamedFrameDataset` is a PyG :class:`~torch_geometric.data.Dataset` whose items are the
same :class:`~torch_geometric.data.Data` as :class:`pbcgnn.dataset.FrameDataset`'s, bit for bit:
each access reads one frame's row and runs :func:`pbcgnn.graph.atoms_to_graph` on it, so the
neighbour lists are built in the ``DataLoader``'s worker processes (``--workers``) while the
model trains. Only positions and labels are kept (about 10 KB per 192-atom frame).

Every check of the in-memory path runs when the store is written, before any training: the
reader's (units, bad input named by file and line or frame), overlapping atoms, and the
model's supported elements and periodicity when the dataset is opened.
"""
from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch_geometric.data import Data, Dataset

from ..errors import InputError
from ..graph import MIN_DISTANCE, atoms_to_graph
from ..io import iter_frames
from ..io.checks import check_supported
from ..neighbors import estimate_edges
from .splits import split_indices
from ..store import STORE_VERSION, FrameStore, frame_row, publish, read_meta

__all__ = ["StreamedFrameDataset", "open_store", "store_key", "estimate_graph_edges", "default_store_root"]

log = logging.getLogger(__name__)


def default_store_root() -> Path:
    """Where stores go when no ``--cache-dir`` is given: ``$PBCGNN_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/pbcgnn`` (``~/.cache/pbcgnn``)."""
    if os.environ.get("PBCGNN_CACHE_DIR"):
        return Path(os.environ["PBCGNN_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pbcgnn"


def store_key(digests: Sequence[str], options: dict[str, Any]) -> str:
    """sha256 of the inputs' content, the reading options and :data:`~pbcgnn.store.STORE_VERSION`."""
    spec = {"files": list(digests), "store_version": STORE_VERSION, **options}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def _rows(paths: Sequence[Path], options: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Store rows, one frame at a time, with the checks graph building makes (overlaps, cells)."""
    for i, path in enumerate(paths):
        count = 0
        for k, atoms in enumerate(iter_frames(path, **options)):
            atoms_to_graph(atoms, MIN_DISTANCE, index=k)  # overlapping atoms, unusable cells: now, not mid-epoch
            yield frame_row(atoms, i)
            count += 1
        log.info("%s: %d frames -> frame store", path, count)


def open_store(paths: Sequence[Path], digests: Sequence[str], root: Path, options: dict[str, Any]) -> FrameStore:
    """The complete store of ``paths`` read with ``options`` under ``root``: reused when its key
    matches, else written by streaming (into ``NAME.partial-PID``, renamed when complete)."""
    name = f"store-{store_key(digests, options)[:20]}"
    final = root / name
    if read_meta(final) is None:
        root.mkdir(parents=True, exist_ok=True)
        partial = root / f"{name}.partial-{os.getpid()}"
        shutil.rmtree(partial, ignore_errors=True)
        meta = {"paths": [os.fspath(p) for p in paths], "digests": list(digests), "options": options}
        try:
            FrameStore.write(partial, _rows(paths, options), meta)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        publish(partial, final)
    return FrameStore(final)


def estimate_graph_edges(frames: Iterator, cutoff: float, limit: float = float("inf")) -> float:
    """Summed :func:`~pbcgnn.neighbors.estimate_edges` of ``frames`` (``ase.Atoms``), stopping as
    soon as the sum passes ``limit`` (the caller only needs to know that it does)."""
    total = 0.0
    for atoms in frames:
        total += estimate_edges(atoms.positions, atoms.cell.array, atoms.pbc, cutoff, len(atoms))
        if total > limit:
            break
    return total


class StreamedFrameDataset(Dataset):
    """The frames of a :class:`~pbcgnn.store.FrameStore` as periodic PyG graphs, built on access.

    Items equal :class:`pbcgnn.dataset.FrameDataset`'s for the same files and cutoff (fields in
    :mod:`pbcgnn.graph`, plus ``source``). ``len``, integer and index-tensor access, ``split``
    and PyG's ``DataLoader`` work as there; the store stays on disk, so each ``DataLoader``
    worker reads only the frames it is handed (under ``torchrun``, each rank its own shard).

    Args:
        store: the frames.
        cutoff: neighbour radius in Angstrom.
        transform: applied on access, as in PyG.
        elements, periodic: refuse a store holding frames a model cannot know (checked when
            opened; the error names the first such frame).
    """

    def __init__(self, store: FrameStore, cutoff: float, transform: Callable[[Data], Data] | None = None,
                 elements: Sequence[int] | None = None, periodic: bool = False) -> None:
        if not cutoff > 0:
            raise InputError(f"expected a positive cutoff, found {cutoff}")
        self.store = store
        self.cutoff = float(cutoff)
        self.edges = True
        super().__init__(None, transform, log=False)
        self._check_supported(elements, periodic)

    def len(self) -> int:
        return len(self.store)

    def get(self, idx: int) -> Data:
        atoms = self.store.atoms(idx)
        k = atoms.info["source_frame"]
        if not self.edges:  # labels only (reference fits): no neighbour list
            return _labels(atoms)
        data = atoms_to_graph(atoms, self.cutoff, index=k)
        data.source = str(atoms.info.get("source", f"{atoms.info['source_path']}: frame {k}"))
        return data

    def __getitems__(self, indices: list[int]) -> list[Data]:
        return [self[i] for i in indices]  # PyG's subset indices and transform, one row at a time

    @property
    def elements(self) -> list[int]:
        """Sorted atomic numbers present in the store."""
        return list(self.store.meta["elements"])

    def labels_only(self) -> StreamedFrameDataset:
        """A view of the same frames without edges (``z``, ``energy``, ``forces``, ...): the
        passes over a whole training set that need no neighbour list."""
        view = copy.copy(self)
        view.edges = False
        return view

    def split(self, fractions: Sequence[float] = (0.9, 0.1), seed: int = 0) -> list[StreamedFrameDataset]:
        """Random disjoint subsets with the given fractions, as :meth:`FrameDataset.split`."""
        return [self[idx] for idx in split_indices(len(self), fractions, seed)]

    def _check_supported(self, elements: Sequence[int] | None, periodic: bool) -> None:
        unknown = elements is not None and not set(self.elements) <= {int(z) for z in elements}
        aperiodic = periodic and not self.store.meta.get("periodic", False)
        if not (unknown or aperiodic):
            return
        for i in range(len(self.store)):  # only on failure: find and name the first such frame
            check_supported(self.store.atoms(i), elements, periodic)


def _labels(atoms) -> Data:
    """The label fields of :func:`~pbcgnn.graph.atoms_to_graph`, without the neighbour list."""
    results = atoms.calc.results
    n = len(atoms)
    data = Data(z=torch.as_tensor(atoms.numbers, dtype=torch.long), natoms=torch.tensor([n]),
                has_forces=torch.tensor(["forces" in results]),
                forces=torch.as_tensor(results["forces"]) if "forces" in results
                else torch.zeros(n, 3, dtype=torch.float64),
                weight=torch.tensor([float(atoms.info.get("weight", 1.0))], dtype=torch.float64))
    if "energy" in results:
        data.energy = torch.tensor([float(results["energy"])], dtype=torch.float64)
    return data

