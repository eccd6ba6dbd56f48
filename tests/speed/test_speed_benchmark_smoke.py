"""benchmarks/speed/run.py runs end to end at a tiny size (no SchNetPack, no timing assertions)."""
from __future__ import annotations

import json

def test_speed_benchmark_smoke(shared_data, tmp_path, bench_script):
    bench = bench_script("speed/run.py")
    tiny = {"hidden_channels": 8, "num_filters": 8, "num_interactions": 1, "num_rbf": 8}
    report = bench.main([
        "--data", str(shared_data / "deepmd_water" / "deepmd_water.xyz"), "--sizes", "192", "1536",
        "--repeats", "1", "--train-steps", "1", "--train-batch", "2", "--no-schnetpack", "--no-compile",
        "--tabulate-points", "201", "--peak-matmul", "256", "--memory-budget-gib", "0.5", "--model", json.dumps(tiny), "--out", str(tmp_path),
    ])
    written = json.loads((tmp_path / "result.json").read_text())
    assert (tmp_path / "table.md").read_text().startswith("| atoms |")
    small, large = written["inference"]
    assert small["atoms"] == 192 and small["edges"] > 10_000
    assert {"pbcgnn", "pbcgnn --tabulate", "dense"} <= set(small["energy_forces_s"])
    assert "schnetpack" not in small["energy_forces_s"]
    assert "dense" in large["skipped"]  # predicted beyond the 0.5 GiB budget: recorded, not run
    assert report["training"]["frames_per_s"]["pbcgnn"] > 0
    assert written["matmul_peak_gflops"] > 0 and small["model_gflop"] > 0


def test_painn_speed_benchmark_smoke(shared_data, tmp_path, bench_script):
    """benchmarks/speed/painn.py at a tiny size: both pbcgnn cases run interleaved, memory per case measured."""
    bench = bench_script("speed/painn.py")
    out = tmp_path / "painn.json"
    report = bench.main(["--data", str(shared_data / "deepmd_water" / "deepmd_water.xyz"), "--batch", "1",
                         "--hidden", "8", "--interactions", "1", "--num-rbf", "4", "--cutoff", "4.0",
                         "--rounds", "1", "--no-schnetpack", "--out", str(out)])
    assert json.loads(out.read_text()) == report
    assert set(report["frames_per_s"]) == {"pbcgnn", "pbcgnn plain autograd"}
    assert all(report["peak_rss_gib"][name] > 0 for name in report["frames_per_s"])
