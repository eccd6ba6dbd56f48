"""Benchmark scripts run end to end at a tiny size (no timing assertions)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def test_train_budget_smoke(shared_data, tmp_path, bench_script):
    bench = bench_script("train_budget.py")
    report = bench.main([
        "--data", str(shared_data / "deepmd_water" / "deepmd_water.xyz"), "--max-frames", "10",
        "--minutes", "0.05", "--epochs", "2", "--out", str(tmp_path), "--device", "cpu",
        "--model", json.dumps({"hidden_channels": 8, "num_filters": 8, "num_interactions": 1, "num_rbf": 8,
                               "cutoff": 4.0}),
    ])
    written = json.loads((tmp_path / "result.json").read_text())
    assert written["n_train"] + written["n_val"] == 10 and report["epochs"] >= 1
    assert written["validation"]["n_frames"] == written["n_val"]
    assert written["predict_the_mean"]["force_rmse_mev_per_A"] > 100


def test_accuracy_smoke(shared_data, tmp_path, bench_script):
    bench = bench_script("accuracy/run.py")
    results = bench.main([
        "--sets", "n2p2", "--max-frames", "8", "--minutes", "0.05", "--curve", "3", "6", "--out", str(tmp_path),
        "--device", "cpu", "--train", json.dumps({"epochs": 2}),
        "--model", json.dumps({"hidden_channels": 8, "num_filters": 8, "num_interactions": 1, "num_rbf": 8,
                               "cutoff": 4.0}),
    ])
    row = results["sets"]["n2p2"]
    assert row["n_train"] == 6 and row["pbcgnn"]["n_frames"] == 1  # 8 frames: 6 / 1 / 1
    assert [p["n_train"] for p in results["curves"]["n2p2"]] == [3, 6]
    assert results["curve_minutes"] == 0.05 and results["argv"][:2] == ["--sets", "n2p2"]  # how it was run
    assert (tmp_path / "results.md").read_text().count("| n2p2 | pbcgnn |") == 1
    assert (tmp_path / "learning_curve.png").is_file()


def test_ablations_smoke(shared_data, tmp_path, bench_script):
    bench = bench_script("accuracy/ablations.py")
    tiny = json.dumps({"hidden_channels": 8, "num_filters": 8, "num_interactions": 1, "num_rbf": 8, "cutoff": 4.0})
    args = ["--set", "n2p2", "--max-frames", "8", "--minutes", "0.05", "--out", str(tmp_path), "--device", "cpu",
            "--train", json.dumps({"epochs": 2}), "--model", tiny]
    bench.main([*args, "--variants", "plateau"])
    results = bench.main([*args, "--variants", "ew1000"])  # a second invocation adds its row
    assert set(results) == {"plateau", "ew1000"}
    assert results["ew1000"]["train"] == {"epochs": 2, "energy_weight": 1000.0}
    assert results["plateau"]["n_frames"] == 1 and results["plateau"]["epochs"] == 2
    rows = [line for line in (tmp_path / "n2p2" / "ablations.md").read_text().splitlines() if line.startswith("| ")]
    assert len(rows) == 3 and "energy_weight=1000.0" in rows[2]  # header + 2 rows
    assert results["ew1000"]["config"]["train"]["energy_weight"] == 1000.0


def test_pretrained_script_records_a_painn_run(shared_data, tmp_path, monkeypatch, bench_script):
    """The record of a PaiNN run names the architecture, and no SchNet-only option, in its command."""
    bench = bench_script("accuracy/pretrained.py")
    record = bench.main(["--max-frames", "10", "--regression-frames", "1", "--minutes", "1", "--out", str(tmp_path),
                         "--", "--epochs", "1", "--model", "painn", "--features", "8", "--interactions", "1",
                         "--rbf", "8", "--cutoff", "4.0"])
    assert record["model"] == "cheng2019_revpbe0_d3_painn.pt"
    assert "--model painn" in record["command"] and "--filters" not in record["command"]
    assert record["architecture"]["architecture"] == "painn" and "num_filters" not in record["architecture"]
    # shipped beside the SchNet model: its own record and card, and an index of both
    ship = tmp_path / "ship"
    ship.mkdir()
    shutil.copy(BENCH.parent / "data" / "pretrained" / "cheng2019_revpbe0_d3_schnet.json", ship)
    monkeypatch.setattr(bench, "SHIP", ship)
    shipped = bench.ship(record, tmp_path / "model" / "best.pt")
    assert json.loads((ship / "cheng2019_revpbe0_d3_painn.json").read_text()) == shipped
    card = (ship / "cheng2019_revpbe0_d3_painn.md").read_text()
    assert card.startswith("# Pretrained model: PaiNN") and "8 scalar and vector features, 1 interactions" in card
    rows = [line for line in (ship / "README.md").read_text().splitlines() if line.startswith("| `")]
    assert [row.split("`")[1] for row in rows] == ["cheng2019_revpbe0_d3_painn.pt", "cheng2019_revpbe0_d3_schnet.pt"]


def test_pretrained_script_smoke(shared_data, tmp_path, bench_script):
    bench = bench_script("accuracy/pretrained.py")
    record = bench.main(["--max-frames", "10", "--regression-frames", "1", "--minutes", "1", "--out", str(tmp_path),
                         "--", "--epochs", "1", "--features", "8", "--filters", "8", "--interactions", "1",
                         "--rbf", "8", "--cutoff", "4.0"])
    assert record["data"]["n_train"] == 8 and record["data"]["n_test"] == 1
    assert record["command"].startswith("pbcgnn train ") and "--cutoff 4.0" in record["command"]
    # every deciding option is explicit, so the command outlives a change of defaults
    assert "--batch-size 4 --lr 0.003" in record["command"] and "--epochs 1 --max-minutes 1.0" in record["command"]
    assert record["regression"]["metrics"]["n_frames"] == 1
    # the regression frame is the first test frame: both evaluations agree on it
    assert record["regression"]["metrics"]["force_rmse_mev_per_A"] == pytest.approx(
        record["test"]["force_rmse_mev_per_A"], rel=1e-6)
    assert not (tmp_path / "data").exists()  # nothing shipped without --ship
    # --resume continues the same run to a larger budget and records both invocations
    again = bench.main(["--max-frames", "10", "--regression-frames", "1", "--minutes", "2", "--resume",
                        "--out", str(tmp_path), "--", "--epochs", "2"])
    assert again["training"]["epochs"] == 2
    assert again["script"].splitlines() == [record["script"], again["script"].splitlines()[1]]
    assert again["script"].splitlines()[1].endswith("--minutes 2 --out $OUT --resume -- --epochs 2")
    # paths in the run folder are written $OUT/..., so the record holds wherever the run was made
    assert "--val $OUT/splits/cheng/val.xyz --out $OUT/model " in again["command"]
    assert str(tmp_path) not in again["command"] + again["script"]
    # a third call with the same budget trains nothing: the script gains no line, threads stay those of training
    threads = torch.get_num_threads()
    torch.set_num_threads(threads + 1)
    try:
        third = bench.main(["--max-frames", "10", "--regression-frames", "1", "--minutes", "2", "--resume",
                            "--out", str(tmp_path), "--", "--epochs", "2"])
    finally:
        torch.set_num_threads(threads)
    assert third["script"] == again["script"] and third["training"]["epochs"] == 2
    assert third["training"]["threads"] == again["training"]["threads"]
