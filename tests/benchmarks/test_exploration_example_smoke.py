"""benchmarks/learn/exploration_example.py end to end at a tiny size (no timing or accuracy assertions)."""
from __future__ import annotations

import csv
import json
import math

import ase.io
import numpy as np
import pytest

from pbcgnn.io import read_frames

ROUND_KEYS = {"round", "explored", "above_threshold", "fraction", "picked", "labelled", "failed", "md_failures",
              "stopped", "retrain_minutes", "heldout_before", "heldout_after", "explored_error"}
ERRORS = {"force_rmse_mev_per_A", "energy_rmse_mev_per_atom"}


def test_exploration_example_quick(shared_data, tmp_path, bench_script):
    bench = bench_script("learn/exploration_example.py")
    cheng = shared_data / "cheng2019_h2o_revpbe0_d3" / "cheng2019_h2o_revpbe0_d3.xyz"
    report = bench.main(["--quick", "--out", str(tmp_path), "--device", "cpu", "--data", str(cheng)])
    assert report == json.loads((tmp_path / "summary.json").read_text())

    # the loop stopped, and the summary says why: the reason pbcgnn learn recorded
    state = json.loads((tmp_path / "learn" / "state.json").read_text())
    assert report["stopped"] == state["stopped"] and state["stopped"]
    assert report["stopped_by"] in ("stop rule", "budget")

    # two densities, two temperatures, the threshold the stated quantile of the probe's spreads
    low, high = report["frames"]["start_densities_g_cm3"]
    assert high - low > 0.1
    assert sorted(state["options"]["temperatures_K"]) == [300.0, 400.0]
    with open(tmp_path / "probe" / "round_000" / "scores.csv") as f:
        spreads = [float(row["max_force"]) for row in csv.DictReader(f)]
    assert report["threshold"]["threshold_eV_per_A"] == pytest.approx(np.quantile(spreads, 0.8))
    assert state["options"]["threshold"] == report["threshold"]["threshold_eV_per_A"]

    # one row per round; each committee's held-out error is that of the next round's explorer
    rows = report["rounds"]
    assert [r["round"] for r in rows] == list(range(len(rows))) and rows
    for row in rows:
        assert set(row) == ROUND_KEYS
        assert row["fraction"] == pytest.approx(row["above_threshold"] / row["explored"])
        assert set(row["heldout_before"]) == ERRORS and all(math.isfinite(v) for v in row["heldout_before"].values())
    for row in rows[:-1]:  # every round but the last ran to its end
        assert row["stopped"] is None and row["labelled"] + row["failed"] == row["picked"]
    if rows[-1]["stopped"] is not None:  # the round the stop rule ended: explored, nothing picked
        assert rows[-1]["stopped"] == state["stopped"] and rows[-1]["heldout_after"] is None
    for before, after in zip(rows, rows[1:]):
        assert before["heldout_after"] == after["heldout_before"]
    assert report["heldout_start"] == rows[0]["heldout_before"]
    labelled = sorted(tmp_path.glob("learn/round_*/labelled.xyz"))
    assert report["labels"] == sum(len(read_frames(p)) for p in labelled) > 0

    # every label comes from the stand-in: the starting frames and the loop's own
    import stand_in_dft  # on sys.path since main() ran

    calc = stand_in_dft.make_calc()
    for path in (tmp_path / "frames" / "train.xyz", labelled[0]):
        frame = read_frames(path)[0]
        expected = frame.get_potential_energy()
        frame.calc = calc
        assert frame.get_potential_energy() == pytest.approx(expected, abs=1e-4)

    # the exploring committee's error where its dynamics went: its stored mean forces against the stand-in's
    for row in rows:
        err, per = row["explored_error"], row["explored_error"]["trajectories"]
        assert err["frames"] == sum(t["frames"] for t in per.values()) > 0
        pooled = math.sqrt(sum(t["frames"] * t["force_rmse_mev_per_A"] ** 2 for t in per.values()) / err["frames"])
        assert err["force_rmse_mev_per_A"] == pytest.approx(pooled)  # every frame has the same atoms
    frames = [a for a in ase.io.read(tmp_path / "learn" / "round_000" / "explore" / "md00" / "trajectory.xyz",
                                     index=":") if int(a.info["step"]) > 0][::2]  # QUICK's --error-every
    diffs = []
    for atoms in frames:
        mean = atoms.get_forces()
        atoms.calc = calc
        diffs.append(mean - atoms.get_forces())
    assert rows[0]["explored_error"]["trajectories"]["md00"]["force_rmse_mev_per_A"] == pytest.approx(
        1000 * np.sqrt(np.mean(np.square(diffs))), rel=1e-4)
