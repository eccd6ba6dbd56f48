"""Runtime failures through the CLI: an unknown device, an unwritable or failing --out, a broken
checkpoint, a cutoff too large for the memory, ``md --steps 0``. Each ends in exactly one
``Error:`` line and exit 1, never a traceback, and a failed write never damages best.pt/last.pt."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from pbcgnn import checkpoint as ckpt_module
from pbcgnn.checkpoint import build_model, save_checkpoint
from pbcgnn.config import Config, DataConfig, ModelConfig
from pbcgnn.md import output as md_output

from .conftest import TRAIN, one_error, run

BAD_DEVICES = ["cuda:x", "tpu", "cuda:-1"] + ([] if torch.cuda.is_available() else ["cuda", "cuda:0"])


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


# -- runs that blow up, and numbers that cannot work: one line, and no checkpoint with NaN or inf ------
def non_finite(obj, where: str = "") -> list[str]:
    """Paths inside a loaded checkpoint to every tensor (weights, EMA, optimiser state) with a NaN or inf."""
    if isinstance(obj, torch.Tensor):
        return [where] if obj.is_floating_point() and not bool(torch.isfinite(obj).all()) else []
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, (list, tuple)) else ()
    return [bad for key, value in items for bad in non_finite(value, f"{where}/{key}")]


def assert_checkpoints_finite(out: Path) -> None:
    for path in out.glob("*.pt"):
        ckpt = torch.load(path, weights_only=True)
        assert non_finite(ckpt) == [], path
        assert all(v == v and abs(v) != float("inf") for v in ckpt["metrics"].values()), path


def test_md_that_blows_up_stops_at_the_first_step(checkpoint, bundled_n2p2, tmp_path):
    """Atoms flying apart (here at 1e22 K) once reached the neighbour list unwrapped, ~1e8 A out,
    where every step cost seconds; now the first step that moves an atom a bond length stops it."""
    line = one_error(run("md", checkpoint, "--structure", bundled_n2p2, "--steps", "40", "--ensemble", "nve",
                         "--temperature", "1e22", "--device", "cpu", "--no-progress", "--out", tmp_path / "md"))
    assert "during MD steps 1-10: atom" in line and "in 1 step, expected at most 1 A" in line
    assert "left the region" in line


def test_md_with_a_model_giving_nan_stops(checkpoint, bundled_n2p2, tmp_path, monkeypatch):
    from pbcgnn import calculator

    real = calculator.compute_properties

    def nan_energy(*args, **kwargs):
        out = real(*args, **kwargs)
        return {**out, "energy": out["energy"] * float("nan")}

    monkeypatch.setattr(calculator, "compute_properties", nan_energy)
    line = one_error(run(*commands(checkpoint, bundled_n2p2, tmp_path / "md")["md"], "--device", "cpu"))
    assert "expected a finite energy and forces from the model, found energy nan eV" in line


@pytest.mark.parametrize("option", [["--temperature", "inf"], ["--ensemble", "npt", "--pressure", "nan"],
                                    ["--timestep", "inf"], ["--initial-temperature", "inf"]])
def test_md_refuses_numbers_that_are_not_finite_by_their_option(checkpoint, bundled_n2p2, tmp_path, option):
    line = one_error(run(*commands(checkpoint, bundled_n2p2, tmp_path / "md")["md"], "--device", "cpu", *option))
    name = [o for o in option if o.startswith("--") and o != "--ensemble"][0]
    assert line == f"Error: expected a finite number for {name}, found {option[-1]}"


@pytest.fixture(scope="module")
def md_run(checkpoint, bundled_n2p2, tmp_path_factory):
    """A 4-step MD folder to analyse."""
    out = tmp_path_factory.mktemp("md_run")
    result = run("md", checkpoint, "--structure", bundled_n2p2, "--steps", "4", "--interval", "2", "--device", "cpu",
                 "--no-progress", "--out", out)
    assert result.exit_code == 0, result.output
    return out


def test_analyze_names_r_max_when_it_does_not_fit(md_run):
    line = one_error(run("analyze", md_run, "--r-max", "2000", "--out", md_run / "big"))
    assert "for --r-max 2000 A" in line and line.endswith("use a smaller --r-max") and "cutoff" not in line


def test_analyze_refuses_a_run_with_nan_and_writes_no_nan(md_run, tmp_path):
    import shutil

    run_dir = shutil.copytree(md_run, tmp_path / "blown")
    lines = (run_dir / "thermo.csv").read_text().splitlines()
    cells = lines[2].split(",")
    cells[2] = cells[4] = "nan"  # potential_eV and total_eV of step 2
    (run_dir / "thermo.csv").write_text("\n".join(lines[:2] + [",".join(cells)] + lines[3:]) + "\n")
    (run_dir / "analysis.json").unlink(missing_ok=True)
    line = one_error(run("analyze", run_dir))
    assert "found nan in potential_eV at step 2" in line
    assert not (run_dir / "analysis.json").exists()
    assert run("analyze", md_run).exit_code == 0
    assert "NaN" not in (md_run / "analysis.json").read_text()


def test_training_that_diverges_stops_and_saves_no_nan(bundled_n2p2, tmp_path):
    """At lr 1e30 the second epoch's step turns the weights to NaN: once it finished with exit 0
    and a last.pt of NaN weights."""
    out = tmp_path / "diverge"
    line = one_error(run("train", bundled_n2p2, "--out", out, *TRAIN, "--batch-size", "16", "--epochs", "2",
                         "--lr", "1e30"))  # one step per epoch
    assert line.startswith("Error: epoch 2: the weights became NaN or inf") and "are kept" in line
    assert_checkpoints_finite(out)


def test_a_nan_validation_loss_stops_before_any_checkpoint(bundled_n2p2, tmp_path, monkeypatch):
    from pbcgnn.train import loop

    real = loop.validate
    monkeypatch.setattr(loop, "validate", lambda *a, **k: {**real(*a, **k), "loss": float("nan")})
    out = tmp_path / "nanval"
    line = one_error(run("train", bundled_n2p2, "--out", out, *TRAIN))
    assert line.startswith("Error: epoch 1: NaN or inf in the validation loss")
    assert not list(out.glob("*.pt"))


@pytest.mark.parametrize("option, name", [(["--huber-delta", "1e-30"], "--huber-delta"),
                                          (["--max-minutes", "inf"], "--max-minutes"),
                                          (["--energy-weight", "inf"], "--energy-weight")])
def test_train_refuses_options_that_cannot_work(bundled_n2p2, tmp_path, option, name):
    line = one_error(run("train", bundled_n2p2, "--out", tmp_path / "r", *TRAIN, *option))
    assert f"({name})" in line
    assert not list((tmp_path / "r").glob("*.pt"))


@pytest.fixture(scope="module")
def annealing_run(bundled_n2p2, tmp_path_factory):
    """A run of 4 epochs (anneal 0.5, no final weight) paused after 2: its final phase has begun."""
    out = tmp_path_factory.mktemp("annealing")
    args = ["--epochs", "4", "--anneal", "0.5", *TRAIN[2:]]
    for first in (True, False):
        result = run("train", *([bundled_n2p2] if first else ["--resume"]), "--out", out, *args,
                     "--stop-after", "1e-6")
        assert result.exit_code == 0 and "paused" in result.output, result.output
    return out


def test_a_final_energy_weight_is_refused_once_the_anneal_began(annealing_run):
    before = (annealing_run / "last.pt").read_bytes()
    line = one_error(run("train", "--resume", "--out", annealing_run, "--final-energy-weight", "100"))
    assert "train.final_energy_weight = 100.0 given, but this run was started with None" in line
    assert (annealing_run / "last.pt").read_bytes() == before


def test_a_resume_with_nothing_to_train_says_so(annealing_run, tmp_path):
    import shutil

    out = shutil.copytree(annealing_run, tmp_path / "done")
    before = {name: (out / name).read_bytes() for name in ("best.pt", "last.pt")}
    result = run("train", "--resume", "--out", out, "--epochs", "2")
    assert result.exit_code == 0, result.output
    assert "nothing to train" in result.output and "wrote" not in result.output
    assert {name: (out / name).read_bytes() for name in before} == before
