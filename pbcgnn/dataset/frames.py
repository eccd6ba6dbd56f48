"""Labelled frames as periodic PyG graphs: :class:`FrameDataset` (in memory, cached on disk) and
:func:`iter_graphs` (the same graphs one at a time, for passes over files larger than memory)."""
from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import torch
from ase import Atoms
from torch_geometric.data import Data, InMemoryDataset

from ..errors import InputError
from ..graph import MIN_DISTANCE, atoms_to_graph
from ..io import check_path, iter_frames, read_frames
from ..io.checks import check_supported
from ..neighbors import STORED_BYTES_PER_EDGE, check_list_memory, estimate_edges
from .splits import file_sha256, split_indices

__all__ = ["FrameDataset", "check_frames", "checked_frames", "frame_graph", "iter_graphs", "GRAPH_VERSION"]

log = logging.getLogger(__name__)

#: Bump when graph fields or their meaning change: old caches are then ignored.
GRAPH_VERSION = 1


class FrameDataset(InMemoryDataset):
    """Frames from n2p2 ``input.data``, extended XYZ or any ASE format, as PyG graphs.

    Each item is a plain :class:`torch_geometric.data.Data` with the fields listed in
    :mod:`pbcgnn.graph` (``z``, ``pos``, ``cell``, ``pbc``, ``edge_index``,
    ``cell_offsets``, ``energy``, ``forces``, ...) plus ``source`` (``"path:line"`` or
    ``"path: frame K"``), so any PyG model or ``DataLoader`` can consume it.

    Processed graphs are cached in ``root`` under a name keyed by the content hash of
    every input file, the cutoff, the units, the format and :data:`GRAPH_VERSION`;
    changing any of them builds a new cache instead of reusing a stale one.

    Args:
        paths: one or more data files.
        cutoff: neighbour radius in Angstrom.
        root: cache directory; ``None`` keeps graphs in memory only.
        format: ``"n2p2"``, an ASE format name, or ``None`` to detect.
        length_unit, energy_unit: units of the files (default: the format's own,
            Bohr/Hartree for n2p2, Angstrom/eV otherwise).
        require_energy: reject frames without an energy (training needs it).
        transform: applied on access, as in PyG.
        energy_key, forces_key, stress_key: label columns of ASE formats
            (:func:`pbcgnn.io.read_frames`; ``None``: the usual names).
        elements, periodic: refuse frames a model cannot know: elements outside ``elements``,
            or (``periodic``) without a 3-D periodic cell (:func:`pbcgnn.io.checks.check_supported`).
    """

    def __init__(
        self,
        paths: str | os.PathLike | Sequence[str | os.PathLike],
        cutoff: float,
        root: str | os.PathLike | None = None,
        format: str | None = None,
        length_unit: str | None = None,
        energy_unit: str | None = None,
        require_energy: bool = True,
        transform: Callable[[Data], Data] | None = None,
        force_reload: bool = False,
        energy_key: str | None = None,
        forces_key: str | None = None,
        stress_key: str | None = None,
        elements: Sequence[int] | None = None,
        periodic: bool = False,
    ) -> None:
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        if not paths:
            raise InputError("expected at least one data file, found none")
        if not cutoff > 0:
            raise InputError(f"expected a positive cutoff, found {cutoff}")
        self.paths = [check_path(p).resolve() for p in paths]
        self.cutoff = float(cutoff)
        self.options = {
            "format": format,
            "length_unit": length_unit,
            "energy_unit": energy_unit,
            "require_energy": require_energy,
        }
        # only when given, so the cache key of a run that names no column is unchanged
        keys = {"energy_key": energy_key, "forces_key": forces_key, "stress_key": stress_key}
        self.options.update({name: key for name, key in keys.items() if key is not None})
        self.support = {"elements": None if elements is None else sorted(int(z) for z in elements),
                        "periodic": bool(periodic)}
        self._cached = root is not None
        super().__init__(None if root is None else os.fspath(root), transform, log=False, force_reload=force_reload)
        if self._cached:
            self.load(self.processed_paths[0])
        else:
            self.data, self.slices = self.collate(self._build())

    # PyG hooks ------------------------------------------------------------------------
    @property
    def has_download(self) -> bool:
        return False

    @property
    def has_process(self) -> bool:
        return self._cached

    @property
    def raw_file_names(self) -> list[str]:
        return [os.fspath(p) for p in self.paths]  # absolute: PyG's join keeps them

    @property
    def processed_dir(self) -> str:
        return os.fspath(Path(self.root) / "graphs")

    @property
    def processed_file_names(self) -> list[str]:
        return [f"frames-{self.cache_key[:20]}.pt"]

    def process(self) -> None:
        self.save(self._build(), self.processed_paths[0])

    # ------------------------------------------------------------------------------------
    @property
    def cache_key(self) -> str:
        """sha256 of the inputs' content, cutoff, units, format and graph version."""
        if not hasattr(self, "_key"):
            spec = {
                "files": [file_sha256(p) for p in self.paths],
                "cutoff": self.cutoff,
                "graph_version": GRAPH_VERSION,
                **self.options,
                **({"support": self.support} if self.support != {"elements": None, "periodic": False} else {}),
            }
            self._key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()
        return self._key

    def _build(self) -> list[Data]:
        graphs = []
        for path in self.paths:
            frames = read_frames(path, **self.options)
            self._check_memory(path, frames)
            graphs += [frame_graph(atoms, self.cutoff, path, k, **self.support) for k, atoms in enumerate(frames)]
            log.info("%s: %d frames -> graphs at cutoff %.3g A", path, len(frames), self.cutoff)
        return graphs

    def _check_memory(self, path: Path, frames: list) -> None:
        """Refuse a file whose graphs together would not fit in memory (each frame's list alone may)."""
        edges = sum(estimate_edges(a.positions, a.cell.array, a.pbc, self.cutoff, len(a)) for a in frames)
        try:
            check_list_memory(edges, self.cutoff, sum(len(a) for a in frames), bytes_per_edge=STORED_BYTES_PER_EDGE)
        except InputError as err:
            raise InputError(err.reason, path=path) from None

    @property
    def elements(self) -> list[int]:
        """Sorted atomic numbers present in the dataset."""
        return sorted(torch.unique(self._data.z).tolist())

    def labels_only(self) -> FrameDataset:
        """The frames for passes that need no edges (as :meth:`StreamedFrameDataset.labels_only`):
        in memory the graphs are already built, so this is the dataset itself."""
        return self

    def split(self, fractions: Sequence[float] = (0.9, 0.1), seed: int = 0) -> list[FrameDataset]:
        """Random disjoint subsets with the given fractions (reproducible for a seed)."""
        return [self[idx] for idx in split_indices(len(self), fractions, seed)]


def frame_graph(atoms: Atoms, cutoff: float, path: str | os.PathLike, index: int,
                elements: Sequence[int] | None = None, periodic: bool = False) -> Data:
    """Frame ``index`` of ``path`` as the graph :class:`FrameDataset` holds (``source`` included),
    after the check of a model's support (:func:`pbcgnn.io.checks.check_supported`)."""
    check_supported(atoms, elements, periodic, path, index)
    data = atoms_to_graph(atoms, cutoff, index=index)
    data.source = str(atoms.info.get("source", f"{path}: frame {index}"))
    return data


def iter_graphs(path: str | os.PathLike, cutoff: float, elements: Sequence[int] | None = None,
                periodic: bool = False, **read_options) -> Iterator[Data]:
    """The graphs of :class:`FrameDataset` ``(path, cutoff, ...)``, equal item by item, built one
    frame at a time as the file is read (:func:`pbcgnn.io.iter_frames`): bounded memory.

    Args:
        path: a data file.
        cutoff: neighbour radius in Angstrom.
        elements, periodic: refuse frames a model cannot know, as :class:`FrameDataset` does.
        read_options: :func:`pbcgnn.io.iter_frames` keywords (format, units, label keys, ...).

    Raises:
        InputError: as :class:`FrameDataset`, when the iteration reaches the bad frame.
    """
    path = check_path(path).resolve()  # as FrameDataset: sources and errors name the resolved path
    for k, atoms in enumerate(iter_frames(path, **read_options)):
        yield frame_graph(atoms, cutoff, path, k, elements, periodic)


def checked_frames(frames: Iterable[Atoms]) -> Iterator[Atoms]:
    """``frames``, each after what building training graphs checks beyond the reader.

    :func:`pbcgnn.graph.atoms_to_graph` at a radius of :data:`pbcgnn.graph.MIN_DISTANCE` finds
    only overlapping pairs, so this is cheap and runs exactly the checks training runs.

    Raises:
        InputError: two atoms overlap (closer than ``MIN_DISTANCE``), or a cell is unusable.
    """
    for k, atoms in enumerate(frames):
        atoms_to_graph(atoms, MIN_DISTANCE, index=k)
        yield atoms


def check_frames(frames: Iterable[Atoms]) -> int:
    """Run :func:`checked_frames` over ``frames`` (a list, or a stream read one at a time).

    Returns:
        The number of frames.
    """
    return sum(1 for _ in checked_frames(frames))
