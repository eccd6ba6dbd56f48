"""benchmarks/transfer/run.py end to end at a tiny size (no timing or accuracy assertions)."""
from __future__ import annotations

import json
import math

def test_transfer_benchmark_quick(shared_data, tmp_path, bench_script):
    bench = bench_script("transfer/run.py")
    report = bench.main(["--quick", "--out", str(tmp_path), "--device", "cpu", "--data-dir", str(shared_data)])
    written = json.loads((tmp_path / "results.json").read_text())
    assert set(written["target"]) == {"finetune", "finetune_energy_only", "scratch", "pretrained_e0_refit"}
    for runs in written["target"].values():
        assert set(runs) == {"2", "4"}
        assert all(math.isfinite(r["force_rmse_mev_per_A"]) and r["n_frames"] == 3 for r in runs.values())
    assert written["committee"]["size"] == 2 and "spearman_forces" in written["committee"]["test"]
    assert len(written["ice"]["finetune"]["energy_per_atom_pred"]) == len(written["ice"]["energy_per_atom_ref"])
    assert report["headline"]["k"] == 4
    assert (tmp_path / "learning_curve.png").stat().st_size > 1000
