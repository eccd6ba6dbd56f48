"""The checkpoint file: atomic writes that never damage the previous file, the umask, stale
temporary files of killed writers, and one clear InputError for any file that is not a checkpoint."""
from __future__ import annotations

import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pbcgnn import checkpoint as ckpt_module
from pbcgnn.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from pbcgnn.config import Config, DataConfig, ModelConfig
from pbcgnn.errors import InputError, OutputError

TINY = ModelConfig(hidden_channels=8, num_filters=8, num_interactions=1, num_rbf=6, cutoff=3.0)


def tiny_checkpoint() -> dict:
    """A valid (untrained) single-model checkpoint dict."""
    config = Config(data=DataConfig(paths=("x.xyz",)), model=TINY)
    model = ckpt_module.build_model(config)
    return {"config": config.to_dict(), "model": model.state_dict(), "elements": [1, 8], "epoch": 0}


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "best.pt"
    save_checkpoint(path, tiny_checkpoint())
    return path


def temps(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_checkpoint_permissions_follow_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        save_checkpoint(tmp_path / "best.pt", tiny_checkpoint())
    finally:
        os.umask(old)
    assert (tmp_path / "best.pt").stat().st_mode & 0o777 == mode


@pytest.mark.parametrize("failure", [
    RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 1024 vs 512"),
    OSError(28, "No space left on device"),
])
def test_a_failed_write_keeps_the_previous_file_and_names_the_path(saved, monkeypatch, failure):
    before = saved.read_bytes()

    def half_written(obj, f):
        f.write(b"PK\x03\x04 partial")
        raise failure

    monkeypatch.setattr(ckpt_module.torch, "save", half_written)
    with pytest.raises(OutputError) as info:
        save_checkpoint(saved, {**tiny_checkpoint(), "epoch": 5})
    message = str(info.value)
    assert message.startswith(f"{saved}: cannot write: ") and "inline_container.cc" not in message
    assert saved.read_bytes() == before and temps(saved.parent) == []
    assert read_checkpoint(saved)["epoch"] == 0


def test_an_unwritable_folder_is_an_output_error(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(OutputError, match="afile.*cannot write: Not a directory"):
        save_checkpoint(tmp_path / "afile" / "run" / "best.pt", tiny_checkpoint())


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temporary_files_are_removed_and_live_ones_kept(saved):
    host, folder = ckpt_module._HOST, saved.parent
    dead = folder / f".best.pt.{host}.{_dead_pid()}.0123abcd.tmp"
    live = folder / f".best.pt.{host}.{os.getpid()}.89abcdef.tmp"  # this very process: alive
    remote_new = folder / ".best.pt.otherhost.1.00000000.tmp"
    remote_old = folder / ".best.pt.otherhost.2.11111111.tmp"
    legacy_new, legacy_old = folder / ".best.pt.abc_1234", folder / ".best.pt.zz99yy88"
    other_name = folder / ".last.pt.x1y2z3w4"
    for path in (dead, live, remote_new, remote_old, legacy_new, legacy_old, other_name):
        path.write_bytes(b"partial")
    an_hour_ago = time.time() - 3600
    for path in (remote_old, legacy_old, other_name):
        os.utime(path, (an_hour_ago, an_hour_ago))
    save_checkpoint(saved, tiny_checkpoint())
    left = set(temps(folder))
    assert left == {live.name, remote_new.name, legacy_new.name, other_name.name}


def test_a_killed_writer_leaves_the_old_file_and_the_next_save_cleans_up(saved):
    """kill -9 in the middle of torch.save: best.pt is untouched, and the next save removes the temp file."""
    before = saved.read_bytes()
    script = (
        "import sys, time, torch\n"
        "from pbcgnn import checkpoint\n"
        "def slow(obj, f):\n"
        "    f.write(b'PK partial'); f.flush(); print('writing', flush=True); time.sleep(60)\n"
        "checkpoint.torch.save = slow\n"
        f"checkpoint.save_checkpoint({str(saved)!r}, {{'model': {{}}}})\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
        proc.kill()
        proc.wait(timeout=30)
    finally:
        proc.stdout.close()
    assert saved.read_bytes() == before
    assert len(temps(saved.parent)) == 1
    save_checkpoint(saved, tiny_checkpoint())
    assert temps(saved.parent) == []


def _write(path, payload) -> None:
    torch.save(payload, path)


@pytest.mark.parametrize("name, make, expected", [
    ("random", lambda p: p.write_bytes(os.urandom(4096)), "not a torch file"),
    ("empty", lambda p: p.write_bytes(b""), "empty or truncated"),
    ("pickle", lambda p: p.write_bytes(pickle.dumps({"a": 1})), "not a torch file"),
    ("object", lambda p: _write(p, {"format": 1, "model": {}, "f": getattr}), "pickled Python object"),
])
def test_files_that_are_no_checkpoint_are_refused_without_torch_advice(tmp_path, name, make, expected):
    path = tmp_path / f"{name}.pt"
    make(path)
    with pytest.raises(InputError) as info:
        read_checkpoint(path)
    message = str(info.value)
    assert message.startswith(f"{path}: expected a pbcgnn checkpoint") and expected in message
    assert "weights_only" not in message and "safe_globals" not in message and "\n" not in message


def _config_change(change):
    def make(ckpt):
        ckpt["config"] = change(ckpt["config"])
        return ckpt
    return make


def _model_option(name, value):
    return _config_change(lambda c: {**c, "model": {**c["model"], name: value}})


@pytest.mark.parametrize("make, expected", [
    (_config_change(lambda c: {}), "expected a config with a 'model' table, found no model section"),
    (_config_change(lambda c: None), "found no config"),
    (_config_change(lambda c: [1, 2]), "found list"),
    (_config_change(lambda c: {**c, "train": 3}), "expected config sections as tables, found train"),
    (_model_option("hidden_channels", "abc"), "expected an integer model.hidden_channels, found 'abc'"),
    (_model_option("num_rbf", 2.5), "expected an integer model.num_rbf"),
    (_model_option("cutoff", "far"), "expected a number for model.cutoff"),
    (_model_option("hidden_channels", -3), "expected hidden_channels >= 1"),
    (_model_option("colour", "red"), "unknown ModelConfig options: colour"),
    (_model_option("hidden_channels", 16), "expected weights of the model its config describes"),
    (lambda c: {**c, "model": 5}, "expected the model's weights as a table"),
    (lambda c: {**c, "format": "1"}, "expected an integer checkpoint format"),
    (lambda c: {**c, "members": "abc"}, "expected a list of committee members"),
])
def test_a_broken_config_or_weights_is_one_input_error_naming_the_file(tmp_path, make, expected):
    path = tmp_path / "broken.pt"
    torch.save({"format": 1, **make(tiny_checkpoint())}, path)
    with pytest.raises(InputError) as info:
        load_checkpoint(path)
    assert str(info.value).startswith(f"{path}: ") and expected in str(info.value)
    assert len(str(info.value)) < 300


def test_a_valid_checkpoint_still_loads(saved):
    model, ckpt = load_checkpoint(saved)
    assert ckpt["elements"] == [1, 8] and model.cutoff == pytest.approx(3.0)


def tiny_committee() -> dict:
    """A valid (untrained) committee checkpoint dict of two members, without a calibration."""
    config = Config(data=DataConfig(paths=("x.xyz",)), model=TINY)
    members = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        members.append({**tiny_checkpoint(), "model": ckpt_module.build_model(config).state_dict()})
    return ckpt_module.combine_checkpoints(config.replace(committee={"size": 2}), members, [Path("m0"), Path("m1")])


def test_a_committee_without_a_calibration_loads_with_the_identity(tmp_path):
    path = tmp_path / "old.pt"
    save_checkpoint(path, tiny_committee())
    assert "calibration" not in torch.load(path, weights_only=True)
    model, _ = load_checkpoint(path)
    assert model.calibration.is_identity


def test_a_calibration_round_trips_through_the_checkpoint(tmp_path):
    from pbcgnn.model.calibration import Calibration, PowerLaw

    cal = Calibration(energy=PowerLaw(3.9, 1.0), forces=PowerLaw(0.4, 0.75), fitted_on="val", n_frames=12,
                      details={"energy": {"form": "scale", "cv_nll_scale": -1.5}})
    path = tmp_path / "calibrated.pt"
    save_checkpoint(path, {**tiny_committee(), "calibration": cal.to_dict()})
    model, ckpt = load_checkpoint(path, dtype="float64")
    assert model.calibration == cal and ckpt["calibration"] == cal.to_dict()


def test_a_bad_calibration_is_one_input_error_naming_the_file(tmp_path):
    path = tmp_path / "bad.pt"
    save_checkpoint(path, {**tiny_committee(), "calibration": {"forces": {"a": 0.0, "b": 1.0}}})
    with pytest.raises(InputError, match="expected calibration.forces with positive finite a and b") as info:
        load_checkpoint(path)
    assert str(info.value).startswith(f"{path}: ")
