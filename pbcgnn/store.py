"""A compact on-disk store of labelled frames: positions and labels, never edges.

One row per frame in a SQLite table (PyG's :class:`~torch_geometric.data.SQLiteDatabase`: typed
columns, float64 tensors as raw bytes), about 10 KB for a 192-atom water frame against 1.4 MB
for its graph at 6 Angstrom. Chosen by measurement against HDF5 (h5py), which needs a new
dependency for the same speed (``benchmarks/data/README.md``).

=============  ==============  =========  ================================================
column         shape           dtype      meaning
=============  ==============  =========  ================================================
``numbers``    [N]             uint8      atomic numbers
``positions``  [N, 3]          float64    Angstrom, as read
``forces``     [N, 3]          float64    eV/Angstrom (zeros when the frame has none)
``cell``       [3, 3]          float64    lattice vectors as rows, Angstrom
``pbc``        [3]             uint8      periodic directions
``stress``     [3, 3]          float64    eV/Angstrom^3, ASE sign (zeros when absent)
``labels``     [5]             float64    energy (eV), weight, has energy/forces/stress
``where``      [3]             int64      file index, line (-1 if none), frame in the file
``source``     -               str        ``"path:line"`` or ``"path: frame K"``
=============  ==============  =========  ================================================

A store is a folder written by streaming through the input files one frame at a time
(:func:`build_store`) into ``NAME.partial-PID`` and renamed to ``NAME`` only once complete, with
``meta.json`` (frame count, elements, input digests) written last: a kill during conversion
leaves no store that is read half, and a folder without ``meta.json`` is rebuilt.
"""
from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.stress import voigt_6_to_full_3x3_stress
from torch_geometric.data import SQLiteDatabase

from .errors import InputError
from .io.checks import MIN_CELL_VOLUME

__all__ = ["FrameStore", "frame_row", "STORE_VERSION"]

#: Bump when the columns or their meaning change: old stores are then rebuilt.
STORE_VERSION = 1

_SCHEMA = {
    "numbers": dict(dtype=torch.uint8, size=(-1,)),
    "positions": dict(dtype=torch.float64, size=(-1, 3)),
    "forces": dict(dtype=torch.float64, size=(-1, 3)),
    "cell": dict(dtype=torch.float64, size=(3, 3)),
    "pbc": dict(dtype=torch.uint8, size=(3,)),
    "stress": dict(dtype=torch.float64, size=(3, 3)),
    "labels": dict(dtype=torch.float64, size=(5,)),
    "where": dict(dtype=torch.int64, size=(3,)),
    "source": str,
}
_TABLE = "frames"
_DB = "frames.db"
_META = "meta.json"


def frame_row(atoms: Atoms, file_index: int) -> dict[str, Any]:
    """One frame as read (:func:`pbcgnn.io.iter_frames`) as a row of the store."""
    if atoms.numbers.max(initial=0) > 255:
        raise InputError(f"expected atomic numbers below 256, found {atoms.numbers.max()}")
    results = atoms.calc.results if atoms.calc is not None else {}
    n = len(atoms)
    forces, stress = results.get("forces"), results.get("stress")
    if stress is not None:
        stress = np.asarray(stress, dtype=np.float64)
        stress = voigt_6_to_full_3x3_stress(stress) if stress.shape == (6,) else stress.reshape(3, 3)
    info = atoms.info
    line = info.get("source_line")
    return {
        "numbers": torch.as_tensor(atoms.numbers.astype(np.uint8)),
        "positions": torch.as_tensor(np.ascontiguousarray(atoms.positions, dtype=np.float64)),
        "forces": torch.zeros(n, 3, dtype=torch.float64) if forces is None
        else torch.as_tensor(np.ascontiguousarray(forces, dtype=np.float64)),
        "cell": torch.as_tensor(np.ascontiguousarray(atoms.cell.array, dtype=np.float64)),
        "pbc": torch.as_tensor(np.asarray(atoms.pbc, dtype=np.uint8)),
        "stress": torch.zeros(3, 3, dtype=torch.float64) if stress is None else torch.as_tensor(stress),
        "labels": torch.tensor([float(results.get("energy", 0.0)), float(info.get("weight", 1.0)),
                                "energy" in results, forces is not None, stress is not None], dtype=torch.float64),
        "where": torch.tensor([file_index, -1 if line is None else int(line), int(info.get("source_frame", -1))]),
        "source": str(info.get("source", "")),
    }


def row_atoms(row: dict[str, Any], paths: Sequence[str]) -> Atoms:
    """A store row back as the ``ase.Atoms`` the reader gave: same arrays, labels and source."""
    atoms = Atoms(numbers=row["numbers"].numpy().astype(np.int64), positions=row["positions"].numpy(),
                  cell=row["cell"].numpy(), pbc=row["pbc"].numpy().astype(bool))
    energy, weight, has_energy, has_forces, has_stress = row["labels"].tolist()
    results: dict[str, Any] = {}
    if has_energy:
        results["energy"] = energy
    if has_forces:
        results["forces"] = row["forces"].numpy()
    if has_stress:
        results["stress"] = row["stress"].numpy()
    atoms.calc = SinglePointCalculator(atoms, **results)
    file_index, line, frame = row["where"].tolist()
    atoms.info.update(source=row["source"], source_path=paths[file_index], source_frame=frame,
                      has_forces=bool(has_forces), weight=weight)
    if line >= 0:
        atoms.info["source_line"] = line
    return atoms


class FrameStore:
    """Read access to a complete store folder; one SQLite connection per process (after a fork a
    DataLoader worker opens its own, as SQLite requires).

    Args:
        folder: a folder written by :meth:`write`.

    Raises:
        InputError: the folder is not a complete store of this version.
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self.meta = read_meta(self.folder)
        if self.meta is None:
            raise InputError("expected a complete frame store (frames.db and meta.json), found none",
                             path=self.folder)
        self.paths: list[str] = list(self.meta["paths"])
        self._db: SQLiteDatabase | None = None
        self._pid = -1

    def __len__(self) -> int:
        return int(self.meta["frames"])

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_db": None, "_pid": -1}  # connections do not travel

    @property
    def db(self) -> SQLiteDatabase:
        if self._db is None or self._pid != os.getpid():
            self._db = SQLiteDatabase(os.fspath(self.folder / _DB), _TABLE, schema=_SCHEMA)
            self._pid = os.getpid()
        return self._db

    def row(self, index: int) -> dict[str, Any]:
        """Row ``index`` (0-based) as a dict of the columns in the module docstring."""
        if not 0 <= index < len(self):
            raise IndexError(f"frame {index} of a store of {len(self)}")
        return self.db.get(index)

    def atoms(self, index: int) -> Atoms:
        """Frame ``index`` as the reader gave it (:func:`row_atoms`)."""
        return row_atoms(self.row(index), self.paths)

    def rows(self, batch: int = 1024) -> Iterator[dict[str, Any]]:
        """Every row in order, ``batch`` at a time (bounded memory)."""
        for start in range(0, len(self), batch):
            yield from self.db.multi_get(range(start, min(start + batch, len(self))))

    @staticmethod
    def write(folder: Path, rows: Iterable[dict[str, Any]], meta: dict[str, Any], batch: int = 256) -> None:
        """Write ``rows`` into ``folder`` (created empty), then ``meta.json`` with the frame count
        and elements added: the last file written, so its presence means the store is whole."""
        folder.mkdir(parents=True)
        db = SQLiteDatabase(os.fspath(folder / _DB), _TABLE, schema=_SCHEMA)
        count, elements, periodic, pending = 0, set(), True, []
        try:
            for row in rows:
                pending.append(row)
                elements.update(torch.unique(row["numbers"]).tolist())
                periodic = periodic and bool(row["pbc"].all()) and abs(float(torch.det(row["cell"]))) > MIN_CELL_VOLUME
                if len(pending) == batch:
                    db.multi_insert(range(count, count + batch), pending)
                    count, pending = count + batch, []
            if pending:
                db.multi_insert(range(count, count + len(pending)), pending)
                count += len(pending)
        finally:
            db.close()
        _write_json(folder / _META, {**meta, "version": STORE_VERSION, "frames": count, "periodic": periodic,
                                     "elements": sorted(int(z) for z in elements)})


def read_meta(folder: Path) -> dict[str, Any] | None:
    """A store's ``meta.json``, or None if the folder is not a complete store of this version."""
    try:
        meta = json.loads((folder / _META).read_text())
    except (OSError, ValueError):
        return None
    ok = isinstance(meta, dict) and meta.get("version") == STORE_VERSION and (folder / _DB).is_file()
    return meta if ok else None


def _write_json(path: Path, value: dict[str, Any]) -> None:
    """Write JSON via a temporary file and a rename, so a reader sees all of it or none."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=1, sort_keys=True))
    os.replace(tmp, path)


def publish(partial: Path, final: Path) -> Path:
    """Rename a finished ``partial`` store to ``final``; if another process got there first with
    a complete store, keep that one. Returns the store to read."""
    if final.exists() and read_meta(final) is not None:
        shutil.rmtree(partial, ignore_errors=True)
        return final
    if final.exists():  # incomplete leftovers under the final name (should not happen): replace
        shutil.rmtree(final, ignore_errors=True)
    os.replace(partial, final)
    return final
