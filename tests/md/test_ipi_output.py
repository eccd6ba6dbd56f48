"""Reading i-PI output (properties file, bead trajectories) and `pbcgnn analyze` of an i-PI folder,
on files written here in i-PI's layout (the real server's files are read in test_ipi.py)."""
from __future__ import annotations

import ase.io
import numpy as np
import pytest
from click.testing import CliRunner
from pbcgnn.cli import main

from pbcgnn.analysis import analyze
from pbcgnn.errors import InputError
from pbcgnn.md.ipi_output import read_ipi_properties
from pbcgnn.units import HARTREE

PROPERTIES = ("step", "time{picosecond}", "conserved{ase}", "temperature{kelvin}", "potential{electronvolt}",
              "kinetic_cv", "volume{angstrom3}")


def write_properties(path, names=PROPERTIES, rows=((0, 0.0, -10.0, 300.0, -12.0, 0.05, 1000.0),
                                                    (20, 0.01, -10.001, 310.0, -12.5, 0.06, 1000.0),
                                                    (40, 0.02, -10.002, 305.0, -12.2, 0.05, 1000.0))):
    header = [f"# column {k + 1:3d}     --> {name} : help" for k, name in enumerate(names)]
    path.write_text("\n".join(header + ["  ".join(f"{v:16.8e}" for v in row) for row in rows]) + "\n")


def write_beads(run, frame, beads=2, steps=(0, 20, 40)):
    for k in range(beads):
        frames = []
        for step in steps:
            atoms = frame.copy()
            atoms.calc = None
            atoms.positions += 0.01 * (k + 1)
            atoms.info = {"ipi_comment": f"Step:{step:12d}  Bead:{k:8d} positions{{ase}}  cell{{ase}}"}
            frames.append(atoms)
        ase.io.write(run / f"simulation.pos_{k}.extxyz", frames, format="extxyz")


def test_properties_become_thermo_columns(tmp_path):
    write_properties(tmp_path / "simulation.out")
    thermo = read_ipi_properties(tmp_path / "simulation.out")
    np.testing.assert_allclose(thermo["time_ps"], [0.0, 0.01, 0.02])
    np.testing.assert_allclose(thermo["total_eV"], [-10.0, -10.001, -10.002])  # conserved
    np.testing.assert_allclose(thermo["kinetic_eV"], np.array([0.05, 0.06, 0.05]) * HARTREE)  # atomic units
    np.testing.assert_allclose(thermo["volume_A3"], [1000.0] * 3)
    # i-PI's "electronvolt" is 0.036749326 Hartree (rounded): converted back through it, not taken as eV
    np.testing.assert_allclose(thermo["potential_eV"][0], -12.0 * 0.036749326 * HARTREE, rtol=1e-12)


def test_missing_property_and_unknown_unit_are_named(tmp_path):
    path = tmp_path / "simulation.out"
    write_properties(path, names=PROPERTIES[:-1], rows=((0, 0, 0, 0, 0, 0),))
    with pytest.raises(InputError, match=r"simulation.out: expected the i-PI properties volume in <properties>"):
        read_ipi_properties(path)
    write_properties(path, names=PROPERTIES[:-1] + ("volume{furlong3}",), rows=((0, 0, 0, 0, 0, 0, 0),))
    with pytest.raises(InputError, match=r"unknown unit volume\{furlong3\}; expected one of angstrom3"):
        read_ipi_properties(path)


def test_analyze_reads_every_bead(water192, tmp_path):
    write_properties(tmp_path / "simulation.out")
    write_beads(tmp_path, water192)
    summary = analyze(tmp_path, tmp_path / "an", plot=False)
    assert summary["ipi_beads"] == 2 and summary["frames"] == 6 and summary["natoms"] == 192
    assert summary["time_ps"] == [0.0, 0.02]
    assert summary["rdf_peak_A"]["O-H"] == pytest.approx(1.0, abs=0.1)
    assert analyze(tmp_path, tmp_path / "an", skip_ps=0.005, plot=False)["frames"] == 4  # step 20 = 0.01 ps
    result = CliRunner().invoke(main, ["analyze", str(tmp_path), "--out", str(tmp_path / "cli")])
    assert result.exit_code == 0 and "(i-PI, 2 bead trajectories, 192 atoms)" in result.output, result.output


def test_ipi_folder_without_trajectories_is_one_line(tmp_path):
    write_properties(tmp_path / "simulation.out")
    result = CliRunner().invoke(main, ["analyze", str(tmp_path)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "no i-PI bead trajectories PREFIX.pos_K.extxyz" in result.output
