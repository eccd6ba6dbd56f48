"""Seeded splits and bootstrap resamples of a dataset's frames, and the content hash of input files."""
from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from ..errors import InputError

__all__ = ["split_indices", "bootstrap_indices", "file_sha256"]


_DIGESTS: dict[tuple, str] = {}


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file's bytes, read in 1 MiB blocks (files larger than memory).

    Remembered for the life of the process while the file's inode, size and modification time
    (ns) stay the same: a run hashes its inputs for the store key and again for the checkpoint's
    record, and a 3 GB file takes seconds to read.
    """
    st = os.stat(path)
    key = (os.path.realpath(path), st.st_ino, st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]


def split_indices(n: int, fractions: Sequence[float] = (0.9, 0.1), seed: int = 0) -> list[torch.Tensor]:
    """Partition ``range(n)`` at random into parts of the given fractions.

    Fractions must be positive and sum to 1 (within 1e-6). Part sizes are rounded
    so they add up to ``n``; every part except possibly the first gets at least one
    frame when ``n`` allows. The permutation depends only on ``n`` and ``seed``.

    Returns:
        One int64 index tensor per fraction.
    """
    fractions = [float(f) for f in fractions]
    if any(f <= 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise InputError(f"expected positive split fractions summing to 1, found {fractions}")
    if n < len(fractions):
        raise InputError(f"expected at least {len(fractions)} frames to split {fractions}, found {n}")
    sizes = [max(1, round(f * n)) for f in fractions[1:]]
    sizes.insert(0, n - sum(sizes))
    if sizes[0] < 1:
        raise InputError(f"expected enough frames to split {fractions}, found {n}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return list(torch.split(perm, sizes))


def bootstrap_indices(n: int, seed: int) -> torch.Tensor:
    """A bootstrap resample of ``range(n)``: n indices drawn with replacement, [n] int64, sorted.

    Depends only on ``n`` and ``seed`` (an explicit generator; the global RNG is untouched).
    About 63 % of the frames appear, some several times.
    """
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(n, (n,), generator=generator).sort().values
