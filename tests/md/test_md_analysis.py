"""Analysis oracles (RDF of a lattice and an ideal gas, ASE's RDF, drift, density) and the CLI."""
from __future__ import annotations

import json

import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.geometry.rdf import get_rdf
from click.testing import CliRunner
from pbcgnn.cli import main

from pbcgnn.analysis import analyze, density, element_pairs, energy_drift, rdf
from pbcgnn.errors import InputError
from pbcgnn.md.output import MDRecorder, read_thermo


def coordination(r, g, n_b, volume, r_to):
    """Neighbours of type B within r_to: rho_B * integral of 4 pi r^2 g(r) (bins of width dr)."""
    dr = r[1] - r[0]
    shell = 4 / 3 * np.pi * ((r + dr / 2) ** 3 - (r - dr / 2) ** 3)
    return n_b / volume * np.sum((g * shell)[r < r_to])


def test_rdf_of_a_simple_cubic_lattice_counts_its_shells():
    a = 3.0
    atoms = Atoms("Ar", cell=[a, a, a], pbc=True).repeat(3)  # 27 atoms; r_max beyond half the box
    r, g = rdf([atoms], ("Ar", "Ar"), r_max=5.5, nbins=110)
    n_prime = len(atoms) - 1
    assert coordination(r, g, n_prime, atoms.get_volume(), 3.5) == pytest.approx(6)
    assert coordination(r, g, n_prime, atoms.get_volume(), 4.5) == pytest.approx(6 + 12)
    assert coordination(r, g, n_prime, atoms.get_volume(), 5.4) == pytest.approx(6 + 12 + 8)
    assert np.all(g[(r > 0.5) & (r < 2.9)] == 0)


def test_rdf_of_an_ideal_gas_is_one():
    rng = np.random.default_rng(0)
    frames = [Atoms(numbers=rng.choice([1, 8], size=600), positions=rng.uniform(0, 15, (600, 3)),
                    cell=[15, 15, 15], pbc=True) for _ in range(4)]
    for pair in (("O", "O"), ("O", "H"), ("H", "H")):
        r, g = rdf(frames, pair, r_max=6.0, nbins=30)
        assert np.mean(g[r > 2]) == pytest.approx(1.0, abs=0.03), pair
        assert np.abs(g[r > 3] - 1).max() < 0.15


def test_rdf_matches_ase_on_real_water(water192):
    numbers = water192.numbers
    n_o = int(np.sum(numbers == 8))
    for pair in (("O", "O"), ("O", "H"), ("H", "H")):
        r, g = rdf([water192], pair, r_max=6.0, nbins=60)
        ref, rr = get_rdf(water192, 6.0, 60, elements=pair)
        n_b = n_o if pair[1] == "O" else len(numbers) - n_o
        factor = (n_b - 1) / n_b if pair[0] == pair[1] else 1.0  # ASE divides by N_B, not N_B - 1
        np.testing.assert_allclose(r, rr)
        np.testing.assert_allclose(g * factor, ref, rtol=1e-10, atol=1e-12)
    assert element_pairs(numbers) == [("O", "O"), ("O", "H"), ("H", "H")]
    r, g = rdf([water192], ("O", "H"), r_max=6.0, nbins=120)
    assert 0.9 < r[np.argmax(g)] < 1.1  # the O-H bond
    assert coordination(r, g, 128, water192.get_volume(), 1.3) == pytest.approx(2.0)  # two H per O


def test_drift_density_and_errors(water192):
    t = np.linspace(0, 2, 41)
    e = -1000.0 + 0.192 * t + 0.01 * np.sin(40 * t)  # 1 meV/atom/ps for 192 atoms, plus wiggles
    assert energy_drift(t, e, 192) == pytest.approx(1.0, rel=0.02)
    assert density(water192) == pytest.approx(18.01528 * 64 / 6.02214076e23 / (12.444661140441895e-8) ** 3, rel=1e-4)
    with pytest.raises(InputError, match="at least two times"):
        energy_drift(t[:1], e[:1], 192)
    with pytest.raises(InputError, match="no C-C pairs"):
        rdf([water192], ("C", "C"))
    with pytest.raises(InputError, match="frame 0: expected a periodic frame"):
        rdf([Atoms("H2", positions=[[0, 0, 0], [0, 0, 1]])], ("H", "H"))


def test_analyze_a_run_folder(water192, tmp_path):
    """A synthetic run: 5 real frames, energy drifting by 1 meV/atom/ps, no motion."""
    with MDRecorder(tmp_path, steps=40, timestep_fs=500.0, progress=False) as rec:  # frames 2.5 ps apart
        for k in range(5):
            rec.record(10 * k, water192, energy=-100.0 + 0.192 * 5.0 * k, forces=np.zeros((192, 3)))
    summary = analyze(tmp_path, tmp_path / "analysis", r_max=6.0, nbins=60, skip_ps=4.0)
    assert summary["frames"] == 4 and summary["time_ps"] == [5.0, 20.0]
    assert summary["energy_drift_mev_per_atom_per_ps"] == pytest.approx(1.0)
    assert summary["density_g_cm3"]["mean"] == pytest.approx(density(water192))
    assert summary["temperature_K"]["mean"] == 0.0
    assert 2.6 < summary["rdf_peak_A"]["O-O"] < 3.0 and 0.9 < summary["rdf_peak_A"]["O-H"] < 1.1
    table = np.loadtxt(tmp_path / "analysis" / "rdf.csv", delimiter=",", skiprows=1)
    assert table.shape == (60, 4)
    assert open(tmp_path / "analysis" / "rdf.csv").readline().strip() == "r_A,g_O-O,g_O-H,g_H-H"
    for png in ("rdf.png", "thermo.png"):
        assert (tmp_path / "analysis" / png).stat().st_size > 5000
    assert json.loads((tmp_path / "analysis" / "analysis.json").read_text()) == summary


def test_read_thermo_names_the_bad_line(tmp_path):
    path = tmp_path / "thermo.csv"
    header = "step,time_ps,potential_eV,kinetic_eV,total_eV,temperature_K,volume_A3"
    path.write_text(f"{header}\n0,0,1,1,2,3,4\n1,x,1,1,2,3,4\n")
    with pytest.raises(InputError, match=r"thermo\.csv:3: expected numbers"):
        read_thermo(path)


def test_cli_md_then_analyze(md_checkpoint, water192, tmp_path):
    structure = tmp_path / "water.xyz"
    ase.io.write(structure, water192, format="extxyz")
    out = tmp_path / "run"
    result = CliRunner().invoke(main, [
        "md", str(md_checkpoint), "--structure", str(structure), "--ensemble", "nvt", "--temperature", "300",
        "--timestep", "0.5", "--steps", "20", "--interval", "5", "--seed", "1", "--out", str(out), "--analyze",
        "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "20 steps of 0.5 fs (0.01 ps), 192 atoms, ase nvt" in result.output and "ns/day" in result.output
    assert "energy drift" in result.output and "(not conserved in this ensemble)" in result.output
    for name in ("trajectory.xyz", "thermo.csv", "run.json", "rdf.csv", "rdf.png", "thermo.png", "analysis.json"):
        assert (out / name).is_file(), name
    assert len(read_thermo(out / "thermo.csv")["step"]) == 5

    again = CliRunner().invoke(main, ["analyze", str(out), "--out", str(tmp_path / "again"), "--r-max", "5",
                                      "--bins", "50"])
    assert again.exit_code == 0, again.output
    assert "RDF peaks" in again.output and (tmp_path / "again" / "rdf.png").is_file()

    missing = CliRunner().invoke(main, ["analyze", str(tmp_path)])
    assert missing.exit_code == 1 and "no such thermo file" in missing.output
