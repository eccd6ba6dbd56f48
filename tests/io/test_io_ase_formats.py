"""extxyz and other ase.io formats: labels, units, has_forces, sources, writing."""
from __future__ import annotations

import numpy as np
import pytest

from pbcgnn.io import read_frames, write_frames
from pbcgnn.io.ase_formats import read_ase, write_extxyz
from pbcgnn.units import energy_factor, length_factor


def test_valid_extxyz(files):
    path = files / "valid.xyz"
    frames = read_frames(path)
    assert len(frames) == 2
    for k, atoms in enumerate(frames):
        assert atoms.info["source"] == f"{path}: frame {k}"
        assert atoms.info["source_path"] == str(path) and atoms.info["source_frame"] == k
        assert atoms.info["has_forces"] is True
        assert atoms.pbc.all()
        np.testing.assert_array_equal(atoms.cell.array, 10.0 * np.eye(3))
    assert frames[1].get_potential_energy() == -2078.5
    np.testing.assert_array_equal(frames[0].get_forces()[0], [0.1, -0.2, 0.3])


def test_extxyz_without_forces(files):
    (atoms,) = read_frames(files / "no_forces.xyz")
    assert atoms.info["has_forces"] is False
    assert set(atoms.calc.results) == {"energy"}


def test_energy_and_forces_from_info_and_arrays(files):
    (atoms,) = read_frames(files / "info_labels.xyz")  # TotEnergy= and force:R:3
    assert atoms.get_potential_energy() == -2079.0
    np.testing.assert_array_equal(atoms.get_forces()[0], [0.1, -0.2, 0.3])
    assert "TotEnergy" not in atoms.info and "force" not in atoms.arrays


def test_nonperiodic_extxyz_keeps_pbc(files):
    (atoms,) = read_frames(files / "nonperiodic.xyz")
    assert not atoms.pbc.any()


def test_unit_conversion(files):
    path = files / "valid.xyz"
    ev = read_ase(path)
    au = read_ase(path, length_unit="bohr", energy_unit="hartree")
    lf, ef = length_factor("bohr"), energy_factor("hartree")
    for a, b in zip(ev, au):
        np.testing.assert_array_equal(b.positions, a.positions * lf)
        np.testing.assert_array_equal(b.cell.array, a.cell.array * lf)
        assert b.get_potential_energy() == a.get_potential_energy() * ef
        np.testing.assert_array_equal(b.get_forces(), a.get_forces() * (ef / lf))


def test_shared_extxyz_sets(shared_data):
    frames = read_frames(shared_data / "deepmd_dplr_water128" / "deepmd_dplr_water128.xyz")
    assert len(frames) == 24 and all(len(a) == 384 for a in frames)
    assert all(a.info["dataset"] == "deepmd_dplr_water128" for a in frames)
    assert all(a.info["has_forces"] for a in frames)


def test_require_energy_false(files):
    first, second = read_frames(files / "missing_energy.xyz", require_energy=False)
    assert "energy" in first.calc.results and "energy" not in second.calc.results


def test_extxyz_round_trip(files, tmp_path):
    frames = read_frames(files / "valid.data")  # Bohr/Hartree in, eV/Angstrom out
    write_frames(tmp_path / "out.xyz", frames)
    again = read_frames(tmp_path / "out.xyz")
    assert [a.info["source"] for a in again] == [f"{tmp_path / 'out.xyz'}: frame {k}"
                                                 for k in range(2)]
    for a, b in zip(frames, again):
        np.testing.assert_array_equal(a.pbc, b.pbc)
        np.testing.assert_allclose(b.positions, a.positions, atol=1e-8)
        np.testing.assert_allclose(b.get_potential_energy(), a.get_potential_energy(), rtol=1e-12)
        np.testing.assert_allclose(b.get_forces(), a.get_forces(), atol=1e-8)
        np.testing.assert_array_equal(b.arrays["n2p2_atom_charge"], a.arrays["n2p2_atom_charge"])


def test_write_extxyz_in_other_units(files, tmp_path):
    frames = read_frames(files / "valid.xyz")
    write_extxyz(tmp_path / "au.xyz", frames, length_unit="bohr", energy_unit="hartree")
    again = read_frames(tmp_path / "au.xyz", length_unit="bohr", energy_unit="hartree")
    for a, b in zip(frames, again):
        # ase.io.write prints 8 decimals (here in Bohr and Ha/Bohr)
        np.testing.assert_allclose(b.positions, a.positions, atol=1e-8)
        assert b.get_potential_energy() == pytest.approx(a.get_potential_energy(), rel=1e-12)
        np.testing.assert_allclose(b.get_forces(), a.get_forces(), atol=1e-6)


def test_explicit_ase_format(files, tmp_path):
    path = tmp_path / "frames.txt"
    path.write_text((files / "valid.xyz").read_text())
    assert len(read_frames(path, format="extxyz")) == 2
