"""pbcgnn train --committee, pbcgnn eval on a committee, pbcgnn select: in-process CLI runs."""
from __future__ import annotations

import json

from click.testing import CliRunner
from pbcgnn.cli import main

from pbcgnn.io import read_frames

TINY = ["--features", "16", "--filters", "16", "--interactions", "2", "--rbf", "12", "--cutoff", "4.5",
        "--batch-size", "2", "--seed", "5", "--device", "cpu", "--no-progress", "--dtype", "float64"]


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_committee_train_eval_select(water48_file, tmp_path):
    out = tmp_path / "run"
    result = run("train", water48_file, "--epochs", "2", "--committee", "2", "--bootstrap", "--out", out, *TINY)
    assert result.exit_code == 0, result.output
    assert "committee spread vs error (Spearman)" in result.output
    # 10 frames, val_fraction 0.1: one validation frame, too few to calibrate on
    assert "spread calibration: none, raw spreads (too few validation frames" in result.output
    assert (out / "member_0" / "best.pt").is_file() and (out / "member_1" / "last.pt").is_file()

    result = run("eval", out / "best.pt", water48_file, "--out", tmp_path / "eval", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "rho" in result.output and "1 sigma %" in result.output and "calibration.png" in result.output
    assert "calibration: none: raw spreads (fit one with `pbcgnn calibrate`)" in result.output
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())["total"]
    assert {"spearman_energy", "spearman_forces", "calibration_energy", "calibration_forces"} <= set(metrics)

    result = run("select", out / "best.pt", water48_file, "--n", "3", "--out", tmp_path / "next.xyz",
                 "--device", "cpu")
    assert result.exit_code == 0, result.output
    frames = read_frames(tmp_path / "next.xyz", require_energy=False)
    assert len(frames) == 3 and frames[0].info["committee_spread"] >= frames[2].info["committee_spread"]
    assert "wrote 3 frames" in result.output


def test_select_on_a_single_model_is_one_clean_line(water48_file, tmp_path):
    out = tmp_path / "single"
    assert run("train", water48_file, "--epochs", "1", "--out", out, *TINY).exit_code == 0
    result = CliRunner().invoke(main, ["select", str(out / "best.pt"), str(water48_file), "--n", "2",
                                       "--out", str(tmp_path / "x.xyz")])
    assert result.exit_code == 1 and result.output.startswith("Error: ")
    assert "expected a committee checkpoint" in result.output and "Traceback" not in result.output
