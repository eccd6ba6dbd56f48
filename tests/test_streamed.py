"""Frames streamed from an on-disk store: the same graphs and batches as in memory, bit for bit;
stores keyed by content, never read half; bad input refused as in memory."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from torch_geometric.loader import DataLoader

from pbcgnn.config import Config, DataConfig, ModelConfig
from pbcgnn.dataset import FrameDataset, FrameLoader, file_sha256, load_datasets, open_frames
from pbcgnn.dataset.loader import pack, unpack
from pbcgnn.errors import InputError
from pbcgnn.store import FrameStore, frame_row
from pbcgnn.dataset.streamed import StreamedFrameDataset, open_store

from .cli.conftest import TRAIN, run

OPTIONS = {"format": None, "length_unit": None, "energy_unit": None, "require_energy": True}


def streamed(path: Path, root: Path, cutoff: float = 4.0, **kwargs) -> StreamedFrameDataset:
    path = path.resolve()
    return StreamedFrameDataset(open_store([path], [file_sha256(path)], root, OPTIONS), cutoff, **kwargs)


def assert_same_batch(x, y) -> None:
    assert sorted(x.keys()) == sorted(y.keys())
    for key in x.keys():
        a, b = x[key], y[key]
        if torch.is_tensor(a):
            assert a.dtype == b.dtype and torch.equal(a, b), key
        else:
            assert a == b, key


@pytest.fixture
def labelled_xyz(tmp_path) -> Path:
    """Six small periodic frames with energy, forces, stress and weights; one without forces."""
    import ase.io
    rng = np.random.default_rng(3)
    frames = []
    for k in range(6):
        atoms = Atoms("OH2OH2", positions=rng.random((6, 3)) * 5.0, cell=np.diag([5.0, 5.5, 6.0]) + 0.3 * k, pbc=True)
        results = {"energy": -10.0 - k, "stress": rng.normal(size=6)}
        if k != 2:
            results["forces"] = rng.normal(size=(6, 3))
        atoms.calc = SinglePointCalculator(atoms, **results)
        atoms.info["weight"] = 0.5 + k
        frames.append(atoms)
    path = tmp_path / "frames.xyz"
    ase.io.write(path, frames, format="extxyz")
    return path


@pytest.mark.parametrize("workers", [0, 1])
def test_batches_equal_the_in_memory_path_bit_for_bit(bundled_n2p2, labelled_xyz, tmp_path, workers):
    for path in (bundled_n2p2, labelled_xyz):
        memory, disk = FrameDataset(path, 4.0), streamed(path, tmp_path / "stores")
        assert len(memory) == len(disk) and memory.elements == disk.elements
        torch.manual_seed(5)
        a = list(DataLoader(memory, batch_size=3, shuffle=True))
        torch.manual_seed(5)
        b = list(FrameLoader(disk, batch_size=3, shuffle=True, num_workers=workers))
        assert len(a) == len(b) > 1
        for x, y in zip(a, b):
            assert_same_batch(x, y)
            assert all(x[k].stride() == y[k].stride() for k in x.keys() if torch.is_tensor(x[k]))
            assert y.pos.is_shared() == (workers > 0)  # one buffer from the worker, not a copy
            for g, h in zip(x.to_data_list(), y.to_data_list()):  # the slice tables came along
                assert_same_batch(g, h)


def test_packing_keeps_every_tensor_and_the_rest():
    odd = torch.arange(12.0).reshape(3, 4).t()  # not contiguous
    obj = {"d": torch.tensor([1.5, -2.0], dtype=torch.float64), "b": torch.tensor([True, False, True]),
           "empty": torch.empty(0, 3, dtype=torch.int64), "odd": odd, "z": torch.tensor(7, dtype=torch.int8),
           "text": ["a", 3], "same": None}
    obj["same"] = obj["d"]
    buffer, layout, _ = packed = pack(obj)
    assert buffer.dtype == torch.uint8 and all(offset % 64 == 0 for offset, *_ in layout)
    back = unpack(packed)
    for key in ("d", "b", "empty", "odd", "z"):
        assert back[key].dtype == obj[key].dtype and torch.equal(back[key], obj[key]), key
    assert back["text"] == ["a", 3] and back["same"] is back["d"]  # shared references stay shared


def test_splits_and_labels_view_match(bundled_n2p2, tmp_path):
    memory, disk = FrameDataset(bundled_n2p2, 4.0), streamed(bundled_n2p2, tmp_path)
    for m, d in zip(memory.split((0.75, 0.25), seed=2), disk.split((0.75, 0.25), seed=2)):
        assert len(m) == len(d)
        for i in range(len(m)):
            assert_same_batch(m[i], d[i])
    labels = disk.labels_only()
    assert "edge_index" not in labels[0]
    assert torch.equal(labels[3].forces, memory[3].forces) and torch.equal(labels[3].energy, memory[3].energy)
    assert disk[0].edge_index.shape[1] > 0  # the view is a copy: the dataset still builds edges


def test_store_is_keyed_by_content_and_reused(labelled_xyz, tmp_path):
    root = tmp_path / "stores"
    first = open_store([labelled_xyz], [file_sha256(labelled_xyz)], root, OPTIONS)
    again = open_store([labelled_xyz], [file_sha256(labelled_xyz)], root, OPTIONS)
    assert first.folder == again.folder and len(list(root.iterdir())) == 1
    other = open_store([labelled_xyz], [file_sha256(labelled_xyz)], root, {**OPTIONS, "energy_unit": "kcal/mol"})
    assert other.folder != first.folder  # other units: another store
    assert other.atoms(0).get_potential_energy() != first.atoms(0).get_potential_energy()


def test_changed_source_builds_a_new_store(bundled_n2p2, tmp_path):
    copy = tmp_path / "input.data"
    shutil.copy(bundled_n2p2, copy)
    root = tmp_path / "stores"
    before = open_store([copy], [file_sha256(copy)], root, OPTIONS)
    copy.write_text(copy.read_text().replace("energy", "energy ", 1))  # same values, other bytes
    lines = copy.read_text().splitlines()
    energy = next(i for i, line in enumerate(lines) if line.startswith("energy"))
    lines[energy] = "energy -1.0"
    copy.write_text("\n".join(lines) + "\n")
    after = open_store([copy], [file_sha256(copy)], root, OPTIONS)
    assert after.folder != before.folder
    assert after.atoms(0).get_potential_energy() != before.atoms(0).get_potential_energy()


def test_a_conversion_killed_midway_leaves_no_store(bundled_n2p2, tmp_path, monkeypatch):
    import pbcgnn.dataset.streamed as streamed_module
    calls = {"n": 0}
    real = streamed_module.frame_row

    def dying(atoms, index):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt  # a kill in the middle of the file
        return real(atoms, index)

    monkeypatch.setattr(streamed_module, "frame_row", dying)
    root = tmp_path / "stores"
    with pytest.raises(KeyboardInterrupt):
        open_store([bundled_n2p2], [file_sha256(bundled_n2p2)], root, OPTIONS)
    assert list(root.iterdir()) == []  # nothing half written is left to read
    monkeypatch.undo()
    assert len(open_store([bundled_n2p2], [file_sha256(bundled_n2p2)], root, OPTIONS)) == 16


def test_a_store_without_its_meta_is_rebuilt_not_read(bundled_n2p2, tmp_path):
    root = tmp_path / "stores"
    store = open_store([bundled_n2p2], [file_sha256(bundled_n2p2)], root, OPTIONS)
    (store.folder / "meta.json").unlink()  # as a kill between the rows and the meta would leave it
    with (store.folder / "frames.db").open("r+b") as f:
        f.truncate(4096)
    with pytest.raises(InputError, match="expected a complete frame store"):
        FrameStore(store.folder)
    rebuilt = open_store([bundled_n2p2], [file_sha256(bundled_n2p2)], root, OPTIONS)
    assert len(rebuilt) == 16 and rebuilt.atoms(15).get_potential_energy() == store.atoms(15).get_potential_energy()


def test_rows_round_trip_every_label(labelled_xyz, tmp_path):
    from pbcgnn.io import read_frames
    store = open_store([labelled_xyz], [file_sha256(labelled_xyz)], tmp_path, OPTIONS)
    for k, atoms in enumerate(read_frames(labelled_xyz)):
        back = store.atoms(k)
        assert np.array_equal(back.numbers, atoms.numbers) and np.array_equal(back.positions, atoms.positions)
        assert np.array_equal(back.cell.array, atoms.cell.array) and np.array_equal(back.pbc, atoms.pbc)
        assert back.calc.results.keys() == atoms.calc.results.keys()
        assert back.info["source"] == atoms.info["source"] and back.info["weight"] == atoms.info["weight"]
    assert store.meta["elements"] == [1, 8] and store.meta["periodic"]
    with pytest.raises(InputError, match="atomic numbers below 256"):
        frame_row(Atoms(numbers=[300], positions=[[0, 0, 0]]), 0)


def test_bad_input_is_refused_when_the_store_is_written(files, tmp_path):
    path = files / "overlapping_atoms.xyz"
    with pytest.raises(InputError, match=r"overlapping_atoms.xyz: frame 0: atoms 0 and 2 overlap") as memory:
        FrameDataset(path, 4.0)
    with pytest.raises(InputError) as disk:
        streamed(path, tmp_path / "stores")
    assert str(disk.value) == str(memory.value)
    assert not any((tmp_path / "stores").iterdir())


def test_unsupported_elements_name_the_frame(bundled_n2p2, tmp_path):
    with pytest.raises(InputError, match=r"input.data:\d+: element\(s\) H not in the model's training set") as disk:
        streamed(bundled_n2p2, tmp_path, elements=[8])
    with pytest.raises(InputError) as memory:
        FrameDataset(bundled_n2p2, 4.0, elements=[8])
    assert str(disk.value) == str(memory.value)


def test_auto_storage_takes_memory_for_small_data_and_disk_when_told(bundled_n2p2, tmp_path, monkeypatch):
    def config(storage):
        return Config(data=DataConfig(paths=(str(bundled_n2p2),), storage=storage), model=ModelConfig(cutoff=4.0))
    assert isinstance(open_frames([bundled_n2p2], config("auto")), FrameDataset)
    assert isinstance(open_frames([bundled_n2p2], config("disk")), StreamedFrameDataset)
    import pbcgnn.dataset.loading as dataset_module
    monkeypatch.setattr(dataset_module, "available_memory", lambda device="cpu": 1 << 20)  # 1 MiB free
    train, val = load_datasets(config("auto"))
    assert isinstance(train, StreamedFrameDataset) and len(train) + len(val) == 16


def test_training_from_the_store_equals_training_in_memory(bundled_n2p2, tmp_path, one_thread):
    weights = {}
    for storage, workers in (("memory", 0), ("disk", 1)):
        out = tmp_path / storage
        result = run("train", bundled_n2p2, *TRAIN, "--epochs", "2", "--out", out, "--storage", storage,
                     "--workers", workers, "--cache-dir", tmp_path / "cache")
        assert result.exit_code == 0, result.output
        weights[storage] = torch.load(out / "last.pt", weights_only=False)
    a, b = weights["memory"], weights["disk"]
    assert a["metrics"] == b["metrics"]
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert any(p.name.startswith("store-") for p in (tmp_path / "cache").iterdir())


def test_storage_and_workers_are_checked(bundled_n2p2, tmp_path):
    result = run("train", bundled_n2p2, *TRAIN, "--out", tmp_path / "r", "--storage", "tape")
    assert result.exit_code == 2 and "tape" in result.output
    result = run("train", bundled_n2p2, *TRAIN, "--out", tmp_path / "r", "--workers", "-1")
    assert result.exit_code == 2 and "--workers" in result.output
    with pytest.raises(InputError, match="expected storage to be one of auto, memory, disk"):
        Config(data=DataConfig(paths=(str(bundled_n2p2),), storage="tape")).validate()


SHARED = ["cheng2019_h2o_revpbe0_d3/cheng2019_h2o_revpbe0_d3.xyz", "deepmd_water/deepmd_water.xyz",
          "deepmd_dplr_water128/deepmd_dplr_water128.xyz", "n2p2_h2o_rpbe_d3/input.data",
          "n2p2_h2o_rpbe_d3/n2p2_h2o_rpbe_d3.xyz", "n2p2_h2o_rpbe_d3_4g_ice/input.data"]


@pytest.mark.parametrize("name", SHARED)
def test_the_store_holds_every_shared_set_as_the_reader_reads_it(shared_data, tmp_path, name):
    from pbcgnn.io import read_frames
    path = shared_data / name
    store = open_store([path], [file_sha256(path)], tmp_path, OPTIONS)
    frames = read_frames(path)
    assert len(store) == len(frames)
    for k, atoms in enumerate(frames):
        back = store.atoms(k)
        assert np.array_equal(back.numbers, atoms.numbers) and np.array_equal(back.positions, atoms.positions)
        assert np.array_equal(back.cell.array, atoms.cell.array) and np.array_equal(back.pbc, atoms.pbc)
        for key, value in atoms.calc.results.items():
            assert np.array_equal(back.calc.results[key], value), (k, key)
        for key in ("source", "source_frame", "has_forces"):
            assert back.info[key] == atoms.info[key], (k, key)

