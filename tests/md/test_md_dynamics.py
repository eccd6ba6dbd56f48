"""MD physics on a real 192-atom water frame: NVE conserves energy, Langevin thermalises, outputs."""
from __future__ import annotations

import importlib.util
import json

import ase.io
import numpy as np
import pytest

from pbcgnn.analysis import energy_drift
from pbcgnn.calculator import PbcgnnCalculator
from pbcgnn.md import MDConfig, read_thermo, run_md
from pbcgnn.md.output import THERMO_COLUMNS, temperature
from pbcgnn.units import KB

needs_openmm = pytest.mark.skipif(importlib.util.find_spec("openmm") is None, reason="OpenMM not installed")
ENGINES = ["ase", pytest.param("openmm", marks=needs_openmm)]


def run(checkpoint, atoms, out, skin=1.0, **options):
    calc = PbcgnnCalculator.from_checkpoint(checkpoint, skin=skin)
    result = run_md(calc, atoms, MDConfig(**options), out, progress=False)
    return result, read_thermo(out / "thermo.csv")


@pytest.fixture(scope="module")
def nve(md_checkpoint, water192, tmp_path_factory):
    """75 fs of NVE from the same 300 K velocities: ASE at 0.25 and 0.5 fs (150 and 75 steps)."""
    base = tmp_path_factory.mktemp("nve")
    runs = {}
    for dt, steps in ((0.25, 200), (0.5, 100)):
        runs[dt] = run(md_checkpoint, water192, base / f"ase_{dt}", ensemble="nve", temperature_K=300.0,
                       timestep_fs=dt, steps=steps, interval=5, seed=4)
    return base, runs


def test_nve_conserves_total_energy(nve):
    _, runs = nve
    result, thermo = runs[0.25]
    de = thermo["total_eV"] - thermo["total_eV"][0]  # [T] eV
    kinetic_fluctuation = thermo["kinetic_eV"].std()
    assert kinetic_fluctuation > 0.1  # the run did move: potential and kinetic energy exchange ~0.2 eV
    assert np.abs(de).max() < 0.05 * kinetic_fluctuation
    drift = energy_drift(thermo["time_ps"], thermo["total_eV"], 192)
    assert abs(drift) < 1.0  # meV/atom/ps
    assert result.rebuilds < result.evaluations / 5  # the skin list was reused


def test_nve_energy_error_scales_with_the_time_step_squared(nve):
    """Velocity Verlet with exact forces: the energy fluctuation is O(dt^2). A non-conservative
    force or a first-order integrator would not shrink four times when dt halves."""
    _, runs = nve
    rms = {dt: np.sqrt(np.mean((t["total_eV"] - t["total_eV"][0]) ** 2)) for dt, (_, t) in runs.items()}
    assert 2.5 < rms[0.5] / rms[0.25] < 7.0


@needs_openmm
def test_openmm_nve_conserves_total_energy(md_checkpoint, water192, nve):
    base, runs = nve
    _, thermo = run(md_checkpoint, water192, base / "openmm", engine="openmm", ensemble="nve",
                    temperature_K=300.0, timestep_fs=0.25, steps=200, interval=5, seed=4)
    de = thermo["total_eV"] - thermo["total_eV"][0]
    assert np.abs(de).max() < 0.05 * thermo["kinetic_eV"].std()
    # same start as the ASE run (OpenMM's leapfrog then reads the velocities as those of t - dt/2,
    # and reports a kinetic energy estimated at t, so the trajectories part after a few steps)
    ase_thermo = runs[0.25][1]
    assert thermo["potential_eV"][0] == pytest.approx(ase_thermo["potential_eV"][0], rel=1e-12)
    assert thermo["temperature_K"][0] == pytest.approx(ase_thermo["temperature_K"][0], rel=0.02)


@pytest.mark.parametrize("engine", ENGINES)
def test_langevin_brings_the_temperature_to_the_target(md_checkpoint, water192, tmp_path, engine):
    """From 300 K velocities to a 150 K bath in 100 fs (friction 50/ps: 1/gamma = 20 fs); NVE from
    the same start stays near 300 K, so only a working thermostat passes."""
    _, thermo = run(md_checkpoint, water192, tmp_path, engine=engine, ensemble="nvt", temperature_K=150.0,
                    initial_temperature_K=300.0, friction_per_ps=50.0, timestep_fs=0.5, steps=200, interval=5,
                    seed=2)
    assert thermo["temperature_K"][0] == pytest.approx(300.0, rel=0.15)
    late = thermo["temperature_K"][thermo["time_ps"] >= 0.06]  # the last 40 fs
    assert late.mean() == pytest.approx(150.0, rel=0.15)


def test_skin_list_gives_the_trajectory_of_rebuilding_every_step(md_checkpoint, water192, tmp_path):
    a, ta = run(md_checkpoint, water192, tmp_path / "skin", skin=1.0, ensemble="nve", timestep_fs=0.5,
                steps=60, interval=20)
    b, tb = run(md_checkpoint, water192, tmp_path / "every", skin=0.0, ensemble="nve", timestep_fs=0.5,
                steps=60, interval=20)
    assert b.rebuilds == b.evaluations == 61 and a.rebuilds <= 3
    np.testing.assert_allclose(ta["total_eV"], tb["total_eV"], rtol=0, atol=1e-9)
    fa = ase.io.read(tmp_path / "skin" / "trajectory.xyz", ":")
    fb = ase.io.read(tmp_path / "every" / "trajectory.xyz", ":")
    np.testing.assert_allclose(a.final.positions, b.final.positions, rtol=0, atol=1e-9)
    np.testing.assert_allclose(fa[-1].get_forces(), fb[-1].get_forces(), rtol=0, atol=1e-7)


def test_outputs_are_consistent(nve):
    base, runs = nve
    result, thermo = runs[0.5]
    out = base / "ase_0.5"
    assert list(thermo) == list(THERMO_COLUMNS)
    np.testing.assert_allclose(thermo["time_ps"], thermo["step"] * 0.5e-3)
    np.testing.assert_allclose(thermo["total_eV"], thermo["potential_eV"] + thermo["kinetic_eV"])
    np.testing.assert_allclose(thermo["temperature_K"], [temperature(k, 192) for k in thermo["kinetic_eV"]])
    assert thermo["temperature_K"][0] == pytest.approx(2 * thermo["kinetic_eV"][0] / (573 * KB))
    np.testing.assert_allclose(thermo["volume_A3"], 12.444661140441895**3)
    assert thermo["density_g_cm3"][0] == pytest.approx(0.9934, abs=1e-4)  # 64 H2O in 12.4447^3 A^3
    frames = ase.io.read(out / "trajectory.xyz", ":")
    assert len(frames) == 21 and [f.info["step"] for f in frames] == list(range(0, 101, 5))
    np.testing.assert_allclose([f.get_potential_energy() for f in frames], thermo["potential_eV"], rtol=1e-12)
    np.testing.assert_allclose([f.get_kinetic_energy() for f in frames], thermo["kinetic_eV"], rtol=1e-6)
    assert frames[-1].get_forces().shape == (192, 3) and np.abs(frames[-1].get_forces()).max() > 0.1
    summary = json.loads((out / "run.json").read_text())
    assert summary["steps"] == 100 and summary["natoms"] == 192 and summary["ns_per_day"] > 0
    assert summary["config"]["timestep_fs"] == 0.5


def test_same_seed_same_run(md_checkpoint, water192, tmp_path):
    options = dict(ensemble="nvt", steps=10, interval=5, friction_per_ps=10.0)
    _, a = run(md_checkpoint, water192, tmp_path / "a", seed=11, **options)
    _, b = run(md_checkpoint, water192, tmp_path / "b", seed=11, **options)
    _, c = run(md_checkpoint, water192, tmp_path / "c", seed=12, **options)
    np.testing.assert_array_equal(a["total_eV"], b["total_eV"])
    assert not np.allclose(a["kinetic_eV"], c["kinetic_eV"])


@pytest.mark.parametrize("engine", ENGINES)
def test_npt_changes_the_volume(md_checkpoint, water192, tmp_path, engine):
    result, thermo = run(md_checkpoint, water192, tmp_path, engine=engine, ensemble="npt", temperature_K=300.0,
                         pressure_bar=1.0, timestep_fs=0.5, steps=40, interval=5, pdamp_fs=20.0,
                         barostat_interval=2)
    assert np.ptp(thermo["volume_A3"]) > 0.01
    frames = ase.io.read(tmp_path / "trajectory.xyz", ":")
    np.testing.assert_allclose([f.get_volume() for f in frames], thermo["volume_A3"], rtol=1e-9)
    assert result.rebuilds > 1  # every change of the cell rebuilds the list


def test_continue_from_a_trajectory_keeps_the_velocities(md_checkpoint, nve, tmp_path):
    base, runs = nve
    last = ase.io.read(base / "ase_0.5" / "trajectory.xyz", index=-1)
    _, thermo = run(md_checkpoint, last, tmp_path, ensemble="nve", velocities="file", timestep_fs=0.5, steps=5,
                    interval=5)
    assert thermo["kinetic_eV"][0] == pytest.approx(runs[0.5][1]["kinetic_eV"][-1], rel=1e-6)


@needs_openmm
def test_ring_polymer_md_has_zero_point_kinetic_energy(md_checkpoint, water192, tmp_path):
    """4-bead thermostatted RPMD: the bead-temperature estimator sits at the bath temperature, and
    the centroid-virial kinetic energy exceeds the classical 3N kT/2 (zero-point motion of the
    O-H stretches), which a classical run (all beads on top of each other) would not show."""
    result, thermo = run(md_checkpoint, water192, tmp_path, engine="openmm", ensemble="nvt", beads=4,
                         temperature_K=300.0, friction_per_ps=10.0, timestep_fs=0.25, steps=80, interval=10)
    frames = ase.io.read(tmp_path / "trajectory.xyz", ":")
    classical = 1.5 * 192 * KB * 300.0
    quantum = np.array([f.info["quantum_kinetic_eV"] for f in frames])
    assert quantum[0] == pytest.approx(classical)  # beads start on top of each other
    assert quantum[4:].mean() > 1.3 * classical
    assert thermo["temperature_K"][4:].mean() == pytest.approx(300.0, rel=0.25)
    assert frames[0].info["beads"] == 4 and result.evaluations >= 4 * 80
    assert result.rebuilds < 10  # one list serves all beads
