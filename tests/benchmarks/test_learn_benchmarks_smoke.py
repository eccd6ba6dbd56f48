"""benchmarks/learn/*.py end to end at a tiny size (no timing or accuracy assertions)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from pbcgnn.checkpoint import load_checkpoint, read_checkpoint
from pbcgnn.dataset import FrameDataset
from pbcgnn.evaluation import predict
from pbcgnn.evaluation.calibration import fit_calibration



def finite(values) -> bool:
    return all(math.isfinite(v) for v in values)


def test_labels_to_accuracy_quick(shared_data, tmp_path, bench_script):
    bench = bench_script("learn/labels_to_accuracy.py")
    cheng = shared_data / "cheng2019_h2o_revpbe0_d3" / "cheng2019_h2o_revpbe0_d3.xyz"
    argv = ["--quick", "--out", str(tmp_path), "--device", "cpu", "--data", str(cheng)]
    report = bench.main(argv)
    assert report["rounds"] == [4, 8, 12]
    files = sorted(p.name for p in (tmp_path / "results").iterdir())
    assert files == [f"{s}_seed0_round{r:02d}.json" for s in ("committee", "random") for r in range(3)]
    by_strategy = {s: [r for r in report["results"] if r["strategy"] == s] for s in ("committee", "random")}
    for rows in by_strategy.values():
        assert [r["n_labels"] for r in rows] == [4, 8, 12]
        for before, after in zip(rows, rows[1:]):  # labels only grow, each picked once
            assert set(before["labels"]) < set(after["labels"]) and len(set(after["labels"])) == after["n_labels"]
        assert finite([r["test"][k] for r in rows for k in ("force_rmse_mev_per_A", "energy_rmse_mev_per_atom")])
        assert all(r["test"]["n_frames"] == 4 and r["train_minutes"] > 0 for r in rows)
    # round 0 trains --first-epochs (2) from scratch, later rounds --epochs (1) from the previous committee
    assert [r["member_epochs"] for r in by_strategy["random"]] == [2 * 2, 2 * 1, 2 * 1]
    # round 0 is shared; the strategies' picks then differ in where they come from, not in how many
    assert by_strategy["committee"][0]["labels"] == by_strategy["random"][0]["labels"]
    picks = json.loads((tmp_path / "seed0" / "round_00" / "picks_committee.json").read_text())
    spreads = picks["spread_eV_per_A"]
    assert len(picks["picks"]) == 4 and spreads == sorted(spreads, reverse=True) and finite(spreads)
    assert not set(picks["picks"]) & set(by_strategy["committee"][0]["labels"])
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary["table"]) == {"committee", "random"} and summary["goal"]["max_labels"] == 12
    assert summary["goal"]["random_force_rmse"] == pytest.approx(
        summary["table"]["random"]["12"]["force_rmse_mean"])
    assert (tmp_path / "labels_to_accuracy.png").stat().st_size > 1000
    # members validate on the --val-frames subset (3 of the 4 validation frames)
    member = read_checkpoint(tmp_path / "seed0" / "round_00" / "committee" / "member_0" / "best.pt")
    assert [Path(p).name for p in member["config"]["data"]["val_paths"]] == ["val_first3.xyz"]
    assert len(FrameDataset(tmp_path / "splits" / "cheng" / "val_first3.xyz", 4.0)) == 3
    # a second invocation reads every result back: nothing is trained again
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("best.pt")}
    again = bench.main(argv)
    assert again["results"] == report["results"]
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("best.pt")} == stamps

    # the saved state resumes in another folder: splits and labels written again, nothing trained again,
    # and a round whose result is missing is scored again from its saved committee, to the same numbers
    last = tmp_path / "results" / "committee_seed0_round02.json"
    expected = json.loads(last.read_text())
    last.unlink()
    state = tmp_path / "state"
    bench.main(["--out", str(tmp_path), "--save-state", str(state)])
    assert not (state / "splits").exists() and not list(state.rglob("labelled.xyz"))
    moved = bench.main([a if a != str(tmp_path) else str(state) for a in argv])
    assert [r["labels"] for r in moved["results"]] == [r["labels"] for r in report["results"]]
    assert moved["results"][2]["test"] == pytest.approx(expected["test"], nan_ok=True)
    assert not [p for p in state.rglob("member_*/best.pt") if p.stat().st_mtime_ns > last.parent.stat().st_mtime_ns]


def test_committee_diversity_quick(shared_data, tmp_path, bench_script):
    bench = bench_script("learn/committee_diversity.py")
    report = bench.main(["--quick", "--out", str(tmp_path), "--device", "cpu", "--data-dir", str(shared_data)])
    names = set(bench.CHENG + bench.FINETUNED)
    assert set(report["table"]) == names
    for name, row in report["table"].items():
        assert finite(row.values()), name
        assert 0 <= row["coverage_1sigma_forces"] <= row["coverage_2sigma_forces"] <= 1
        result = json.loads((tmp_path / name / "result.json").read_text())
        assert result["members"] == 2 and result["test"]["n_frames"] == 3
        assert result["calibration"]["forces"]["a"] != 1.0  # fitted, not the identity
    assert report["results"]["finetune_pretrained"]["pretrain_minutes"] > 0
    assert (tmp_path / "committee_diversity.png").stat().st_size > 1000
    # members combined by the script equal pbcgnn's own committee of them, calibration included
    committee, _ = load_checkpoint(tmp_path / "init" / "best.pt")
    parts = {k: tmp_path / "splits" / "cheng" / f"{k}.xyz" for k in ("val", "test")}
    members = [load_checkpoint(tmp_path / "init" / f"member_{k}" / "best.pt")[0] for k in range(2)]
    data = {k: FrameDataset(p, committee.cutoff) for k, p in parts.items()}
    ours = {k: bench.combine([predict(m, d) for m in members]) for k, d in data.items()}
    theirs = predict(committee, data["test"])
    np.testing.assert_allclose(ours["test"].energy, theirs.energy, rtol=1e-9)
    np.testing.assert_allclose(ours["test"].forces_std_raw, theirs.forces_std_raw, atol=1e-5)
    law = fit_calibration(ours["val"], fitted_on="").forces
    assert law.a == pytest.approx(committee.calibration.forces.a, rel=1e-4)
