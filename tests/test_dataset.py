"""FrameDataset: graph fields, disk cache keyed by content/cutoff/units, splits, PyG reuse."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from torch_geometric.loader import DataLoader

from pbcgnn.dataset import FrameDataset, bootstrap_indices, file_sha256, split_indices
from pbcgnn.errors import InputError
from pbcgnn.graph import PeriodicInteractionGraph, atoms_to_graph


def test_fields_shapes_and_units(bundled_n2p2):
    ds = FrameDataset(bundled_n2p2, cutoff=6.0)
    assert len(ds) == 16
    g = ds[0]
    n, e = g.num_nodes, g.edge_index.shape[1]
    assert g.z.shape == (n,) and g.z.dtype == torch.long
    assert g.pos.shape == (n, 3) and g.pos.dtype == torch.float64
    assert g.cell.shape == (1, 3, 3) and g.pbc.shape == (1, 3)
    assert g.cell_offsets.shape == (e, 3) and g.cell_offsets.dtype == torch.long
    assert g.energy.shape == (1,) and g.forces.shape == (n, 3)
    assert bool(g.has_forces) and int(g.natoms) == n
    assert ":" in g.source and "input.data" in g.source
    # eV and Angstrom: a 16-water box is 7.82 A and -2083 eV per H2O (all-electron RPBE-D3)
    small = next(d for d in ds if d.num_nodes == 48)
    assert small.cell[0, 0, 0] == pytest.approx(7.8224, abs=1e-3)
    assert float(small.energy) / 16 == pytest.approx(-2083.4, abs=1.0)
    assert set(ds.elements) == {1, 8}


def test_cutoff_beyond_half_box_gives_all_images(bundled_n2p2):
    """16 H2O in a 7.82 A box at 6 A: ~89 neighbours per atom, many images of the same atom."""
    ds = FrameDataset(bundled_n2p2, cutoff=6.0)
    g = next(d for d in ds if d.num_nodes == 48)
    per_atom = g.edge_index.shape[1] / g.num_nodes
    assert 80 < per_atom < 100  # density 0.1 atoms/A^3 x 4/3 pi 6^3 = 90
    pairs = g.edge_index.t().tolist()
    assert len({tuple(p) for p in pairs}) < len(pairs)  # same (j, i) through several images
    assert (g.cell_offsets.abs().max() >= 1).item()


def test_cache_reused_and_keyed(bundled_n2p2, tmp_path):
    src = tmp_path / "input.data"
    shutil.copy(bundled_n2p2, src)
    a = FrameDataset(src, cutoff=5.0, root=tmp_path / "cache")
    cached = list((tmp_path / "cache" / "graphs").glob("frames-*.pt"))
    assert len(cached) == 1
    b = FrameDataset(src, cutoff=5.0, root=tmp_path / "cache")  # loads the cache
    assert torch.equal(a._data.edge_index, b._data.edge_index) and a.cache_key == b.cache_key
    c = FrameDataset(src, cutoff=4.0, root=tmp_path / "cache")
    d = FrameDataset(src, cutoff=5.0, root=tmp_path / "cache", length_unit="angstrom")
    src.write_text(src.read_text().replace("energy", "energy ", 1))  # same numbers, new bytes
    e = FrameDataset(src, cutoff=5.0, root=tmp_path / "cache")
    assert len({a.cache_key, c.cache_key, d.cache_key, e.cache_key}) == 4
    assert len(list((tmp_path / "cache" / "graphs").glob("frames-*.pt"))) == 4


def test_split_is_seeded_disjoint_and_complete():
    parts = split_indices(531, (0.9, 0.1), seed=3)
    assert [len(p) for p in parts] == [478, 53]
    assert sorted(torch.cat(parts).tolist()) == list(range(531))
    again = split_indices(531, (0.9, 0.1), seed=3)
    assert all(torch.equal(x, y) for x, y in zip(parts, again))
    assert not torch.equal(parts[1], split_indices(531, (0.9, 0.1), seed=4)[1])
    with pytest.raises(InputError):
        split_indices(10, (0.5, 0.6))


def test_bad_paths_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="is a directory"):
        FrameDataset(tmp_path, cutoff=5.0)
    with pytest.raises(InputError, match="no such file"):
        FrameDataset(tmp_path / "missing.data", cutoff=5.0)


def test_overlapping_atoms_name_the_frame(bundled_n2p2):
    from pbcgnn.io import read_frames

    atoms = read_frames(bundled_n2p2)[1]
    atoms.positions[5] = atoms.positions[7] + 0.05
    with pytest.raises(InputError, match=r"input.data:\d+: atoms \d+ and \d+ overlap"):
        atoms_to_graph(atoms, 6.0)


def test_pyg_schnet_runs_on_periodic_edges(bundled_n2p2):
    """PyG's own SchNet consumes our graphs through its interaction_graph hook, and is extensive:
    a 2x2x2 supercell has 8x the energy only if every periodic image is an edge."""
    from torch_geometric.nn.models import SchNet as PygSchNet

    from pbcgnn.io import read_frames

    atoms = next(a for a in read_frames(bundled_n2p2) if len(a) == 48)
    atoms = atoms.copy()  # unlabelled: the supercell has no reference energy either
    graphs = [atoms_to_graph(atoms, 6.0), atoms_to_graph(atoms.repeat((2, 2, 2)), 6.0)]
    graph = PeriodicInteractionGraph()
    torch.manual_seed(0)
    model = PygSchNet(hidden_channels=32, num_filters=32, num_interactions=2, num_gaussians=20,
                      cutoff=6.0, interaction_graph=graph, readout="add").double()
    batch = next(iter(DataLoader(graphs, batch_size=2)))
    energy = model(batch.z, graph.bind(batch).pos, batch.batch).squeeze(-1)
    assert energy.shape == (2,)
    np.testing.assert_allclose(energy[1].item(), 8 * energy[0].item(), rtol=1e-9)


def test_bootstrap_indices():
    idx = bootstrap_indices(50, seed=3)
    assert torch.equal(idx, bootstrap_indices(50, seed=3)) and not torch.equal(idx, bootstrap_indices(50, seed=4))
    assert idx.shape == (50,) and int(idx.min()) >= 0 and int(idx.max()) < 50
    assert 20 < len(set(idx.tolist())) < 45  # drawn with replacement (about 63 % distinct)


def test_file_digest_is_remembered_until_the_file_changes(tmp_path, monkeypatch):
    import builtins
    import hashlib
    import os
    path = tmp_path / "a.xyz"
    path.write_bytes(b"first")
    assert file_sha256(path) == hashlib.sha256(b"first").hexdigest()
    opened = []
    real_open = builtins.open
    monkeypatch.setattr(builtins, "open", lambda *a, **k: opened.append(a[0]) or real_open(*a, **k))
    assert file_sha256(path) == hashlib.sha256(b"first").hexdigest() and opened == []  # not read again
    mtime = path.stat().st_mtime_ns
    path.write_bytes(b"other")  # same size; a later modification time
    os.utime(path, ns=(mtime + 10**9, mtime + 10**9))
    assert file_sha256(path) == hashlib.sha256(b"other").hexdigest() and opened == [path]
