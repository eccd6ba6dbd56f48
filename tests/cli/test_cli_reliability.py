"""Reliability through the CLI: a checkpoint altered after it was written is refused by every
reader, one training process per run folder (a stale lock taken over), and ``select`` checks
what ``eval`` and ``md`` check and its output name before any work. Each refusal is one
``Error:`` line, exit 1, no traceback."""
from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from pbcgnn import select as select_module
from pbcgnn.checkpoint import build_model, combine_checkpoints, read_checkpoint, save_checkpoint
from pbcgnn.config import CommitteeConfig, Config, DataConfig, ModelConfig
from pbcgnn.io import read_frames, write_frames
from pbcgnn.train.lock import LOCK_NAME

from .conftest import TRAIN, one_error, run


def flip_a_tensor_byte(src, dst) -> None:
    """Copy ``src`` to ``dst`` with one bit flipped in the middle of its largest tensor's storage
    (not in a header: the zip structure and the pickle stay valid)."""
    data = bytearray(src.read_bytes())
    with zipfile.ZipFile(src) as archive:
        info = max((i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26:info.header_offset + 30])
    data[info.header_offset + 30 + name_len + extra_len + info.file_size // 2] ^= 0x10
    dst.write_bytes(data)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, bundled_n2p2):
    out = tmp_path_factory.mktemp("reliability") / "run"
    result = run("train", bundled_n2p2, "--out", out, *TRAIN)
    assert result.exit_code == 0, result.output
    assert not (out / LOCK_NAME).exists()  # released, and removed, when the run ends
    return out


@pytest.fixture(scope="module")
def committee_checkpoint(tmp_path_factory, bundled_n2p2):
    """An untrained committee of two tiny water models (H, O): enough to rank a pool."""
    config = Config(data=DataConfig(paths=(str(bundled_n2p2),)), committee=CommitteeConfig(size=2),
                    model=ModelConfig(hidden_channels=8, num_filters=8, num_interactions=1, num_rbf=6, cutoff=3.0))
    members = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        members.append({"config": config.replace(committee={"size": 1}).to_dict(), "epoch": 0, "elements": [1, 8],
                        "model": build_model(config).state_dict()})
    path = tmp_path_factory.mktemp("committee") / "best.pt"
    save_checkpoint(path, combine_checkpoints(config, members, [path.parent] * 2))
    return path


@pytest.fixture
def corrupted(run_dir, tmp_path):
    """A copy of the run whose ``best.pt`` and ``last.pt`` each have one bit flipped in a tensor."""
    out = tmp_path / "copied"
    shutil.copytree(run_dir, out)
    for name in ("best.pt", "last.pt"):
        flip_a_tensor_byte(run_dir / name, out / name)
    torch.load(out / "best.pt", weights_only=True)  # torch itself reads it without complaint
    return out


def test_a_corrupted_checkpoint_is_refused_by_every_reader(corrupted, committee_checkpoint, bundled_n2p2, tmp_path):
    bad_committee = tmp_path / "committee.pt"
    flip_a_tensor_byte(committee_checkpoint, bad_committee)
    best, last = corrupted / "best.pt", corrupted / "last.pt"
    damaged = last.read_bytes()
    commands = {
        last: [["train", "--resume", "--out", corrupted, "--epochs", "2", "--no-progress"]],
        best: [["eval", best, bundled_n2p2, "--out", tmp_path / "eval", "--device", "cpu"],
               ["md", best, "--structure", bundled_n2p2, "--steps", "0", "--out", tmp_path / "md", "--no-progress",
                "--device", "cpu"],
               ["ipi", best, "--structure", bundled_n2p2, "--unix", "pbcgnn-test-never-served", "--device", "cpu"],
               ["export", best, "--out", tmp_path / "model.pt"],
               ["train", bundled_n2p2, "--init-from", best, "--out", tmp_path / "tuned", *TRAIN[:2], "--no-progress"]],
        bad_committee: [["select", bad_committee, bundled_n2p2, "--n", "1", "--out", tmp_path / "picked.xyz",
                         "--device", "cpu"]],
    }
    for path, invocations in commands.items():
        for args in invocations:
            line = one_error(run(*args))
            assert line.startswith(f"Error: {path}: expected an intact checkpoint, found a CRC-32 mismatch"), line
            assert "altered after it was written" in line
    assert not (tmp_path / "model.pt").exists() and not (tmp_path / "picked.xyz").exists()
    assert last.read_bytes() == damaged  # the resumed run wrote nothing


def test_a_truncated_checkpoint_is_refused(run_dir, bundled_n2p2, tmp_path):
    cut = tmp_path / "cut.pt"
    cut.write_bytes((run_dir / "best.pt").read_bytes()[:-100])
    line = one_error(run("eval", cut, bundled_n2p2, "--out", tmp_path / "eval", "--device", "cpu"))
    assert line.startswith(f"Error: {cut}: expected an intact checkpoint, found a zip archive without its directory")


def test_the_shipped_checkpoints_pass_the_check():
    shipped = sorted((Path(__file__).parents[2] / "data" / "pretrained").glob("*.pt"))
    assert shipped
    for path in shipped:
        assert read_checkpoint(path)["model"]


def _hold(lock_path, pid: int, host: str):
    """Take the lock as another process would (a subprocess that sleeps); returns it, holding."""
    code = ("import fcntl, json, os, sys, time\n"
            "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o666)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\n"
            "os.write(fd, json.dumps({'pid': int(sys.argv[2]), 'host': sys.argv[3], 'since': 'now'}).encode())\n"
            "print('held', flush=True)\n"
            "time.sleep(120)\n")
    holder = subprocess.Popen([sys.executable, "-c", code, str(lock_path), str(pid), host],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


@pytest.mark.skipif(sys.platform == "win32", reason="flock is POSIX")
def test_a_second_writer_is_refused_and_a_dead_holders_lock_taken_over(run_dir, bundled_n2p2, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(run_dir, out)
    before = {name: (out / name).read_bytes() for name in ("best.pt", "last.pt")}
    holder = _hold(out / LOCK_NAME, 4242, "node7")
    try:
        for args in (["train", "--resume", "--out", out, "--epochs", "2", "--no-progress"],
                     ["train", bundled_n2p2, "--out", out, *TRAIN]):
            line = one_error(run(*args))
            assert line.startswith(f"Error: {out}: run folder in use: pid 4242 on host node7"), line
        assert {name: (out / name).read_bytes() for name in before} == before  # nothing written
    finally:
        holder.kill()
        holder.wait()
    # the holder died (killed: no clean-up), its lock file stays behind: the next run takes it over
    assert json.loads((out / LOCK_NAME).read_text())["pid"] == 4242
    result = run("train", "--resume", "--out", out, "--epochs", "2", "--no-progress")
    assert result.exit_code == 0, result.output
    assert not (out / LOCK_NAME).exists()


def test_a_lock_file_naming_a_dead_pid_is_taken_over(bundled_n2p2, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (out / LOCK_NAME).write_text(json.dumps({"pid": int(dead.stdout), "host": "here", "since": "then"}))
    result = run("train", bundled_n2p2, "--out", out, *TRAIN)
    assert result.exit_code == 0, result.output
    assert (out / "best.pt").is_file() and not (out / LOCK_NAME).exists()


def test_select_refuses_elements_the_committee_never_saw(committee_checkpoint, bundled_n2p2, tmp_path, monkeypatch):
    frames = read_frames(bundled_n2p2)[:3]
    frames[2].numbers[4] = 29  # Cu in a water model's pool
    pool = tmp_path / "pool.xyz"
    write_frames(pool, frames)
    monkeypatch.setattr(select_module, "predict", lambda *a, **k: pytest.fail("scored the pool"))
    line = one_error(run("select", committee_checkpoint, pool, "--n", "1", "--out", tmp_path / "picked.xyz",
                         "--device", "cpu"))
    assert line.startswith(f"Error: {pool}: frame 2: element(s) Cu not in the model's training set"), line
    assert not (tmp_path / "picked.xyz").exists()


@pytest.mark.parametrize("name, extra, fragment", [
    ("picked.foo", [], "expected an output name ending in .data or .xyz"),
    ("picked", [], "expected an output name ending in .data or .xyz"),
    ("POSCAR", [], "expected a format that holds several frames for 2 frames, found 'vasp'"),
])
def test_select_checks_the_output_name_before_any_work(committee_checkpoint, bundled_n2p2, tmp_path, monkeypatch,
                                                       name, extra, fragment):
    monkeypatch.setattr(select_module, "load_checkpoint", lambda *a, **k: pytest.fail("work started"))
    out = tmp_path / name
    line = one_error(run("select", committee_checkpoint, bundled_n2p2, "--n", "2", "--out", out, *extra,
                         "--device", "cpu"))
    assert line.startswith(f"Error: {out}: {fragment}"), line


def test_select_checks_the_output_folder_before_any_work(committee_checkpoint, bundled_n2p2, tmp_path, monkeypatch):
    (tmp_path / "afile").write_text("x")
    monkeypatch.setattr(select_module, "load_checkpoint", lambda *a, **k: pytest.fail("work started"))
    line = one_error(run("select", committee_checkpoint, bundled_n2p2, "--n", "1",
                         "--out", tmp_path / "afile" / "picked.xyz", "--device", "cpu"))
    assert line == f"Error: {tmp_path / 'afile'}: cannot write: expected a folder, found a file"


def test_select_still_writes_n2p2_and_extxyz(committee_checkpoint, bundled_n2p2, tmp_path):
    for name in ("next/input.data", "picked.xyz"):
        result = run("select", committee_checkpoint, bundled_n2p2, "--n", "2", "--out", tmp_path / name,
                     "--device", "cpu")
        assert result.exit_code == 0, result.output
        assert len(read_frames(tmp_path / name, require_energy=False)) == 2
