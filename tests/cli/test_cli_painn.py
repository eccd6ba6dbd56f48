"""Every command works with a PaiNN checkpoint (tiny sizes): train, eval, md (both engines), ipi,
export, select (a committee), analyze, resume and fine-tuning."""
from __future__ import annotations

import json
import sys

import ase.io
import numpy as np
import pytest
from click.testing import CliRunner
from pbcgnn.cli import main

from pbcgnn.calculator import PbcgnnCalculator
from pbcgnn.checkpoint import load_checkpoint, read_checkpoint
from pbcgnn.config import FINETUNE_LR
from pbcgnn.model import PaiNN

TINY = ["--model", "painn", "--features", "8", "--interactions", "2", "--rbf", "8", "--cutoff", "4.0",
        "--batch-size", "4", "--seed", "3", "--device", "cpu", "--no-progress"]


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def painn_dir(tmp_path_factory, bundled_n2p2):
    out = tmp_path_factory.mktemp("painn_run")
    result = run("train", bundled_n2p2, "--epochs", "2", "--out", out, *TINY)
    assert result.exit_code == 0, result.output
    return out


def test_train_stores_the_architecture_and_eval_reloads_it(painn_dir, bundled_n2p2, tmp_path):
    ckpt = read_checkpoint(painn_dir / "best.pt")
    assert ckpt["config"]["model"]["architecture"] == "painn"
    model, _ = load_checkpoint(painn_dir / "best.pt")
    assert isinstance(model, PaiNN) and model.hidden_channels == 8
    result = run("eval", painn_dir / "best.pt", bundled_n2p2, "--out", tmp_path, "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "metrics.json").read_text())["total"]["n_frames"] == 16


@pytest.mark.usefixtures("one_thread")
def test_model_painn_starts_from_its_recipe_where_options_are_not_given(bundled_n2p2, tmp_path):
    """--model painn takes PaiNN's measured recipe (RECIPES) for what is not given; given options
    win, SchNet keeps the dataclass defaults, and a resumed run keeps its stored options."""
    small = ["--features", "8", "--interactions", "1", "--epochs", "1", "--device", "cpu", "--no-progress"]

    def stored(out):
        config = read_checkpoint(out / "last.pt")["config"]
        return config["model"]["num_rbf"], config["model"]["cutoff"], config["train"]["lr"]

    assert run("train", bundled_n2p2, "--model", "painn", "--out", tmp_path / "p", *small).exit_code == 0
    assert stored(tmp_path / "p") == (20, 5.0, 1e-3)
    assert run("train", bundled_n2p2, "--model", "painn", "--cutoff", "4.5", "--lr", "2e-3", "--out",
               tmp_path / "given", *small).exit_code == 0
    assert stored(tmp_path / "given") == (20, 4.5, 2e-3)
    assert run("train", bundled_n2p2, "--out", tmp_path / "s", "--filters", "8", *small).exit_code == 0
    assert stored(tmp_path / "s") == (32, 6.0, 3e-3)
    result = run("train", "--resume", "--epochs", "2", "--out", tmp_path / "given", "--no-progress")
    assert result.exit_code == 0, result.output
    assert stored(tmp_path / "given") == (20, 4.5, 2e-3) and read_checkpoint(tmp_path / "given" / "last.pt")["epoch"] == 2


@pytest.mark.usefixtures("one_thread")
def test_resume_and_fine_tune(painn_dir, bundled_n2p2, tmp_path):
    out = tmp_path / "run"
    assert run("train", bundled_n2p2, "--epochs", "1", "--out", out, *TINY).exit_code == 0
    result = run("train", "--resume", "--epochs", "2", "--out", out, "--no-progress")
    assert result.exit_code == 0, result.output
    assert read_checkpoint(out / "last.pt")["epoch"] == 2
    tuned = tmp_path / "tuned"
    result = run("train", bundled_n2p2, "--epochs", "1", "--init-from", painn_dir / "best.pt", "--freeze",
                 "embedding,interactions:0", "--out", tuned, "--device", "cpu", "--no-progress")
    assert result.exit_code == 0, result.output
    before, _ = load_checkpoint(painn_dir / "best.pt")
    after, _ = load_checkpoint(tuned / "best.pt")
    assert isinstance(after, PaiNN)
    frozen, trained = after.interactions[0].message.phi1.weight, after.interactions[1].message.phi1.weight
    assert (frozen == before.interactions[0].message.phi1.weight).all()
    assert not (trained == before.interactions[1].message.phi1.weight).all()
    assert read_checkpoint(tuned / "last.pt")["config"]["train"]["lr"] == FINETUNE_LR  # no --lr: the fine-tuning rate
    again = tmp_path / "tuned_lr"
    result = run("train", bundled_n2p2, "--epochs", "1", "--init-from", painn_dir / "best.pt", "--lr", "1e-3",
                 "--out", again, "--device", "cpu", "--no-progress")
    assert result.exit_code == 0, result.output
    assert read_checkpoint(again / "last.pt")["config"]["train"]["lr"] == 1e-3  # given: kept


@pytest.mark.parametrize("engine", ["ase", "openmm"])
def test_md_then_analyze(painn_dir, bundled_n2p2, tmp_path, engine):
    if engine == "openmm":
        pytest.importorskip("openmm")
    out = tmp_path / "md"
    result = run("md", painn_dir / "best.pt", "--structure", bundled_n2p2, "--engine", engine, "--steps", "4",
                 "--interval", "2", "--out", out, "--device", "cpu", "--no-progress")
    assert result.exit_code == 0, result.output
    assert "ns/day" in result.output
    result = run("analyze", out, "--out", tmp_path / "analysis", "--r-max", "3.5")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "analysis" / "analysis.json").is_file()


def test_export_equals_the_checkpoint(painn_dir, bundled_n2p2, tmp_path):
    from pbcgnn.errors import InputError
    from pbcgnn.export import import_metatomic

    try:
        import_metatomic()  # before metatomic_ase: imports metatensor despite torch_geometric's patch
    except InputError:
        pytest.skip("metatomic is not installed (pip install 'pbcgnn[metatomic]')")
    metatomic_ase = pytest.importorskip("metatomic_ase")

    result = run("export", painn_dir / "best.pt", "--out", tmp_path / "painn.pt", "--dtype", "float64")
    assert result.exit_code == 0, result.output
    atoms = _first_frame(bundled_n2p2)
    atoms.calc = metatomic_ase.MetatomicCalculator(str(tmp_path / "painn.pt"), check_consistency=True,
                                                    device="cpu")
    exported = atoms.get_potential_energy(), atoms.get_forces()
    atoms.calc = PbcgnnCalculator.from_checkpoint(painn_dir / "best.pt", dtype="float64", tabulate=False)
    assert exported[0] == pytest.approx(atoms.get_potential_energy(), rel=1e-10)
    np.testing.assert_allclose(exported[1], atoms.get_forces(), rtol=0, atol=1e-8)


def _first_frame(path):
    from pbcgnn.io import read_frames

    atoms = read_frames(path)[0]
    atoms.calc = None
    return atoms


def test_ipi_serves_a_painn_model(painn_dir, bundled_n2p2, run_ipi):
    atoms = _first_frame(bundled_n2p2)
    ipi = run_ipi(atoms, lambda address: [sys.executable, "-m", "pbcgnn.cli", "ipi", str(painn_dir / "best.pt"),
                                          "--structure", "init.xyz", "--unix", address, "--device", "cpu"], steps=2)
    assert ipi.server[0] == 0, ipi.server[1][-2000:]
    assert [rc for rc, _ in ipi.clients] == [0], ipi.clients
    expected = PbcgnnCalculator.from_checkpoint(painn_dir / "best.pt").get_potential_energy(atoms)
    assert abs(ipi.potential_at_step0("potential{ase}") - expected) / len(atoms) < 1e-5


@pytest.mark.usefixtures("one_thread")
def test_committee_select(bundled_n2p2, tmp_path):
    out = tmp_path / "committee"
    result = run("train", bundled_n2p2, "--epochs", "1", "--committee", "2", "--out", out, *TINY)
    assert result.exit_code == 0, result.output
    result = run("select", out / "best.pt", bundled_n2p2, "--n", "2", "--out", tmp_path / "next.xyz",
                 "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert len(ase.io.read(tmp_path / "next.xyz", index=":")) == 2


def test_old_checkpoints_without_an_architecture_load_as_schnet():
    """The shipped water model was written before checkpoints stored the architecture: it is a SchNet."""
    from pathlib import Path

    from pbcgnn.model import SchNet

    path = Path(__file__).resolve().parents[2] / "data" / "pretrained" / "cheng2019_revpbe0_d3_schnet.pt"
    assert "architecture" not in read_checkpoint(path)["config"]["model"]
    model, _ = load_checkpoint(path)
    assert type(model) is SchNet
