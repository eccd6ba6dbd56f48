"""PyG's ``DataLoader``, with each worker's batch sent to the training process as one buffer.

A ``DataLoader`` worker hands every tensor storage of a batch to the training process as its own
shared-memory file descriptor, each received over its own socket connection. A PyG ``Batch`` of
water frames has about 40 storages (its fields and the slice and increment tables), and receiving
them cost the training process about 7 ms of a 130 ms step. :class:`FrameLoader` packs every
tensor of the batch into one ``uint8`` buffer in the worker (one descriptor) and unpacks views of
it in the training process (1.4 ms; ``benchmarks/data/stream_speed.py``). Without workers it is
PyG's loader unchanged.
"""
from __future__ import annotations

import io
import pickle
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch_geometric.loader import DataLoader

__all__ = ["FrameLoader", "pack", "unpack"]

_ALIGN = 64  # bytes: every view starts aligned for any dtype

Packed = tuple[torch.Tensor, list[tuple[int, torch.dtype, tuple[int, ...], int]], bytes]


class _Packer(pickle.Pickler):
    """Pickles an object with its plain tensors left out, kept in :attr:`tensors` instead."""

    def __init__(self, file: io.BytesIO) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.tensors: list[torch.Tensor] = []
        self.index: dict[int, int] = {}  # id -> position: a tensor referenced twice is packed once

    def persistent_id(self, obj: Any) -> int | None:
        if type(obj) is not torch.Tensor or obj.requires_grad:
            return None
        if id(obj) not in self.index:
            self.index[id(obj)] = len(self.tensors)
            self.tensors.append(obj.contiguous())
        return self.index[id(obj)]


class _Unpacker(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, tensors: list[torch.Tensor]) -> None:
        super().__init__(file)
        self.tensors = tensors

    def persistent_load(self, pid: int) -> torch.Tensor:
        return self.tensors[pid]


def pack(obj: Any) -> Packed:
    """``obj`` as (one ``uint8`` buffer holding all its tensors, their layout, the pickled rest)."""
    file = io.BytesIO()
    packer = _Packer(file)
    packer.dump(obj)
    layout, size = [], 0
    for t in packer.tensors:
        nbytes = t.numel() * t.element_size()
        layout.append((size, t.dtype, tuple(t.shape), nbytes))
        size += -(-nbytes // _ALIGN) * _ALIGN
    buffer = torch.empty(size, dtype=torch.uint8)
    for (offset, _, _, nbytes), t in zip(layout, packer.tensors):
        if nbytes:
            buffer[offset:offset + nbytes].copy_(t.reshape(-1).view(torch.uint8))
    return buffer, layout, file.getvalue()


def unpack(packed: Packed) -> Any:
    """The object :func:`pack` packed, its tensors views of the one buffer (no copy)."""
    buffer, layout, blob = packed
    tensors = [buffer[offset:offset + nbytes].view(dtype).view(shape) if nbytes else torch.empty(shape, dtype=dtype)
               for offset, dtype, shape, nbytes in layout]
    return _Unpacker(io.BytesIO(blob), tensors).load()


class _PackedCollate:
    """A worker's collate function: the batch, packed (picklable for spawned workers)."""

    def __init__(self, collate: Callable[[list], Any]) -> None:
        self.collate = collate

    def __call__(self, items: list) -> Packed:
        return pack(self.collate(items))


class FrameLoader(DataLoader):
    """:class:`torch_geometric.loader.DataLoader` whose workers (``num_workers > 0``) send each
    batch as one shared-memory buffer; the batches equal PyG's, bit for bit."""

    def __init__(self, dataset, batch_size: int = 1, shuffle: bool | None = None, **kwargs: Any) -> None:
        super().__init__(dataset, batch_size=batch_size, shuffle=shuffle, **kwargs)
        if self.num_workers > 0:
            self.collate_fn = _PackedCollate(self.collate_fn)

    def __iter__(self) -> Iterator:
        batches = super().__iter__()
        if self.num_workers == 0:
            return batches
        return (unpack(packed) for packed in batches)
