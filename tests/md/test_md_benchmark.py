"""benchmarks/md/md_speed.py runs end to end at a tiny size (no timing assertions)."""
from __future__ import annotations

import importlib.util
import json

def test_md_speed_smoke(shared_data, tmp_path, bench_script):
    bench = bench_script("md/md_speed.py")
    engines = ["ase", "openmm"] if importlib.util.find_spec("openmm") else ["ase"]
    report = bench.main([
        "--data", str(shared_data / "deepmd_water" / "deepmd_water.xyz"), "--sizes", "192", "--steps", "3",
        "--engines", *engines, "--device", "cpu", "--out", str(tmp_path),
        "--model", json.dumps({"hidden_channels": 8, "num_filters": 8, "num_interactions": 1, "num_rbf": 8,
                               "cutoff": 3.0}),
    ])
    written = json.loads((tmp_path / "result.json").read_text())
    assert written == json.loads(json.dumps(report))
    assert [r["engine"] for r in written["runs"]] == engines
    for run in written["runs"]:
        assert run["atoms"] == 192 and run["steps"] == 3 and run["ns_per_day"] > 0 and run["edges"] > 0
