"""`pbcgnn calibrate`: refits a committee's calibration into a checkpoint; bad input is one Error line
and never damages the existing file."""
from __future__ import annotations

import pytest
import torch

from pbcgnn import checkpoint as ckpt_module
from pbcgnn.checkpoint import load_checkpoint
from pbcgnn.io import read_frames, write_frames

from .conftest import TRAIN, one_error, run


@pytest.fixture(scope="module")
def committee(tmp_path_factory, bundled_n2p2):
    """A tiny committee of 2 trained for one epoch on the 16 bundled frames (2 validation frames:
    too few to calibrate on, so it is stored uncalibrated)."""
    out = tmp_path_factory.mktemp("committee")
    result = run("train", bundled_n2p2, "--committee", "2", "--out", out, *TRAIN)
    assert result.exit_code == 0, result.output
    assert load_checkpoint(out / "best.pt")[0].calibration.is_identity
    return out


def test_calibrate_writes_a_new_checkpoint_and_leaves_the_old_one(committee, bundled_n2p2, tmp_path):
    before = (committee / "best.pt").read_bytes()
    result = run("calibrate", committee / "best.pt", bundled_n2p2, "--out", tmp_path / "cal.pt", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "calibration: energy" in result.output and f"wrote {tmp_path / 'cal.pt'}" in result.output
    assert "before" in result.output and "after" in result.output
    assert (committee / "best.pt").read_bytes() == before
    model, ckpt = load_checkpoint(tmp_path / "cal.pt")
    cal = model.calibration
    assert not cal.is_identity and cal.n_frames == 16 and cal.fitted_on == str(bundled_n2p2)
    assert {"cv_nll_scale", "cv_nll_power"} <= set(cal.details["forces"])  # 16 frames: both forms compared
    old = torch.load(committee / "best.pt", weights_only=True)
    assert ckpt["model"].keys() == old["model"].keys() and ckpt["members"] == old["members"]


def test_calibrate_in_place(committee, bundled_n2p2, tmp_path):
    path = tmp_path / "best.pt"
    path.write_bytes((committee / "best.pt").read_bytes())
    assert run("calibrate", path, bundled_n2p2, "--device", "cpu").exit_code == 0
    assert not load_checkpoint(path)[0].calibration.is_identity


def test_a_single_model_is_one_line(committee, bundled_n2p2):
    path = committee / "member_0" / "best.pt"
    line = one_error(run("calibrate", path, bundled_n2p2))
    assert line.startswith(f"Error: {path}: expected a committee checkpoint") and "found a single model" in line


def test_too_few_frames_is_one_line_naming_the_file(committee, bundled_n2p2, tmp_path):
    data = tmp_path / "two.xyz"
    write_frames(data, read_frames(bundled_n2p2)[:2])
    line = one_error(run("calibrate", committee / "best.pt", data, "--out", tmp_path / "x.pt"))
    assert line == (f"Error: {data}: expected at least 3 labelled frames to fit a calibration, "
                    "found 2 with energy, 2 with forces")
    assert not (tmp_path / "x.pt").exists()


def test_out_as_a_folder_is_refused(committee, bundled_n2p2, tmp_path):
    result = run("calibrate", committee / "best.pt", bundled_n2p2, "--out", tmp_path)
    assert result.exit_code == 2 and "is a directory" in result.output and "Traceback" not in result.output


def test_a_failed_write_keeps_the_checkpoint(committee, bundled_n2p2, tmp_path, monkeypatch):
    path = tmp_path / "best.pt"
    path.write_bytes((committee / "best.pt").read_bytes())

    def full_disk(*args, **kwargs):
        raise RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")

    monkeypatch.setattr(ckpt_module.torch, "save", full_disk)
    line = one_error(run("calibrate", path, bundled_n2p2, "--device", "cpu"))
    assert line.startswith(f"Error: {path}: cannot write: torch.save failed")
    assert path.read_bytes() == (committee / "best.pt").read_bytes()
    assert [p.name for p in tmp_path.iterdir()] == ["best.pt"]  # no temporary file left
