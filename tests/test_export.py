"""`pbcgnn export`: the metatomic model is PbcgnnCalculator's function in metatomic's ASE calculator
and in i-PI's metatomic driver (multi-image 48-atom box, 192-atom Cheng frame, triclinic cell,
committee mean and ensemble); bad input is one Error line and never damages an existing file."""
from __future__ import annotations

import dataclasses
import json
import sys
import warnings
from pathlib import Path

import ase.io
import numpy as np
import pytest
import torch
from ase import Atoms
from click.testing import CliRunner
from pbcgnn.cli import main

from pbcgnn.calculator import PbcgnnCalculator
from pbcgnn.checkpoint import (
    build_model,
    combine_checkpoints,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from pbcgnn.config import CommitteeConfig, Config
from pbcgnn.errors import InputError
from pbcgnn.graph import atoms_to_graph
from pbcgnn.io import read_frames

pytest.importorskip("metatomic")  # the optional extra: pip install 'pbcgnn[metatomic]'
from pbcgnn.export import export_metatomic, import_metatomic  # noqa: E402

with warnings.catch_warnings():  # metatensor compiles TorchScript on import: torch.jit.script warnings
    warnings.filterwarnings("ignore", "`torch.jit.", DeprecationWarning)
    mta = import_metatomic()  # before metatomic_ase: imports metatensor despite torch_geometric's patch
    metatomic_ase = pytest.importorskip("metatomic_ase")
from metatensor.torch import Labels  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PRETRAINED = REPO / "data" / "pretrained" / "cheng2019_revpbe0_d3_schnet.pt"
RTOL = 1e-8

#: metatomic models are TorchScript, which torch 2.13 deprecates (torch.jit.script/save/load warn).
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.:DeprecationWarning")


@pytest.fixture(scope="module")
def box48(bundled_n2p2) -> Atoms:
    """16 H2O in a 7.82 A cube: with the 6 A cutoff, pairs have several periodic images."""
    atoms = read_frames(bundled_n2p2)[0]
    assert len(atoms) == 48 and atoms.cell.lengths()[0] < 2 * 6.0
    atoms.calc = None
    return atoms


@pytest.fixture(scope="module")
def model64(tmp_path_factory) -> Path:
    return export_metatomic(PRETRAINED, tmp_path_factory.mktemp("export") / "model64.pt", dtype="float64")


@pytest.fixture(scope="module")
def committee(tmp_path_factory) -> Path:
    """A committee checkpoint of the pretrained model and a perturbed copy of it."""
    ckpt = read_checkpoint(PRETRAINED)
    config = Config.from_dict(ckpt["config"])
    other = build_model(config)
    other.load_state_dict(ckpt["model"])
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=generator, dtype=p.dtype))
    config = dataclasses.replace(config, committee=CommitteeConfig(size=2))
    members = [ckpt, {**ckpt, "model": other.state_dict()}]
    path = tmp_path_factory.mktemp("committee") / "best.pt"
    save_checkpoint(path, combine_checkpoints(config, members, [Path("member_0"), Path("member_1")]))
    return path


def _results(atoms: Atoms, calc) -> dict[str, np.ndarray]:
    atoms = atoms.copy()
    atoms.calc = calc
    return {"energy": np.array(atoms.get_potential_energy()), "forces": atoms.get_forces(),
            "stress": atoms.get_stress()}


def _assert_same(got: dict, expected: dict, rtol: float = RTOL) -> None:
    for key, ref in expected.items():
        error = float(np.abs(got[key] - ref).max()) / float(np.abs(ref).max())
        assert error <= rtol, f"{key}: relative error {error:.2e}"


def _metatomic_calc(model: Path):
    return metatomic_ase.MetatomicCalculator(str(model), check_consistency=True, device="cpu")


def _sheared(atoms: Atoms) -> Atoms:
    """The frame in a triclinic cell: cell and positions sheared together (same fractional coordinates)."""
    atoms = atoms.copy()
    shear = np.array([[1.0, 0.0, 0.0], [0.25, 1.0, 0.0], [-0.15, 0.1, 1.0]])
    atoms.set_cell(shear @ atoms.cell.array, scale_atoms=True)
    return atoms


@pytest.mark.parametrize("frame", ["box48", "triclinic", "cheng192"])
def test_metatomic_ase_equals_the_pbcgnn_calculator(frame, box48, model64, request):
    """Energy, forces and stress of the float64 export in metatomic_ase equal PbcgnnCalculator's (float64)."""
    if frame == "cheng192":
        shared = request.getfixturevalue("shared_data")
        atoms = ase.io.read(shared / "cheng2019_h2o_revpbe0_d3" / "cheng2019_h2o_revpbe0_d3.xyz", index=0)
        atoms.calc = None
        assert len(atoms) == 192
    else:
        atoms = box48 if frame == "box48" else _sheared(box48)
    expected = _results(atoms, PbcgnnCalculator.from_checkpoint(PRETRAINED, dtype="float64", tabulate=False))
    _assert_same(_results(atoms, _metatomic_calc(model64)), expected)
    assert float(np.abs(expected["stress"]).max()) > 0


def test_per_atom_energies_and_selected_atoms(box48, model64):
    """Per-atom energies are the model's; with selected atoms (LAMMPS domains) only theirs are summed."""
    model, _ = load_checkpoint(PRETRAINED, dtype="float64")
    graph = atoms_to_graph(box48, model.cutoff)
    expected = model.atomic_energies(graph.z, graph.pos, graph.edge_index, graph.cell_offsets, graph.cell).detach()
    calc = _metatomic_calc(model64)
    per_atom = calc.run_model(box48, {"energy": mta.ModelOutput(unit="eV", sample_kind="atom")})["energy"].block()
    assert per_atom.samples.names == ["system", "atom"]
    assert torch.allclose(per_atom.values[:, 0].detach(), expected, rtol=0, atol=1e-10 * float(expected.abs().max()))
    chosen = torch.arange(0, len(box48), 3)
    selected = Labels(["system", "atom"], torch.stack([torch.zeros_like(chosen), chosen], 1).to(torch.int32))
    total = calc.run_model(box48, {"energy": mta.ModelOutput(unit="eV", sample_kind="system")}, selected)
    assert float(total["energy"].block().values) == pytest.approx(float(expected[chosen].sum()), rel=1e-12)


@pytest.fixture(scope="module")
def committee_model(committee) -> Path:
    return export_metatomic(committee, committee.parent / "committee.pt", dtype="float64")


def test_committee_exports_its_mean_and_its_members(box48, committee, committee_model):
    """A committee: mean energy, forces and stress as PbcgnnCalculator's; energy_ensemble the members'."""
    reference = PbcgnnCalculator.from_checkpoint(committee, dtype="float64", tabulate=False)
    expected = _results(box48, reference)
    calc = _metatomic_calc(committee_model)
    _assert_same(_results(box48, calc), expected)
    members = reference.results["energies"]  # [2] eV
    assert abs(members[0] - members[1]) > 1e-3  # the members differ
    out = calc.run_model(box48, {"energy_ensemble": mta.ModelOutput(unit="eV", sample_kind="system")})
    ensemble = out["energy_ensemble"].block().values.detach().numpy()[0]
    np.testing.assert_allclose(ensemble, members, rtol=1e-12)


def test_committee_exports_its_calibrated_uncertainty_and_ensemble(box48, committee, tmp_path):
    """energy_uncertainty is n a (s / n)^b of the members' std s; the ensemble keeps its mean and
    has that std, per system and summed per atom; without a calibration it is the raw std."""
    from pbcgnn.model.calibration import Calibration, PowerLaw

    ckpt = read_checkpoint(committee)
    calibrated = tmp_path / "calibrated.pt"
    save_checkpoint(calibrated, {**ckpt, "calibration": Calibration(energy=PowerLaw(3.0, 0.8)).to_dict()})
    members = PbcgnnCalculator.from_checkpoint(committee, dtype="float64", tabulate=False)
    box = box48.copy()
    box.calc = members
    box.get_potential_energy()
    raw = float(np.std(members.results["energies"], ddof=1))
    expected = 48 * 3.0 * (raw / 48) ** 0.8
    for path, sigma in ((calibrated, expected), (committee, raw)):
        calc = _metatomic_calc(export_metatomic(path, tmp_path / f"{path.stem}_mta.pt", dtype="float64"))
        out = calc.run_model(box48, {"energy_uncertainty": mta.ModelOutput(unit="eV", sample_kind="system"),
                                     "energy_ensemble": mta.ModelOutput(unit="eV", sample_kind="atom")})
        assert float(out["energy_uncertainty"].block().values) == pytest.approx(sigma, rel=1e-10)
        ensemble = out["energy_ensemble"].block().values.detach().numpy().sum(0)  # [M] summed over atoms
        assert np.std(ensemble, ddof=1) == pytest.approx(sigma, rel=1e-10)
        assert ensemble.mean() == pytest.approx(np.mean(members.results["energies"]), rel=1e-12)


def test_cli_export_float32_by_default_with_capabilities_and_metadata(box48, tmp_path):
    """`pbcgnn export` writes a float32 model; engines see its elements, units, range and references."""
    out = tmp_path / "model.pt"
    result = CliRunner().invoke(main, ["export", str(PRETRAINED), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "model.pt" in result.output
    model = mta.load_atomistic_model(str(out))
    caps = model.capabilities()
    assert (caps.dtype, caps.length_unit, caps.atomic_types) == ("float32", "angstrom", [1, 8])
    config = read_checkpoint(PRETRAINED)["config"]["model"]
    # a message passes one cutoff per interaction
    assert caps.interaction_range == pytest.approx(config["num_interactions"] * config["cutoff"])
    assert config["num_interactions"] > 1
    assert "energy" in caps.outputs and "energy_ensemble" not in caps.outputs and "energy_uncertainty" not in caps.outputs
    assert caps.outputs["energy"].unit == "eV" and set(caps.supported_devices) == {"cpu", "cuda"}
    (neighbors,) = model.requested_neighbor_lists()
    assert neighbors.cutoff == pytest.approx(6.0) and neighbors.full_list
    meta = model.metadata()
    assert "SchNet" in meta.name and "E0" in meta.description
    assert "10.1063/1.5019779" in meta.references["architecture"][0]
    expected = _results(box48, PbcgnnCalculator.from_checkpoint(PRETRAINED, dtype="float64", tabulate=False))
    _assert_same(_results(box48, _metatomic_calc(out)), expected, rtol=1e-4)  # float32 rounding


def test_ipi_metatomic_driver_reads_the_ensemble(box48, committee, committee_model, tmp_path):
    """i-PI's metatomic driver with energy_ensemble=True: the committee mean as the potential and
    the members as ``committee_pot`` extras (what <ffcommittee parse_json='true'> reads)."""
    pytest.importorskip("ipi")
    from ipi.pes.metatomic import MetatomicDriver
    from ipi.utils.units import unit_to_internal, unit_to_user

    ase.io.write(tmp_path / "template.xyz", box48, format="extxyz")
    driver = MetatomicDriver(template=str(tmp_path / "template.xyz"), model=str(committee_model), device="cpu",
                             energy_ensemble=True)
    cell = unit_to_internal("length", "angstrom", box48.cell.array.T.copy())  # i-PI: Bohr, vectors as columns
    energy, _, _, extras = driver.compute(cell, unit_to_internal("length", "angstrom", box48.positions.copy()))
    reference = PbcgnnCalculator.from_checkpoint(committee, dtype="float64", tabulate=False)
    expected = reference.get_potential_energy(box48.copy())
    assert unit_to_user("energy", "electronvolt", energy) == pytest.approx(expected, rel=1e-12)
    members = unit_to_user("energy", "electronvolt", np.array(json.loads(extras)["committee_pot"]))
    np.testing.assert_allclose(members, reference.results["energies"], rtol=1e-12)


def test_ipi_metatomic_driver_runs_the_export(box48, model64, run_ipi):
    """i-PI with its own metatomic client (`i-pi-driver-py -m metatomic`) runs 3 NVE steps of the
    exported model; the step-0 potential (eV, full precision) is PbcgnnCalculator's energy."""
    from ipi.utils.units import unit_to_internal, unit_to_user

    driver = Path(sys.executable).parent / "i-pi-driver-py"
    if not driver.is_file():
        pytest.skip(f"ipi is installed but {driver} is not")
    ipi = run_ipi(box48, lambda address: [sys.executable, str(driver), "-u", "-a", address, "-m", "metatomic",
                                          "-o", f"template=init.xyz,model={model64},device=cpu"],
                  properties="step, time{picosecond}, potential{electronvolt}")
    assert ipi.server[0] == 0, ipi.server[1][-2000:]
    assert ipi.clients[0][0] == 0, ipi.clients[0][1][-2000:]
    # What the driver sees: the positions as written (8 decimals), read by i-PI in ASE's Angstrom and
    # passed to the driver in i-PI's own (8 digits): all lengths scaled by 1 + 1.4e-8 (1e-10 of the energy).
    start = ase.io.read(ipi.folder / "init.xyz")
    start.set_cell(start.cell * unit_to_user("length", "angstrom", unit_to_internal("length", "ase", 1.0)),
                   scale_atoms=True)
    expected = PbcgnnCalculator.from_checkpoint(PRETRAINED, dtype="float64", tabulate=False).get_potential_energy(start)
    assert ipi.potential_at_step0("potential{electronvolt}") == pytest.approx(expected, rel=1e-12)


# ------------------------------------------------------------------ errors
def _run(*args: str):
    return CliRunner().invoke(main, ["export", *args])


def _one_error_line(result, *fragments: str) -> None:
    assert result.exit_code != 0
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines[-1].startswith("Error:") and "Traceback" not in result.output, result.output
    for fragment in fragments:
        assert fragment in lines[-1], lines[-1]


def test_not_a_checkpoint(tmp_path):
    bad = tmp_path / "notes.pt"
    bad.write_text("not a checkpoint\n")
    result = _run(str(bad), "--out", str(tmp_path / "model.pt"))
    _one_error_line(result, str(bad), "expected a pbcgnn checkpoint")
    assert not (tmp_path / "model.pt").exists()


def test_metatomic_not_installed(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "metatomic.torch", None)  # `import metatomic.torch` raises ImportError
    result = _run(str(PRETRAINED), "--out", str(tmp_path / "model.pt"))
    _one_error_line(result, "export needs metatomic", "pip install 'pbcgnn[metatomic]'")


def test_unwritable_out(tmp_path):
    (tmp_path / "afile").write_text("x")
    result = _run(str(PRETRAINED), "--out", str(tmp_path / "afile" / "model.pt"))
    _one_error_line(result, str(tmp_path / "afile"))


def test_failed_write_keeps_the_existing_model(tmp_path, monkeypatch):
    """The writer dies half-way (disk full): the previous --out is untouched, no temporary file is left."""
    out = tmp_path / "model.pt"
    out.write_bytes(b"previous model")

    def half_written(module, path, **kwargs) -> None:
        Path(path).write_bytes(b"PK\x03\x04 partial")
        raise RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")

    monkeypatch.setattr(torch.jit, "save", half_written)
    result = _run(str(PRETRAINED), "--out", str(out))
    _one_error_line(result, str(out), "file write failed")
    assert out.read_bytes() == b"previous model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]


@pytest.mark.parametrize("args, fragment", [(["--dtype", "float16"], "--dtype"), (["--out", "."], "--out")])
def test_bad_options(args, fragment):
    _one_error_line(_run(str(PRETRAINED), *args), fragment)


def test_library_refuses_an_unknown_dtype(tmp_path):
    with pytest.raises(InputError, match="expected a dtype in float32, float64, found 'float16'"):
        export_metatomic(PRETRAINED, tmp_path / "model.pt", dtype="float16")


def test_a_checkpoint_without_elements_is_refused(tmp_path):
    """The elements become the model's atomic types: a checkpoint that lists none cannot be exported."""
    ckpt = read_checkpoint(PRETRAINED)
    del ckpt["elements"]
    path = tmp_path / "no_elements.pt"
    save_checkpoint(path, ckpt)
    _one_error_line(_run(str(path), "--out", str(tmp_path / "model.pt")), str(path), "training elements")


def test_the_model_refuses_an_empty_list_of_systems():
    from pbcgnn.metatomic_model import EnergyModel

    model, _ = load_checkpoint(PRETRAINED)
    with pytest.raises(ValueError, match="expected at least one system"):
        EnergyModel([model])([], {"energy": mta.ModelOutput(unit="eV")}, None)
