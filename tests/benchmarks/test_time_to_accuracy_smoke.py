"""benchmarks/accuracy/time_to_accuracy.py end to end at a tiny size, pbcgnn only (the peers'
venvs are not installed in CI; their scoring is checked on made-up predictions)."""
from __future__ import annotations

import json
from pathlib import Path

import ase.io
import pytest

TINY = "--features 8 --filters 8 --interactions 1 --rbf 8 --cutoff 4.0"


def test_time_to_accuracy_smoke(shared_data, tmp_path, bench_script):
    bench = bench_script("accuracy/time_to_accuracy.py")
    results = bench.main(["--packages", "pbcgnn", "mace", "--mace-python", str(tmp_path / "no-venv" / "python"),
                          "--minutes", "0.1", "0.05", "--max-frames", "10", "--out", str(tmp_path),
                          "--pbcgnn-args", TINY])
    assert results["split"] == {"train": 8, "val": 1, "test": 1} and results["threads"] == 1
    assert "not found" in results["packages"]["mace"]["skipped"]  # a missing venv skips its package
    row = results["packages"]["pbcgnn"]
    assert [p["minutes"] for p in row["points"]] == [0.05, 0.1]
    for point, command in zip(row["points"], row["commands"][::2]):  # one run per mark, each with its budget
        assert point["epochs"] >= 1 and Path(point["snapshot"]).is_file() and point["n_frames"] == 1
        assert "--resume" not in command and f"--max-minutes {point['minutes']:g}" in command
    assert json.loads((tmp_path / "time_to_accuracy.json").read_text()) == results
    assert (tmp_path / "time_to_accuracy.png").stat().st_size > 1000
    # a later invocation reuses a mark already trained and scored, and keeps the others in the file
    again = bench.main(["--packages", "pbcgnn", "--minutes", "0.05", "--max-frames", "10", "--out", str(tmp_path),
                        "--pbcgnn-args", TINY])
    points = again["packages"]["pbcgnn"]["points"]
    assert points == row["points"] and again["packages"]["pbcgnn"]["commands"] == row["commands"]
    assert len(again["packages"]["pbcgnn"]["invocations"]) == 2 and "skipped" in again["packages"]["mace"]
    # another recipe of a package is its own row and run folder (--label)
    painn = bench.main(["--packages", "pbcgnn", "--label", "pbcgnn_painn", "--minutes", "0.05", "--max-frames", "10",
                        "--out", str(tmp_path), "--pbcgnn-args", "--model painn --features 8 --interactions 1 --rbf 8"])
    assert painn["packages"]["pbcgnn"]["points"] == points and painn["packages"]["pbcgnn_painn"]["package"] == "pbcgnn"
    assert "--model painn" in painn["packages"]["pbcgnn_painn"]["commands"][0]
    assert (tmp_path / "pbcgnn_painn" / "model_0.05min" / "best.pt").is_file()


def test_peer_predictions_scored_as_pbcgnn_eval(shared_data, tmp_path, bench_script):
    bench = bench_script("accuracy/time_to_accuracy.py")
    frames = ase.io.read(shared_data / "cheng2019_h2o_revpbe0_d3" / "cheng2019_h2o_revpbe0_d3.xyz", index=":2")
    ase.io.write(tmp_path / "test.xyz", frames, format="extxyz")
    for atoms in frames:  # 1 meV/atom too high, forces exact
        atoms.info["X_energy"] = atoms.get_potential_energy() + 1e-3 * len(atoms)
        atoms.arrays["X_forces"] = atoms.get_forces()
    ase.io.write(tmp_path / "pred.xyz", frames, format="extxyz")
    m = bench.score(tmp_path / "pred.xyz", tmp_path / "test.xyz", "X_")
    assert m["energy_rmse_mev_per_atom"] == pytest.approx(1.0) and m["force_rmse_mev_per_A"] == 0.0
    assert m["n_frames"] == 2


def test_paused_mark_resumes_and_is_scored_when_it_ends(shared_data, tmp_path, bench_script):
    """--stop-after pauses a mark's run (no point yet); the same command again resumes it, and the
    point appears once its budget (here 3 epochs) is spent."""
    bench = bench_script("accuracy/time_to_accuracy.py")
    argv = ["--packages", "pbcgnn", "--label", "paused", "--minutes", "10", "--stop-after", "1e-6",
            "--max-frames", "10", "--out", str(tmp_path), "--pbcgnn-args", TINY + " --epochs 3"]
    rows = [bench.main(argv)["packages"]["paused"] for _ in range(3)]
    assert rows[0]["points"] == [] and rows[1]["points"] == []  # one epoch per invocation
    [point] = rows[2]["points"]
    assert point["minutes"] == 10 and point["epochs"] == 3 and point["n_frames"] == 1
    commands = rows[2]["commands"]
    assert len(commands) == 4 and "--resume" not in commands[0]  # train, resume, resume, eval
    assert all("--resume" in c for c in commands[1:3]) and " eval " in commands[3]
    assert bench.main(argv)["packages"]["paused"]["points"] == [point]  # ended: nothing trained again
