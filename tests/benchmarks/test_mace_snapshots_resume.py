"""benchmarks/accuracy/mace_snapshots.py paused and resumed at a tiny size, in MACE's own venv
(``$PBCGNN_MACE_PYTHON`` or ``~/mace-venv/bin/python``; skipped where MACE is not installed, as in CI)."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import ase.io
import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "accuracy" / "mace_snapshots.py"
PYTHON = Path(os.environ.get("PBCGNN_MACE_PYTHON", "~/mace-venv/bin/python")).expanduser()
#: A tiny MACE; three epochs end the run, so the test never depends on the machine's speed.
TINY = ["--name=mace", "--model=MACE", "--num_interactions=1", "--hidden_irreps=4x0e", "--max_L=0",
        "--correlation=1", "--num_radial_basis=4", "--r_max=3.0", "--batch_size=2", "--valid_batch_size=2",
        "--E0s=average", "--ema", "--ema_decay=0.9", "--swa", "--default_dtype=float64", "--seed=0",
        "--device=cpu", "--max_num_epochs=3"]


@pytest.mark.skipif(not PYTHON.is_file(), reason="MACE's venv is not installed here")
def test_paused_run_resumes_mid_epoch_with_its_clock_and_swa_stage(shared_data, tmp_path):
    frames = ase.io.read(shared_data / "cheng2019_h2o_revpbe0_d3" / "cheng2019_h2o_revpbe0_d3.xyz", index=":7")
    for name, part in (("train", frames[:4]), ("val", frames[4:6]), ("test", frames[6:])):
        ase.io.write(tmp_path / f"{name}.xyz", part, format="extxyz")
    out = tmp_path / "mace"
    cmd = [str(PYTHON), str(SCRIPT), *(f"--{k}={tmp_path / f'{k}.xyz'}" for k in ("train", "val", "test")),
           f"--out={out}", "--minutes", "1e-6", "600", "--swa-at", "1e-6", "--"] + TINY
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.run(cmd[:5] + ["--stop-after", "0"] + cmd[5:], env=env, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr[-2000:]
    paused = torch.load(out / "paused.pt", weights_only=False)  # one step in: 4 frames, batch 2, 2 steps an epoch
    assert (paused["epoch"], paused["step"], paused["epoch_ends"]) == (0, 1, []) and paused["optimizer"]["state"]
    assert paused["ema"]["num_updates"] == 1 and not (out / "snapshots.json").exists()
    # the mark it has passed is snapshotted already (its state is final); the one ahead is not
    [taken] = json.loads((out / "taken.json").read_text())
    assert taken["minutes"] == 1e-6 and taken["epochs"] == 0 and (out / "pred_1e-06min.xyz").is_file()
    assert not (out / "pred_600min.xyz").exists()
    # a changed recipe is refused, the paused state kept
    other = subprocess.run(cmd[:-1] + ["--max_num_epochs=4"], env=env, capture_output=True, text=True)
    assert other.returncode != 0 and "paused with other" in other.stderr and (out / "paused.pt").is_file()
    second = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert second.returncode == 0, second.stderr[-2000:]
    first_mark, row = json.loads((out / "snapshots.json").read_text())
    assert first_mark == taken and row["epochs"] == 3 and row["validated_epoch"] >= 1
    steps = sum(f.read_text().count('"mode": "opt"') for f in (out / "results").glob("*.txt"))
    assert steps == 6  # 1 before the pause, 5 after: the trained batch of the paused epoch is skipped
    assert not (out / "paused.pt").exists() and not (out / "taken.json").exists()
    assert (out / "pred_600min.xyz").is_file()
    assert "Changing loss based on Stage Two" in second.stderr + second.stdout  # --swa-at placed the stage
