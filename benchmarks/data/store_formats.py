"""Which on-disk format holds labelled frames: HDF5 (h5py) against PyG's OnDiskDataset (SQLite).

Writes the same frames (192-atom water-like: numbers, float64 positions and forces, cell, energy)
one at a time to each store, then reads them back in a random order one frame at a time, as a
DataLoader worker does. Reports write and read frames/s, bytes per frame and peak RSS.

    OMP_NUM_THREADS=1 taskset -c 0 python benchmarks/data/store_formats.py --frames 5000
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import tempfile
import time

import numpy as np
import torch


def frames(n: int, atoms: int = 192, seed: int = 0):
    rng = np.random.default_rng(seed)
    z = np.array([8, 1, 1] * (atoms // 3), dtype=np.uint8)
    for _ in range(n):
        yield {"numbers": z, "positions": rng.random((atoms, 3)) * 12.4, "forces": rng.normal(size=(atoms, 3)),
               "cell": np.eye(3) * 12.4, "energy": rng.normal()}


def write_h5(path: str, n: int, chunk: int) -> None:
    import h5py
    with h5py.File(path, "w") as f:
        per_atom = {k: f.create_dataset(k, (0, 3), np.float64, maxshape=(None, 3), chunks=(chunk, 3))
                    for k in ("positions", "forces")}
        numbers = f.create_dataset("numbers", (0,), np.uint8, maxshape=(None,), chunks=(chunk,))
        cell = f.create_dataset("cell", (0, 3, 3), np.float64, maxshape=(None, 3, 3), chunks=(256, 3, 3))
        energy = f.create_dataset("energy", (0,), np.float64, maxshape=(None,), chunks=(256,))
        offsets = [0]
        for k, fr in enumerate(frames(n)):
            a, b = offsets[-1], offsets[-1] + len(fr["numbers"])
            for name, ds in per_atom.items():
                ds.resize(b, axis=0)
                ds[a:b] = fr[name]
            numbers.resize(b, axis=0)
            numbers[a:b] = fr["numbers"]
            for name, ds in (("cell", cell), ("energy", energy)):
                ds.resize(k + 1, axis=0)
                ds[k] = fr[name]
            offsets.append(b)
        f.create_dataset("offsets", data=np.array(offsets, dtype=np.int64))


def read_h5(path: str, order: np.ndarray) -> None:
    import h5py
    with h5py.File(path, "r") as f:
        offsets = f["offsets"][:]
        ds = {k: f[k] for k in ("positions", "forces", "numbers", "cell", "energy")}
        for i in order:
            a, b = offsets[i], offsets[i + 1]
            _ = (ds["positions"][a:b], ds["forces"][a:b], ds["numbers"][a:b], ds["cell"][i], ds["energy"][i])


def _pyg_class():
    from torch_geometric.data import Data, OnDiskDataset

    class Frames(OnDiskDataset):  # a schema of tensors: rows are dicts, not pickled Data
        def serialize(self, data):
            return {k: data[k] for k in ("z", "pos", "forces", "cell", "energy")}

        def deserialize(self, row):
            return Data(**row)
    return Frames


def write_pyg(root: str, n: int) -> None:
    from torch_geometric.data import Data
    OnDiskDataset = _pyg_class()
    schema = {"z": dict(dtype=torch.uint8, size=(-1,)), "pos": dict(dtype=torch.float64, size=(-1, 3)),
              "forces": dict(dtype=torch.float64, size=(-1, 3)), "cell": dict(dtype=torch.float64, size=(3, 3)),
              "energy": float}
    ds = OnDiskDataset(root, schema=schema, log=False)
    batch = []
    for fr in frames(n):
        batch.append(Data(z=torch.from_numpy(fr["numbers"]), pos=torch.from_numpy(fr["positions"]),
                          forces=torch.from_numpy(fr["forces"]), cell=torch.from_numpy(fr["cell"]),
                          energy=fr["energy"]))
        if len(batch) == 256:
            ds.extend(batch)
            batch = []
    if batch:
        ds.extend(batch)
    ds.close()


def read_pyg(root: str, order: np.ndarray, schema) -> None:
    OnDiskDataset = _pyg_class()
    ds = OnDiskDataset(root, schema=schema, log=False)
    for i in order:
        _ = ds[int(i)]
    ds.close()


def size(path: str) -> int:
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=5000)
    p.add_argument("--chunk", type=int, default=192 * 16, help="HDF5 chunk rows of per-atom arrays")
    p.add_argument("--format", choices=["hdf5", "pyg"], nargs="+", default=["hdf5", "pyg"])
    args = p.parse_args()
    order = np.random.default_rng(1).permutation(args.frames)
    out = {}
    tmp = tempfile.mkdtemp(dir=".")
    try:
        schema = {"z": dict(dtype=torch.uint8, size=(-1,)), "pos": dict(dtype=torch.float64, size=(-1, 3)),
                  "forces": dict(dtype=torch.float64, size=(-1, 3)),
                  "cell": dict(dtype=torch.float64, size=(3, 3)), "energy": float}
        for fmt in args.format:
            path = os.path.join(tmp, fmt)
            t0 = time.perf_counter()
            write_h5(path, args.frames, args.chunk) if fmt == "hdf5" else write_pyg(path, args.frames)
            t1 = time.perf_counter()
            read_h5(path, order) if fmt == "hdf5" else read_pyg(path, order, schema)
            t2 = time.perf_counter()
            out[fmt] = {"write_frames_per_s": args.frames / (t1 - t0), "read_frames_per_s": args.frames / (t2 - t1),
                        "bytes_per_frame": size(path) / args.frames}
            print(fmt, json.dumps(out[fmt]), flush=True)
    finally:
        shutil.rmtree(tmp)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
