"""What a run trains on: its files' graphs kept in memory or streamed from an on-disk store."""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from torch_geometric.data import Dataset

from ..config import Config
from ..device import available_memory
from ..io import check_path, iter_frames
from ..neighbors import STORED_BYTES_PER_EDGE
from .frames import FrameDataset
from .splits import file_sha256
from .streamed import StreamedFrameDataset, default_store_root, estimate_graph_edges, open_store

__all__ = ["load_datasets", "open_frames"]

log = logging.getLogger(__name__)


def load_datasets(
    config: Config, elements: Sequence[int] | None = None, periodic: bool = False
) -> tuple[Dataset, Dataset]:
    """Training and validation graphs of a run: separate files, or a seeded random split.

    Kept in memory (:class:`FrameDataset`) or streamed from an on-disk store
    (:class:`~pbcgnn.streamed.StreamedFrameDataset`) as ``config.data.storage`` says (see
    :func:`open_frames`). ``elements``/``periodic`` (evaluating a trained model) refuse frames the
    model cannot know.
    """
    d = config.data
    full = open_frames(list(d.paths), config, elements, periodic)
    if d.val_paths:
        return full, open_frames(list(d.val_paths), config, elements, periodic)
    train, val = full.split((1.0 - d.val_fraction, d.val_fraction), seed=d.split_seed)
    return train, val


def _read_options(d) -> dict:
    """The reading options of a data config, as :class:`FrameDataset` keys its cache by them."""
    opts = {"format": d.format, "length_unit": d.length_unit, "energy_unit": d.energy_unit, "require_energy": True}
    keys = {"energy_key": d.energy_key, "forces_key": d.forces_key, "stress_key": d.stress_key}
    return {**opts, **{name: key for name, key in keys.items() if key is not None}}


def open_frames(paths: Sequence[str | os.PathLike], config: Config, elements: Sequence[int] | None = None,
                periodic: bool = False) -> Dataset:
    """The graphs of ``paths`` at the config's cutoff, in memory or streamed from disk.

    ``storage="auto"`` reads the files once to estimate the graphs' size (stopping as soon as it
    passes the limit) and keeps them in memory when that is at most half the free memory (per
    process under ``torchrun``), else builds the on-disk store.
    """
    d, cutoff = config.data, config.model.cutoff
    files = [check_path(p).resolve() for p in paths]
    options = _read_options(d)
    storage = d.storage
    if storage == "auto":
        storage = "memory" if _fits_in_memory(files, options, cutoff) else "disk"
        log.info("%s: graphs %s", ", ".join(map(str, files)),
                 "in memory" if storage == "memory" else "built on the fly from an on-disk frame store")
    if storage == "memory":
        return FrameDataset(files, cutoff, root=d.cache_dir, format=d.format, length_unit=d.length_unit,
                            energy_unit=d.energy_unit, energy_key=d.energy_key, forces_key=d.forces_key,
                            stress_key=d.stress_key, elements=elements, periodic=periodic)
    root = Path(d.cache_dir) if d.cache_dir is not None else default_store_root()
    store = open_store(files, [file_sha256(p) for p in files], root, options)
    return StreamedFrameDataset(store, cutoff, elements=elements, periodic=periodic)


def _fits_in_memory(files: Sequence[Path], options: dict, cutoff: float) -> bool:
    """Whether the files' graphs at ``cutoff`` would take at most half the free memory of each process."""
    free = available_memory("cpu")
    if free is None:
        return True
    processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    limit = 0.5 * free / processes / STORED_BYTES_PER_EDGE
    edges = 0.0
    for path in files:
        edges += estimate_graph_edges(iter_frames(path, **options), cutoff, limit - edges)
        if edges > limit:
            return False
    return True
