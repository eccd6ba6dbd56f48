"""The CLI contract, in-process through click's CliRunner."""
from __future__ import annotations

import json
import os

import ase.io
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from pbcgnn.cli import main

from pbcgnn.checkpoint import load_checkpoint, read_checkpoint
from pbcgnn.dataset import FrameDataset
from pbcgnn.evaluation import predict

TINY = ["--features", "16", "--filters", "16", "--interactions", "2", "--rbf", "12", "--cutoff", "4.5",
        "--batch-size", "4", "--seed", "3", "--device", "cpu", "--no-progress"]
KEYS = {"energy_rmse_mev_per_atom", "energy_mae_mev_per_atom", "force_rmse_mev_per_A", "force_mae_mev_per_A",
        "n_frames", "n_atoms"}


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return result


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory, bundled_n2p2):
    out = tmp_path_factory.mktemp("cli_run")
    result = run("train", bundled_n2p2, "--epochs", "3", "--out", out, *TINY)
    assert result.exit_code == 0, result.output
    assert "best validation" in result.output
    return out


def test_train_writes_checkpoints_and_tensorboard(trained_dir):
    assert (trained_dir / "best.pt").is_file() and (trained_dir / "last.pt").is_file()
    assert list(trained_dir.glob("events.out.tfevents.*"))
    ckpt = read_checkpoint(trained_dir / "last.pt")
    assert ckpt["config"]["model"]["cutoff"] == 4.5 and ckpt["epoch"] == 3


def test_eval_outputs_and_reload_gives_identical_predictions(trained_dir, bundled_n2p2, tmp_path):
    result = run("eval", trained_dir / "best.pt", bundled_n2p2, "--out", tmp_path / "e1", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "meV/atom" in result.output and "total" in result.output
    metrics = json.loads((tmp_path / "e1" / "metrics.json").read_text())
    assert set(metrics) == {str(bundled_n2p2), "total"}
    assert KEYS <= set(metrics["total"]) and metrics["total"]["n_frames"] == 16
    assert (tmp_path / "e1" / "parity.png").stat().st_size > 1000
    frames = ase.io.read(tmp_path / "e1" / "predictions.xyz", index=":")
    assert len(frames) == 16 and "ref_energy" in frames[0].info
    # reload the checkpoint in Python: identical predictions
    model, _ = load_checkpoint(trained_dir / "best.pt")
    pred = predict(model, FrameDataset(bundled_n2p2, model.cutoff))
    np.testing.assert_allclose([a.get_potential_energy() for a in frames], pred.energy, rtol=1e-12)
    np.testing.assert_allclose(np.concatenate([a.get_forces() for a in frames]), pred.forces, rtol=1e-6, atol=1e-6)
    # and a second eval gives the same numbers (float32 scatter sums are not bit-reproducible on CPU)
    run("eval", trained_dir / "best.pt", bundled_n2p2, "--out", tmp_path / "e2", "--device", "cpu")
    again = json.loads((tmp_path / "e2" / "metrics.json").read_text())
    for name in metrics:
        assert again[name] == pytest.approx(metrics[name], rel=1e-7)


def test_eval_without_data_uses_the_validation_split(trained_dir, tmp_path):
    result = run("eval", trained_dir / "best.pt", "--out", tmp_path, "--device", "cpu")
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["validation"]["n_frames"] == 2  # 10 % of 16 frames
    assert metrics["validation"]["force_rmse_mev_per_A"] == pytest.approx(
        read_checkpoint(trained_dir / "best.pt")["metrics"]["force_rmse_mev_per_A"], rel=1e-9)


@pytest.mark.usefixtures("one_thread")
def test_resume_matches_uninterrupted(tmp_path, bundled_n2p2):
    assert run("train", bundled_n2p2, "--epochs", "3", "--out", tmp_path / "a", *TINY).exit_code == 0
    assert run("train", bundled_n2p2, "--epochs", "1", "--out", tmp_path / "b", *TINY).exit_code == 0
    respelled = os.path.relpath(bundled_n2p2)  # the same file: a resumed run compares files, not spellings
    assert run("train", respelled, "--resume", "--epochs", "3", "--out", tmp_path / "b", *TINY).exit_code == 0
    paused = run("train", bundled_n2p2, "--epochs", "3", "--stop-after", "1e-6", "--out", tmp_path / "c", *TINY)
    assert paused.exit_code == 0 and "paused (--stop-after) after 1 epochs" in paused.output, paused.output
    assert run("train", "--resume", "--out", tmp_path / "c", "--no-progress").exit_code == 0  # keeps --epochs 3
    a = read_checkpoint(tmp_path / "a" / "last.pt")
    for other in ("b", "c"):
        b = read_checkpoint(tmp_path / other / "last.pt")
        assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"]), other


def test_resume_refuses_a_changed_option(tmp_path, bundled_n2p2):
    """A resumed run keeps its options: one given differently is an error, not silently ignored."""
    assert run("train", bundled_n2p2, "--epochs", "1", "--out", tmp_path, *TINY).exit_code == 0
    before = (tmp_path / "last.pt").read_bytes()
    result = run("train", "--resume", "--epochs", "2", "--lr", "0.1", "--out", tmp_path, *TINY)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1 and "last.pt" in result.output
    assert "train.lr = 0.1 given" in result.output, result.output
    assert (tmp_path / "last.pt").read_bytes() == before


@pytest.mark.usefixtures("one_thread")
def test_resume_in_another_folder_with_the_data_moved(tmp_path, bundled_n2p2):
    """A run carried to another machine: its folder copied, its data elsewhere (the files it
    started with gone). Same bytes resume it where they are now; other bytes are refused."""
    import shutil

    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir(), second.mkdir()
    shutil.copy(bundled_n2p2, first / "input.data")
    assert run("train", bundled_n2p2, "--epochs", "3", "--out", tmp_path / "whole", *TINY).exit_code == 0
    assert run("train", first / "input.data", "--epochs", "1", "--out", first / "run", *TINY).exit_code == 0
    shutil.copytree(first / "run", second / "run")
    shutil.move(first / "input.data", second / "moved.data")
    shutil.copy(second / "moved.data", second / "changed.data")
    with open(second / "changed.data", "a") as f:
        f.write("comment changed\n")
    refused = run("train", second / "changed.data", "--resume", "--epochs", "3", "--out", second / "run", *TINY)
    assert refused.exit_code == 1 and "data.paths" in refused.output, refused.output
    resumed = run("train", second / "moved.data", "--resume", "--epochs", "3", "--out", second / "run", *TINY)
    assert resumed.exit_code == 0, resumed.output
    a, b = read_checkpoint(tmp_path / "whole" / "last.pt"), read_checkpoint(second / "run" / "last.pt")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert list(b["config"]["data"]["paths"]) == [os.path.realpath(second / "moved.data")]


@pytest.mark.parametrize("command", ["inspect", "train"])
@pytest.mark.parametrize("name,line", [("truncated_frame.data", None), ("nan_energy.data", None),
                                       ("unknown_element.data", None), ("singular_cell.data", None)])
def test_bad_input_is_one_line_without_traceback(files, tmp_path, command, name, line):
    args = [command, files / name] + (["--out", tmp_path, *TINY] if command == "train" else [])
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert result.output.startswith("Error: ") and f"{name}:" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_directory_and_bad_options_are_rejected(tmp_path):
    result = CliRunner().invoke(main, ["inspect", str(tmp_path)])
    assert result.exit_code == 1 and "is a directory" in result.output
    result = CliRunner().invoke(main, ["train", "--cutoff", "-1", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "--cutoff" in result.output


def test_help_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys; from pbcgnn.cli import main; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_train_options_build_the_configs_defaults(bundled_n2p2, monkeypatch, tmp_path):
    """One set of defaults: `pbcgnn train DATA` with no options asks fit() for Config()'s defaults,
    and every option lands in its field."""
    from pbcgnn.config import Config, DataConfig
    from pbcgnn.train import run as run_module
    from pbcgnn.train.state import FitResult

    seen = []

    def fake_fit(config, out, **kwargs):
        seen.append(config)
        return FitResult(tmp_path / "best.pt", tmp_path / "last.pt",
                         {"energy_rmse_mev_per_atom": 1.0, "force_rmse_mev_per_A": 1.0})

    monkeypatch.setattr(run_module, "fit", fake_fit)
    run("train", bundled_n2p2, "--out", tmp_path)
    assert seen[0] == Config(data=DataConfig(paths=(str(bundled_n2p2),)))
    run("train", bundled_n2p2, "--out", tmp_path, "--val", bundled_n2p2, *TINY, "--committee", "2", "--bootstrap",
        "--max-minutes", "5", "--energy-weight", "3", "--format", "n2p2")
    config = seen[1]
    assert config.data.val_paths == (str(bundled_n2p2),) and config.data.format == "n2p2"
    assert (config.model.hidden_channels, config.model.num_filters, config.model.num_interactions,
            config.model.num_rbf, config.model.cutoff) == (16, 16, 2, 12, 4.5)
    assert (config.train.batch_size, config.train.seed, config.train.device, config.train.max_minutes,
            config.train.energy_weight) == (4, 3, "cpu", 5.0, 3.0)
    assert config.committee.size == 2 and config.committee.bootstrap
