"""n2p2 reader/writer: units against the shared extxyz, lossless round trip, quirks, detection."""
from __future__ import annotations

import io

import numpy as np
import pytest

from pbcgnn.io import detect_format, read_frames, write_frames
from pbcgnn.io.n2p2 import read_n2p2, write_n2p2
from pbcgnn.units import energy_factor, length_factor

N2P2_SETS = ["n2p2_h2o_rpbe_d3", "n2p2_h2o_rpbe_d3_4g_ice"]


def _assert_same_frames(a, b):
    """Bit-identical positions, cell, pbc, species, energy, forces, charges, comments."""
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.get_chemical_symbols() == y.get_chemical_symbols()
        np.testing.assert_array_equal(x.positions, y.positions)
        np.testing.assert_array_equal(x.cell.array, y.cell.array)
        np.testing.assert_array_equal(x.pbc, y.pbc)
        assert x.calc.results.keys() == y.calc.results.keys()
        for key in x.calc.results:
            np.testing.assert_array_equal(x.calc.results[key], y.calc.results[key])
        for key in ("n2p2_atom_charge", "n2p2_atom_energy"):
            np.testing.assert_array_equal(x.arrays[key], y.arrays[key])
        for key in ("comment", "charge", "has_forces"):
            assert x.info[key] == y.info[key]


@pytest.mark.parametrize("name", N2P2_SETS)
def test_units_match_shared_extxyz(shared_data, name):
    n2p2 = read_frames(shared_data / name / "input.data")
    xyz = read_frames(shared_data / name / f"{name}.xyz")
    assert len(n2p2) == len(xyz) == 16
    for a, b in zip(n2p2, xyz):
        assert a.get_chemical_symbols() == b.get_chemical_symbols()
        assert a.pbc.all() and b.pbc.all()
        # The .xyz prints 8 decimals for positions and forces, hence atol 1e-8 as well.
        np.testing.assert_allclose(a.positions, b.positions, rtol=1e-8, atol=1e-8)
        np.testing.assert_allclose(a.cell.array, b.cell.array, rtol=1e-8, atol=1e-8)
        np.testing.assert_allclose(a.get_potential_energy(), b.get_potential_energy(), rtol=1e-8)
        np.testing.assert_allclose(a.get_forces(), b.get_forces(), rtol=1e-8, atol=1e-8)
        np.testing.assert_array_equal(a.arrays["n2p2_atom_charge"], b.arrays["n2p2_atom_charge"])


@pytest.mark.parametrize("name", N2P2_SETS)
def test_round_trip_is_bit_identical(shared_data, tmp_path, name):
    frames = read_n2p2(shared_data / name / "input.data")
    write_n2p2(tmp_path / "input.data", frames)
    again = read_n2p2(tmp_path / "input.data")
    _assert_same_frames(frames, again)
    for a in again:
        assert a.info["source_path"] == str(tmp_path / "input.data")
    # Writing the re-read frames gives the same text: the writer is a fixed point.
    write_n2p2(tmp_path / "again.data", again)
    assert (tmp_path / "again.data").read_text() == (tmp_path / "input.data").read_text()


def test_round_trip_in_angstrom_and_ev(bundled_n2p2, tmp_path):
    frames = read_n2p2(bundled_n2p2)
    write_n2p2(tmp_path / "ev.data", frames, length_unit="angstrom", energy_unit="ev")
    again = read_n2p2(tmp_path / "ev.data", length_unit="angstrom", energy_unit="ev")
    _assert_same_frames(frames, again)
    # and via the dispatching API
    write_frames(tmp_path / "input.data", frames)
    _assert_same_frames(frames, read_frames(tmp_path / "input.data"))


def test_round_trip_of_small_file(files, tmp_path):
    frames = read_n2p2(files / "valid.data")
    buffer = io.StringIO()
    write_n2p2(buffer, frames)
    (tmp_path / "out.data").write_text(buffer.getvalue())
    _assert_same_frames(frames, read_n2p2(tmp_path / "out.data"))
    keys = [line.split()[0] for line in buffer.getvalue().splitlines()]
    assert keys.count("begin") == 2 and keys.count("lattice") == 3  # frame 2 is non-periodic


def test_explicit_units_scale_by_exact_factors(shared_data):
    path = shared_data / "n2p2_h2o_rpbe_d3" / "input.data"
    atomic = read_frames(path)
    raw = read_frames(path, length_unit="angstrom", energy_unit="ev")
    lf, ef = length_factor("bohr"), energy_factor("hartree")
    for a, r in zip(atomic, raw):
        np.testing.assert_array_equal(a.positions, r.positions * lf)
        np.testing.assert_array_equal(a.cell.array, r.cell.array * lf)
        assert a.get_potential_energy() == r.get_potential_energy() * ef
        np.testing.assert_array_equal(a.get_forces(), r.get_forces() * (ef / lf))
        np.testing.assert_array_equal(a.arrays["n2p2_atom_charge"], r.arrays["n2p2_atom_charge"])


def test_first_value_of_bundled_file(bundled_n2p2):
    first = read_n2p2(bundled_n2p2)[0]
    # atom 11.980862736 7.464417388 11.565122823 O -0.236051710 0.0 0.005106802 ... (Bohr, Ha/Bohr)
    assert first.positions[0, 0] == 11.980862736 * length_factor("bohr")
    force_factor = energy_factor("hartree") / length_factor("bohr")
    assert first.get_forces()[0, 0] == 0.005106802 * force_factor
    assert first.arrays["n2p2_atom_charge"][0] == -0.236051710
    energy = first.get_potential_energy()
    assert energy == pytest.approx(-1225.06985518 * 27.211386245988, rel=1e-10)


def test_bundled_file(bundled_n2p2):
    frames = read_frames(bundled_n2p2)
    # The shared/bundled file is the 16 shared frames of the 20-frame original (the README's
    # "192, 48 x 11, 96, ..." describes the original): 10 x 48, then 96, 192, 192, 96, 192, 192.
    assert [len(a) for a in frames] == [48] * 10 + [96, 192, 192, 96, 192, 192]
    for k, atoms in enumerate(frames):
        symbols = atoms.get_chemical_symbols()
        assert symbols.count("H") == 2 * symbols.count("O")
        assert symbols.count("H") + symbols.count("O") == len(atoms)
        assert atoms.pbc.all() and atoms.info["has_forces"]
        assert atoms.info["comment"] == ["written by RuNNerDecom"]
        assert atoms.info["charge"] == 0.0
        assert atoms.info["source_frame"] == k
        assert atoms.info["source"] == f"{bundled_n2p2}:{atoms.info['source_line']}"
        assert not np.any(atoms.arrays["n2p2_atom_energy"])
        assert np.all(atoms.arrays["n2p2_atom_charge"] != 0)
    assert frames[0].info["source"] == f"{bundled_n2p2}:1"  # " begin" is indented in this file


def test_valid_small_file(files):
    path = files / "valid.data"
    periodic, molecule = read_frames(path)
    assert periodic.info["source"] == f"{path}:1" and molecule.info["source"] == f"{path}:15"
    assert periodic.info["comment"] == [
        "first frame: periodic, indented keywords, scientific notation",
        "second comment line",
    ]
    np.testing.assert_array_equal(periodic.cell.array, 10.0 * length_factor("bohr") * np.eye(3))
    assert periodic.get_potential_energy() == -76.4 * energy_factor("hartree")
    assert periodic.arrays["n2p2_atom_energy"][0] == -1.5e-3 * energy_factor("hartree")
    assert not molecule.pbc.any() and not molecule.cell.array.any()
    assert molecule.info["charge"] == -1.0
    np.testing.assert_array_equal(molecule.arrays["n2p2_atom_charge"], [-1.4, 0.4])


def test_energy_only_frame(files, tmp_path):
    no_forces, with_forces = read_n2p2(files / "energy_only.data")
    assert no_forces.info["has_forces"] is False and with_forces.info["has_forces"] is True
    assert set(no_forces.calc.results) == {"energy"}
    assert no_forces.get_potential_energy() == -76.4 * energy_factor("hartree")
    write_n2p2(tmp_path / "out.data", [no_forces, with_forces])
    atom_lines = [ln.split() for ln in (tmp_path / "out.data").read_text().splitlines()
                  if ln.startswith("atom")]
    assert [len(f) for f in atom_lines] == [7, 7, 7, 10, 10, 10]
    _assert_same_frames([no_forces, with_forces], read_n2p2(tmp_path / "out.data"))


def test_require_energy_false(files):
    (frame,) = read_n2p2(files / "missing_energy.data", require_energy=False)
    assert "energy" not in frame.calc.results and frame.info["has_forces"]


def test_writer_defaults_for_plain_atoms(tmp_path):
    from ase.build import molecule
    from ase.calculators.singlepoint import SinglePointCalculator

    water = molecule("H2O", cell=[6.0, 6.0, 6.0], pbc=True)
    water.calc = SinglePointCalculator(water, energy=-14.2, forces=np.zeros((3, 3)))
    write_n2p2(tmp_path / "w.data", [water])
    (back,) = read_n2p2(tmp_path / "w.data")
    np.testing.assert_array_equal(back.positions, water.positions)
    assert back.get_potential_energy() == -14.2
    assert back.info["charge"] == 0.0 and back.info["comment"] == []
    assert not back.arrays["n2p2_atom_charge"].any()


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("input.data", "anything", "n2p2"),
        ("frames.data", "", "n2p2"),
        ("frames.txt", "\n\n   begin\ncomment x\n", "n2p2"),
        ("frames.txt", "3\nLattice=...\n", "ase"),
        ("frames.xyz", "3\nbegin\n", "ase"),
        ("beginning.xyz", "beginning\n", "ase"),
    ],
)
def test_detect_format(tmp_path, name, text, expected):
    path = tmp_path / name
    path.write_text(text)
    assert detect_format(path) == expected


def test_dispatch_by_content(files, tmp_path):
    path = tmp_path / "frames.txt"
    path.write_text((files / "valid.data").read_text())
    assert len(read_frames(path)) == 2
    assert len(read_frames(path, format="n2p2")) == 2
