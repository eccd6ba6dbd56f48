"""iter_frames: the frames read_frames returns, one at a time, checked before each is yielded, in
bounded memory; the end-of-file checks run when the iteration reaches the end."""
from __future__ import annotations

import gc
import gzip
import logging
import tracemalloc

import ase.io
import numpy as np
import pytest
from ase.data import atomic_numbers

import pbcgnn
from pbcgnn.errors import InputError
from pbcgnn.io import iter_frames, read_frames
from pbcgnn.io.compression import read_bytes
from pbcgnn.io.tokens import decode
from pbcgnn.io.xyz_text import check_xyz_text
from pbcgnn.units import energy_factor, length_factor

XYZ_SETS = ["cheng2019_h2o_revpbe0_d3/cheng2019_h2o_revpbe0_d3.xyz", "deepmd_water/deepmd_water.xyz",
            "deepmd_dplr_water128/deepmd_dplr_water128.xyz", "n2p2_h2o_rpbe_d3/n2p2_h2o_rpbe_d3.xyz",
            "n2p2_h2o_rpbe_d3_4g_ice/n2p2_h2o_rpbe_d3_4g_ice.xyz"]
N2P2_SETS = ["n2p2_h2o_rpbe_d3/input.data", "n2p2_h2o_rpbe_d3_4g_ice/input.data"]
NATOMS = 6  # atoms per frame of the small synthetic files


# -- reference readers, independent of pbcgnn's ----------------------------------------------------
def _ase_reference(path) -> list[dict]:
    """What the readers promise for an eV/Angstrom extxyz file, from ASE's own whole-file read."""
    out = []
    for k, a in enumerate(ase.io.read(path, ":")):
        results = a.calc.results
        info = dict(a.info, has_forces="forces" in results, source=f"{path}: frame {k}", source_path=str(path),
                    source_frame=k)
        out.append({"numbers": a.numbers, "positions": a.positions, "cell": a.cell.array, "pbc": a.pbc, "info": info,
                    "results": {key: results[key] for key in ("energy", "forces", "stress") if key in results},
                    "arrays": {key: v for key, v in a.arrays.items() if key not in ("numbers", "positions")}})
    return out


def _n2p2_reference(path) -> list[dict]:
    """A plain parser of well-formed n2p2 files (Bohr, Hartree)."""
    lf, ef = length_factor("bohr"), energy_factor("hartree")
    out, block = [], {}
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        key, *rest = line.split() or [""]
        if key == "begin":
            block = {"line": lineno, "lattice": [], "atoms": [], "comment": [], "charge": 0.0}
        elif key in ("lattice", "atom"):
            block[key if key == "lattice" else "atoms"].append(rest)
        elif key in ("energy", "charge"):
            block[key] = float(rest[0])
        elif key == "comment":
            block["comment"].append(line.strip()[len("comment"):].strip())
        elif key == "end":
            rows = np.array([[float(v) for i, v in enumerate(r) if i != 3] for r in block["atoms"]])
            k = len(out)
            out.append({
                "numbers": np.array([atomic_numbers[r[3]] for r in block["atoms"]]), "positions": rows[:, :3] * lf,
                "cell": np.array(block["lattice"], dtype=float) * lf, "pbc": np.ones(3, dtype=bool),
                "results": {"energy": block["energy"] * ef, "forces": rows[:, 5:8] * (ef / lf)},
                "arrays": {"n2p2_atom_charge": rows[:, 3], "n2p2_atom_energy": rows[:, 4] * ef},
                "info": {"has_forces": True, "source": f"{path}:{block['line']}", "source_path": str(path),
                         "source_frame": k, "source_line": block["line"], "comment": block["comment"],
                         "charge": block["charge"]}})
    return out


def _assert_frames_equal(frames, reference) -> None:
    assert len(frames) == len(reference)
    for atoms, ref in zip(frames, reference):
        for key in ("numbers", "positions", "pbc"):
            np.testing.assert_array_equal(getattr(atoms, key), ref[key])
        np.testing.assert_array_equal(atoms.cell.array, ref["cell"])
        assert set(atoms.calc.results) == set(ref["results"])
        for key, value in ref["results"].items():
            np.testing.assert_array_equal(atoms.calc.results[key], value)
        assert set(atoms.arrays) == {"numbers", "positions", *ref["arrays"]}
        for key, value in ref["arrays"].items():
            np.testing.assert_array_equal(atoms.arrays[key], value)
        assert atoms.info == ref["info"]


@pytest.mark.parametrize("name", XYZ_SETS)
def test_shared_xyz_sets_stream_as_ase_reads_them(shared_data, name):
    path = shared_data / name
    _assert_frames_equal(list(iter_frames(path)), _ase_reference(path))


@pytest.mark.parametrize("name", N2P2_SETS)
def test_shared_n2p2_sets_stream_as_a_plain_parser_reads_them(shared_data, name):
    path = shared_data / name
    frames = list(iter_frames(path))
    _assert_frames_equal(frames, _n2p2_reference(path))
    _assert_frames_equal(read_frames(path), _n2p2_reference(path))


# -- small synthetic files ----------------------------------------------------------------------------
def _xyz_lines(n_frames: int, natoms: int = NATOMS, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    lines = []
    for k in range(n_frames):
        lines += [str(natoms), 'Lattice="9.0 0.0 0.0 0.0 9.0 0.0 0.0 0.0 9.0" '
                  f"Properties=species:S:1:pos:R:3:forces:R:3 energy={-100.0 - k} pbc=\"T T T\""]
        values = np.hstack([rng.uniform(0.0, 9.0, (natoms, 3)), rng.normal(size=(natoms, 3))]).tolist()
        lines += [" ".join(["OHH"[i % 3], *map(repr, row)]) for i, row in enumerate(values)]
    return lines


def _n2p2_lines(n_frames: int, natoms: int = NATOMS, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    lines = []
    for k in range(n_frames):
        lines += ["begin", *(f"lattice {' '.join('17.0' if i == j else '0.0' for j in range(3))}" for i in range(3))]
        values = np.hstack([rng.uniform(0.0, 17.0, (natoms, 3)), rng.normal(size=(natoms, 5))]).tolist()
        lines += [" ".join(["atom", *map(repr, row[:3]), "OHH"[i % 3], *map(repr, row[3:])])
                  for i, row in enumerate(values)]
        lines += [f"energy {-17.0 - k}", "charge 0.0", "end"]
    return lines


def _write(path, lines: list[str]):
    data = ("\n".join(lines) + "\n").encode()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def _frame_line(k: int, offset: int) -> int:
    """1-based line of line ``offset`` of xyz frame ``k`` (0: the atom count, 2: the first atom)."""
    return 1 + k * (NATOMS + 2) + offset


# frame 2 of 4 broken: (line edited, its new text from the old, line of the error (None: frame only), words)
XYZ_BREAKS = {
    "symbol": (_frame_line(2, 3), lambda old: "HO" + old[1:], _frame_line(2, 3),
               "expected a chemical element symbol in column 1, found 'HO'"),
    "count": (_frame_line(2, 0), lambda old: str(NATOMS + 1), _frame_line(3, 0),
              f"expected {NATOMS + 1} atom lines after the count at line {_frame_line(2, 0)}"),
    "nan": (_frame_line(2, 2), lambda old: "O nan 1.0 1.0 0.0 0.0 0.0", None,
            "expected finite positions, found nan at atom 0"),
}


@pytest.mark.parametrize("suffix", [".xyz", ".xyz.gz"])
@pytest.mark.parametrize("kind", sorted(XYZ_BREAKS))
def test_xyz_frames_before_a_broken_one_are_yielded(tmp_path, kind, suffix):
    edited, edit, line, words = XYZ_BREAKS[kind]
    lines = _xyz_lines(4)
    lines[edited - 1] = edit(lines[edited - 1])
    path = _write(tmp_path / f"broken{suffix}", lines)
    frames = iter_frames(path)
    first, second = next(frames), next(frames)
    assert (first.info["source_frame"], second.info["source_frame"]) == (0, 1)
    assert second.get_potential_energy() == -101.0
    with pytest.raises(InputError, match=words) as info:
        next(frames)
    assert (info.value.path, info.value.line, info.value.frame) == (str(path), line, 2)


def test_n2p2_frames_before_a_broken_one_are_yielded(tmp_path):
    lines = _n2p2_lines(4)
    bad = lines.index("energy -19.0")  # frame 2
    lines[bad] = "energy -19.0.0"
    path = _write(tmp_path / "input.data", lines)
    frames = iter_frames(path)
    assert [next(frames).info["source_line"] for _ in range(2)] == [1, 1 + len(lines) // 4]
    with pytest.raises(InputError, match="expected a number for energy, found '-19.0.0'") as info:
        next(frames)
    assert info.value.line == bad + 1


def test_truncated_last_n2p2_frame_raises_at_the_end(tmp_path):
    lines = _n2p2_lines(3)[:-1]  # no last 'end'
    path = _write(tmp_path / "input.data", lines)
    frames = iter_frames(path)
    assert len([next(frames), next(frames)]) == 2
    with pytest.raises(InputError, match=f"frame starting at line {2 * len(_n2p2_lines(1)) + 1} is truncated") as info:
        next(frames)
    assert info.value.line == len(lines)


def test_named_column_never_found_raises_at_the_end(files):
    frames = iter_frames(files / "valid.xyz", forces_key="REF_forces")
    assert [a.info["has_forces"] for a in (next(frames), next(frames))] == [False, False]
    with pytest.raises(InputError, match=r"expected a column 'REF_forces' \(--forces-key\) in some frame"):
        next(frames)


def test_misspelt_energy_key_is_named_at_the_first_frame(files):
    with pytest.raises(InputError, match=r"expected a column 'REF_energy' \(--energy-key\), found none in this "
                                         "frame or any before it") as info:
        next(iter_frames(files / "valid.xyz", energy_key="REF_energy"))
    assert info.value.frame == 0
    with pytest.raises(InputError, match=r"expected a column 'REF_energy' \(--energy-key\) in some frame"):
        read_frames(files / "valid.xyz", energy_key="REF_energy", require_energy=False)


def test_unread_columns_are_warned_about_once_at_the_end(files, caplog):
    frames = iter_frames(files / "ref_labels.xyz")
    with caplog.at_level(logging.WARNING, logger="pbcgnn.io"):
        next(frames)
        assert not caplog.records
        assert next(frames, None) is None
    assert len(caplog.records) == 1 and "REF_forces" in caplog.records[0].getMessage()


@pytest.mark.parametrize("name", ["nope.xyz", "nope.data"])
def test_a_missing_file_raises_at_the_call(tmp_path, name):
    with pytest.raises(InputError, match="no such file"):
        iter_frames(tmp_path / name)


def test_check_xyz_text_checks_every_frame(files):
    lines = (files / "count_too_small.xyz").read_text().split("\n")
    with pytest.raises(InputError, match="does the atom count of frame 0 match") as info:
        check_xyz_text(lines[:-1], "count_too_small.xyz")
    assert (info.value.line, info.value.frame) == (5, 1)
    check_xyz_text((files / "valid.xyz").read_text().split("\n")[:-1], "valid.xyz")


def test_iter_frames_is_public():
    assert pbcgnn.iter_frames is iter_frames and "iter_frames" in pbcgnn.io.__all__


# -- memory -------------------------------------------------------------------------------------------
def _peak_bytes(read) -> int:
    """Peak Python allocation while ``read()`` runs (tracemalloc)."""
    gc.collect()
    gc.freeze()  # what exists now is never garbage: collections during read() stay cheap
    tracemalloc.start()
    try:
        read()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        gc.unfreeze()


def _stream(path) -> None:
    for _ in iter_frames(path):
        gc.collect()  # an ase calculator is a reference cycle: garbage gc has not yet freed is not held


@pytest.mark.parametrize("name,lines", [("big.xyz", _xyz_lines), ("input.data", _n2p2_lines)])
def test_streaming_memory_stays_far_below_the_file(tmp_path, name, lines):
    path = _write(tmp_path / name, lines(700, 24))  # 2 to 3 MB
    size = path.stat().st_size
    list(iter_frames(_write(tmp_path / f"warm_{name}", lines(5, 24))))  # first-use imports and caches
    assert _peak_bytes(lambda: decode(read_bytes(path), path).split("\n")) > size  # the whole text at once
    assert _peak_bytes(lambda: _stream(path)) < size / 10
