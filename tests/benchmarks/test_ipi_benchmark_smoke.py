"""benchmarks/md/ipi: run.py (i-PI plus `pbcgnn ipi` clients) and compare.py end to end, 10 steps each."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "md" / "ipi"
PRETRAINED = Path(__file__).resolve().parents[2] / "data" / "pretrained" / "cheng2019_revpbe0_d3_schnet.pt"


def test_classical_and_pimd_inputs_run_and_compare(shared_data, tmp_path, bench_script):
    pytest.importorskip("ipi")
    run, compare = bench_script("md/ipi/run.py"), bench_script("md/ipi/compare.py")
    common = ["--checkpoint", str(PRETRAINED), "--structure", str(shared_data / "deepmd_water" / "deepmd_water.xyz"),
              "--steps", "10", "--tabulate", "--no-analyze"]
    for name, clients in (("classical", 1), ("pimd8", 2)):
        summary = run.main([str(BENCH / f"{name}.xml"), *common, "--clients", str(clients),
                            "--out", str(tmp_path / name)])
        beads = 1 if name == "classical" else 8
        assert summary["exit_codes"] == [0] * (clients + 1) and sum(summary["requests_per_client"]) == beads * 11
    numbers = compare.main([str(tmp_path / "classical"), str(tmp_path / "pimd8"), "--skip", "0",
                            "--out", str(tmp_path)])
    assert json.loads((tmp_path / "ipi_water.json").read_text()) == numbers
    assert (tmp_path / "ipi_water_rdf.png").is_file()
    for label, beads in (("classical (1 bead)", 1), ("PIMD (8 beads)", 8)):
        assert numbers[label]["beads"] == beads and numbers[label]["frames"] == beads  # step 0 only (stride 20)
        assert 0.9 < numbers[label]["OH_intramolecular"]["r_A"] < 1.1
