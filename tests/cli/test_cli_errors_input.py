"""Bad input through the CLI (in-process CliRunner): exit 1, one `Error:` line naming the file and
line or frame, no traceback. One test or more per class of bad input; physics-free."""
from __future__ import annotations

import gzip
import json
import re

import pytest
from click.testing import CliRunner
from pbcgnn.cli import main

from pbcgnn.checkpoint import build_model, save_checkpoint
from pbcgnn.config import Config, DataConfig, ModelConfig

#: A model too small to be good at anything: these tests are about what it refuses.
TINY = ModelConfig(hidden_channels=8, num_filters=8, num_interactions=1, num_rbf=4, cutoff=3.0)


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_one_error(result, starts: str, words: str) -> None:
    """Exit 1, a single line ``Error: <starts>...<words>...``, no traceback."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith(f"Error: {starts}"), lines[0]
    assert words in lines[0], lines[0]


@pytest.fixture(scope="module")
def water_checkpoint(tmp_path_factory, files):
    """An untrained H/O checkpoint whose run read REF_ columns (validation: ref_labels.xyz)."""
    config = Config(data=DataConfig(paths=(str(files / "ref_labels.xyz"),), val_paths=(str(files / "ref_labels.xyz"),),
                                    energy_key="REF_energy", forces_key="REF_forces"), model=TINY)
    path = tmp_path_factory.mktemp("ckpt") / "water.pt"
    save_checkpoint(path, {"config": config.to_dict(), "model": build_model(config).state_dict(),
                           "elements": [1, 8], "metrics": {}, "epoch": 0})
    return path


# -- silent wrong answers: eval refuses what the model cannot know --------------------------------
def test_eval_refuses_an_unknown_element(water_checkpoint, files, tmp_path):
    path = tmp_path / "carbon.xyz"
    path.write_text((files / "valid.xyz").read_text().replace("\nO ", "\nC "))
    result = invoke("eval", water_checkpoint, path, "--out", tmp_path / "e", "--device", "cpu")
    assert_one_error(result, f"{path}: frame 0: ", "element(s) C not in the model's training set; expected only H, O")
    assert not (tmp_path / "e" / "metrics.json").exists()


def test_eval_refuses_a_frame_without_a_cell(water_checkpoint, files, tmp_path):
    path = files / "nonperiodic.xyz"
    result = invoke("eval", water_checkpoint, path, "--out", tmp_path, "--device", "cpu")
    assert_one_error(result, f"{path}: frame 0: ", "trained on periodic frames, expected a cell periodic in x, y and z")


def test_eval_without_data_reads_the_runs_label_columns(water_checkpoint, tmp_path):
    result = invoke("eval", water_checkpoint, "--out", tmp_path, "--device", "cpu", "--batch-size", "1")
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "metrics.json").read_text())["validation"]
    assert metrics["n_frames"] == 1 and metrics["force_rmse_mev_per_A"] == metrics["force_rmse_mev_per_A"]  # not NaN


# -- label columns: named, or warned about -------------------------------------------------------
def test_train_refuses_a_named_column_that_no_frame_has(files, tmp_path):
    path = files / "valid.xyz"
    result = invoke("train", path, "--forces-key", "REF_forces", "--out", tmp_path, "--device", "cpu",
                    "--val", path, "--epochs", "1", "--no-progress")
    assert_one_error(result, f"{path}: ", "expected a column 'REF_forces' (--forces-key) in some frame, found none")


def test_train_stores_the_label_keys_in_its_config(files, tmp_path, monkeypatch):
    from pbcgnn.train import run as run_module
    from pbcgnn.train.state import FitResult

    seen = []
    monkeypatch.setattr(run_module, "fit", lambda config, out, **kw: seen.append(config) or FitResult(
        tmp_path / "best.pt", tmp_path / "last.pt", {"energy_rmse_mev_per_atom": 1.0, "force_rmse_mev_per_A": 1.0}))
    result = invoke("train", files / "ref_labels.xyz", "--out", tmp_path, "--energy-key", "REF_energy",
                    "--forces-key", "REF_forces", "--stress-key", "REF_stress")
    assert result.exit_code == 0, result.output
    data = seen[0].data
    assert (data.energy_key, data.forces_key, data.stress_key) == ("REF_energy", "REF_forces", "REF_stress")


def test_inspect_names_unread_label_columns(files, caplog):
    result = invoke("inspect", files / "ref_labels.xyz")
    assert result.exit_code == 0, result.output
    assert "(0 with forces)" in result.output
    assert any("REF_forces" in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)
    named = invoke("inspect", files / "ref_labels.xyz", "--forces-key", "REF_forces")
    assert "(1 with forces)" in named.output


def test_label_keys_with_n2p2_data(files):
    path = files / "valid.data"
    assert_one_error(invoke("inspect", path, "--energy-key", "E"), f"{path}: ", "expected no label keys for n2p2 data")


# -- compressed files go through pbcgnn's readers, units converted once ----------------------------
def _volume(output: str) -> str:
    return re.search(r"cell volume\s+(.*)", output).group(1)


def test_compressed_n2p2_converts_units_once(files, tmp_path):
    path = tmp_path / "input.data.gz"
    path.write_bytes(gzip.compress((files / "valid.data").read_bytes()))
    plain = invoke("inspect", files / "valid.data", "--length-unit", "bohr")
    packed = invoke("inspect", path, "--length-unit", "bohr")
    assert packed.exit_code == 0, packed.output
    assert _volume(packed.output) == _volume(plain.output) == "148.18 to 148.18 A^3"


def test_corrupt_compressed_file(files):
    path = files / "not_gzip.data.gz"
    assert_one_error(invoke("inspect", path), f"{path}: ", "expected a .gz compressed file")


# -- both readers agree on numbers, symbols, columns and a BOM ----------------------------------------
#: file -> (location after the path, words of the message)
DISAGREEING = {
    "underscore_number.xyz": (":8: frame 1: ", "found '1_000.0'"),
    "nonascii_digit.xyz": (":9: frame 1: ", "expected a number for pos (column 2)"),
    "uppercase_symbol.xyz": (":9: frame 1: ", "expected a chemical element symbol in column 1, found 'HO'"),
    "extra_column.xyz": (":10: frame 1: ", "expected 7 columns"),
    "underscore_energy.xyz": (":6: frame 1: ", "expected a number for energy, found '-2_078.5'"),
}


@pytest.mark.parametrize("name", sorted(DISAGREEING))
def test_inspect_rejects_what_n2p2_rejects(files, name):
    path, (where, words) = files / name, DISAGREEING[name]
    assert_one_error(invoke("inspect", path), f"{path}{where}", words)


@pytest.mark.parametrize("name", ["bom.data", "bom.xyz"])
def test_bom_at_the_start_is_accepted(files, name):
    result = invoke("inspect", files / name)
    assert result.exit_code == 0, result.output


# -- weights --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,found", [("bad_weight.xyz", "'heavy'"), ("nan_weight.xyz", "nan"),
                                        ("negative_weight.xyz", "-1.0")])
def test_bad_weight(files, name, found):
    path = files / name
    assert_one_error(invoke("inspect", path), f"{path}: frame 1: ", f"expected a finite non-negative weight, found {found}")


# -- inspect checks what training checks ------------------------------------------------------------
def test_inspect_refuses_overlapping_atoms(files):
    path = files / "overlapping_atoms.xyz"
    assert_one_error(invoke("inspect", path), f"{path}: frame 0: ", "atoms 0 and 2 overlap: distance 0.05 A")


def test_inspect_requires_energies_unless_structures(files):
    path = files / "missing_energy.xyz"
    assert_one_error(invoke("inspect", path), f"{path}: frame 1: ", "expected an energy")
    assert invoke("inspect", path, "--structures").exit_code == 0


# -- a NaN in the lattice is the cell's, not an atom's -------------------------------------------------
@pytest.mark.parametrize("name,where,words", [("nan_lattice.data", ":4: ", "expected a finite number for lattice y"),
                                              ("nan_lattice.xyz", ": frame 0: ", "found nan in lattice vector 0")])
def test_nan_lattice(files, name, where, words):
    path = files / name
    result = invoke("inspect", path)
    assert_one_error(result, f"{path}{where}", words)
    assert "atom" not in result.output
