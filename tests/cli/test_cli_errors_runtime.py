"""Runtime failures through the CLI: an unknown device, an unwritable or failing --out, a broken
checkpoint, a cutoff too large for the memory, ``md --steps 0``. Each ends in exactly one
``Error:`` line and exit 1, never a traceback, and a failed write never damages best.pt/last.pt."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from pbcgnn.cli import main

from pbcgnn import checkpoint as ckpt_module
from pbcgnn.checkpoint import build_model, save_checkpoint
from pbcgnn.config import Config, DataConfig, ModelConfig
from pbcgnn.md import output as md_output

TRAIN = ["--epochs", "1", "--features", "8", "--filters", "8", "--interactions", "1", "--rbf", "6",
         "--cutoff", "3.0", "--batch-size", "8", "--device", "cpu", "--no-progress"]
BAD_DEVICES = ["cuda:x", "tpu", "cuda:-1"] + ([] if torch.cuda.is_available() else ["cuda", "cuda:0"])


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def one_error(result) -> str:
    """The single ``Error:`` line of a failed command (asserting there is exactly one, and no traceback)."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    return errors[0]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, bundled_n2p2):
    """An untrained tiny water model: enough to evaluate, select and start MD."""
    config = Config(data=DataConfig(paths=(str(bundled_n2p2),)),
                    model=ModelConfig(hidden_channels=8, num_filters=8, num_interactions=1, num_rbf=6, cutoff=3.0))
    path = tmp_path_factory.mktemp("ckpt") / "best.pt"
    save_checkpoint(path, {"config": config.to_dict(), "model": build_model(config).state_dict(),
                           "elements": [1, 8], "epoch": 0})
    return path


def commands(checkpoint, data, out):
    """eval, md and select on ``data``, writing to ``out``."""
    return {
        "eval": ["eval", checkpoint, data, "--out", out],
        "md": ["md", checkpoint, "--structure", data, "--steps", "0", "--out", out, "--no-progress"],
        "select": ["select", checkpoint, data, "--n", "1", "--out", out / "picked.xyz"],
    }


@pytest.mark.parametrize("device", BAD_DEVICES)
@pytest.mark.parametrize("command", ["eval", "md", "select"])
def test_an_unknown_device_is_one_line(checkpoint, bundled_n2p2, tmp_path, command, device):
    line = one_error(run(*commands(checkpoint, bundled_n2p2, tmp_path)[command], "--device", device))
    assert repr(device) in line and ("expected a device" in line or "CUDA is not available" in line)


@pytest.mark.parametrize("command", ["eval", "md"])
def test_out_through_a_file_is_one_line_before_any_work(checkpoint, bundled_n2p2, tmp_path, command, monkeypatch):
    (tmp_path / "afile").write_text("x")
    out = tmp_path / "afile" / "sub"  # fails for root too, unlike a chmod'ed folder
    monkeypatch.setattr(md_output.MDRecorder, "record", lambda *a, **k: pytest.fail("work started"))
    line = one_error(run(*commands(checkpoint, bundled_n2p2, out)[command], "--device", "cpu"))
    assert line == f"Error: {out}: cannot write: Not a directory"


@pytest.mark.parametrize("command", ["eval", "md"])
def test_out_that_cannot_be_created_is_one_line(checkpoint, bundled_n2p2, command):
    out = Path("/proc/pbcgnn-no-such-folder/run")  # /proc takes no new folders, for root or anyone
    line = one_error(run(*commands(checkpoint, bundled_n2p2, out)[command], "--device", "cpu"))
    assert line.startswith("Error: /proc/pbcgnn-no-such-folder") and "cannot write" in line


def test_train_out_through_a_file_is_one_line(bundled_n2p2, tmp_path):
    (tmp_path / "afile").write_text("x")
    line = one_error(run("train", bundled_n2p2, "--out", tmp_path / "afile" / "sub", *TRAIN))
    assert str(tmp_path / "afile" / "sub") in line and "Not a directory" in line


def test_a_full_disk_during_md_names_the_file(checkpoint, bundled_n2p2, tmp_path, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(md_output.ase.io, "write", full)
    line = one_error(run(*commands(checkpoint, bundled_n2p2, tmp_path / "md")["md"], "--device", "cpu"))
    assert line == f"Error: {tmp_path / 'md' / 'trajectory.xyz'}: cannot write: No space left on device"


def _broken(tmp_path, name, payload=None, raw=None):
    path = tmp_path / name
    if raw is not None:
        path.write_bytes(raw)
    else:
        torch.save(payload, path)
    return path


@pytest.mark.parametrize("case", ["random", "empty_config", "wrong_types", "pickled_object"])
def test_a_broken_checkpoint_is_one_line_without_torch_advice(checkpoint, bundled_n2p2, tmp_path, case):
    good = torch.load(checkpoint, weights_only=True)
    wrong = {**good["config"], "model": {**good["config"]["model"], "num_rbf": "twelve"}}
    path = {
        "random": lambda: _broken(tmp_path, "r.pt", raw=os.urandom(3000)),
        "empty_config": lambda: _broken(tmp_path, "e.pt", {**good, "config": {}}),
        "wrong_types": lambda: _broken(tmp_path, "w.pt", {**good, "config": wrong}),
        "pickled_object": lambda: _broken(tmp_path, "p.pt", {**good, "hook": print}),
    }[case]()
    for command in ("eval", "md", "select"):
        line = one_error(run(*commands(path, bundled_n2p2, tmp_path / "out")[command], "--device", "cpu"))
        assert line.startswith(f"Error: {path}: expected ") and "weights_only" not in line


def test_a_cutoff_beyond_the_memory_is_refused_with_the_estimate(bundled_n2p2, tmp_path):
    args = [a if a != "3.0" else "1000" for a in TRAIN]
    line = one_error(run("train", bundled_n2p2, "--out", tmp_path / "big", *args))
    assert "neighbour list that fits in memory" in line and "edges" in line and "GiB" in line
    assert "cutoff 1000 A" in line and str(bundled_n2p2) in line


def test_md_with_zero_steps_reports_no_nan_speed(checkpoint, bundled_n2p2, tmp_path):
    result = run(*commands(checkpoint, bundled_n2p2, tmp_path / "md")["md"], "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "nan" not in result.output.lower() and "0 steps" in result.output
    assert "NaN" not in (tmp_path / "md" / "run.json").read_text()
    assert len((tmp_path / "md" / "thermo.csv").read_text().splitlines()) == 2  # header and step 0


def test_a_failed_checkpoint_write_keeps_best_and_last(bundled_n2p2, tmp_path, monkeypatch):
    """Nothing is lost: a resumed run whose checkpoint writes fail (full disk) leaves both files as they were."""
    out = tmp_path / "run"
    assert run("train", bundled_n2p2, "--out", out, *TRAIN).exit_code == 0
    before = {name: (out / name).read_bytes() for name in ("best.pt", "last.pt")}

    def full_disk(obj, f):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise RuntimeError("[enforce fail at inline_container.cc:626] . PytorchStreamWriter failed writing file")

    monkeypatch.setattr(ckpt_module.torch, "save", full_disk)
    resumed = ["--epochs", "3", *TRAIN[2:]]
    line = one_error(run("train", "--resume", "--out", out, *resumed))
    assert "cannot write" in line and "inline_container" not in line and str(out) in line
    assert {name: (out / name).read_bytes() for name in before} == before
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("failure, expected", [
    (RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: "
                  "you tried to allocate 3091454496 bytes.\nmore"),
     "Error: out of memory: try a smaller --batch-size or --cutoff, or fewer frames (err == 0. DefaultCPUAllocator: "
     "can't allocate memory: you tried to allocate 3091454496 bytes.)"),
    (OSError(28, "No space left on device"), "Error: No space left on device"),
    (PermissionError(13, "Permission denied", "eval/metrics.json"), "Error: eval/metrics.json: Permission denied"),
])
def test_memory_and_operating_system_errors_anywhere_are_one_line(checkpoint, bundled_n2p2, tmp_path, monkeypatch,
                                                                  failure, expected):
    from pbcgnn.evaluation import report

    def fail(*args, **kwargs):
        raise failure

    monkeypatch.setattr(report, "evaluate", fail)
    assert one_error(run(*commands(checkpoint, bundled_n2p2, tmp_path)["eval"], "--device", "cpu")) == expected


def test_other_runtime_errors_keep_their_traceback(checkpoint, bundled_n2p2, tmp_path, monkeypatch):
    """A bug is not dressed up as a user error."""
    from pbcgnn.evaluation import report

    def bug(*args, **kwargs):
        raise RuntimeError("shape mismatch")

    monkeypatch.setattr(report, "evaluate", bug)
    result = run(*commands(checkpoint, bundled_n2p2, tmp_path)["eval"], "--device", "cpu")
    assert isinstance(result.exception, RuntimeError)
