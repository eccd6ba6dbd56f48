"""``pbcgnn learn`` from the command line: a run, the external step, and one ``Error:`` line for each bad input."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
from ase import Atoms
from click.testing import CliRunner

from pbcgnn.cli import main
from pbcgnn.io import write_frames
from pbcgnn.train.run import fit

from ..cli.conftest import one_error
from .conftest import REPO_DATA, committee_config

MD = ["--temperature", "300", "--temperature", "500", "--steps", "20", "--sample-every", "4", "--max-per-round", "2",
      "--epochs", "1", "--device", "cpu"]


def run(*args):
    return CliRunner().invoke(main, ["learn", *[str(a) for a in args]])


@pytest.fixture
def start(emt_water):
    return ["--structure", emt_water / "start.xyz", *MD]


def test_a_run_prints_its_rounds_and_why_it_stopped(committee, start, tmp_path):
    result = run(committee, "--out", tmp_path / "run", *start, "--threshold", "1e-4", "--max-rounds", "1",
                 "--calculator", "labellers:emt")
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if not line.startswith(("INFO ", "WARNING "))]
    assert lines[0].startswith("round 0: 10 explored, 10 above the threshold (100.0 %), 2 picked, 2 labelled, "
                               "0 failed; retrained, validation force RMSE ")
    assert lines[1] == "stopped: round budget spent: 1 rounds, --max-rounds 1"
    assert lines[2] == f"2 labels; newest committee: {tmp_path / 'run' / 'round_000' / 'committee' / 'best.pt'}"
    again = run(committee, "--out", tmp_path / "run", *start, "--threshold", "1e-4")
    assert "holds a learning run (state.json): continue it with --resume" in one_error(again)
    changed = run("--out", tmp_path / "run", "--resume", "--threshold", "0.5")
    assert "--threshold 0.5 given, but this run was started with 0.0001" in one_error(changed)


def test_the_external_step_says_what_to_do_and_refuses_to_go_on_without_labels(committee, start, tmp_path):
    out = tmp_path / "run"
    waiting = run(committee, "--out", out, *start, "--threshold", "1e-4", "--max-rounds", "1")
    assert waiting.exit_code == 0, waiting.output
    assert (f"waiting for labels: label the frames of {out / 'round_000' / 'to_label.xyz'} (energy and forces, "
            f"keeping each learn_id) into {out / 'round_000' / 'labelled.xyz'}, then run `pbcgnn learn --out {out} "
            "--resume`") in waiting.output
    error = one_error(run("--out", out, "--resume"))
    assert error == (f"Error: {out / 'round_000' / 'labelled.xyz'}: expected the labelled frames of to_label.xyz "
                     "(energies and forces, each with its learn_id) to continue, found no file")


@pytest.fixture(scope="session")
def orphan_committee(emt_water, tmp_path_factory):
    """A committee whose training file has since been deleted."""
    folder = tmp_path_factory.mktemp("orphan")
    shutil.copy(emt_water / "base.xyz", folder / "gone.xyz")
    best = fit(committee_config(folder / "gone.xyz"), folder / "committee", progress=False).best
    (folder / "gone.xyz").unlink()
    return best, folder / "gone.xyz"


@pytest.mark.parametrize("case, args, message", [
    ("module", ["--calculator", "no_such_module_for_pbcgnn:make"],
     "--calculator no_such_module_for_pbcgnn:make: cannot import module 'no_such_module_for_pbcgnn'"),
    ("function", ["--calculator", "labellers:nope"], "--calculator labellers:nope: module 'labellers' has no "
                                                      "function 'nope'"),
    ("spec", ["--calculator", "labellers"], "expected --calculator as module:function"),
    ("raises", ["--calculator", "labellers:raising"], "raising() raised RuntimeError: no licence"),
    ("zero threshold", ["--threshold", "0"], "expected --threshold > 0 eV/A (required), found 0"),
    ("negative threshold", ["--threshold", "-0.1"], "expected --threshold > 0 eV/A (required), found -0.1"),
    ("no threshold", [], "expected --threshold > 0 eV/A (required), found 0"),
    ("cold", ["--temperature", "0"], "expected positive temperatures (K), found [300.0, 500.0, 0.0]"),
])
def test_bad_options_are_one_line_and_leave_no_run(case, args, message, committee, start, tmp_path):
    if case not in ("zero threshold", "negative threshold", "no threshold"):
        args = [*args, "--threshold", "0.1"]
    out = tmp_path / "run"
    assert message in one_error(run(committee, "--out", out, *start, *args))
    assert not (out / "state.json").exists()


def test_bad_inputs_are_one_line(committee, emt_water, orphan_committee, tmp_path):
    out = tmp_path / "run"
    single = REPO_DATA / "pretrained" / "cheng2019_revpbe0_d3_schnet.pt"
    assert one_error(run(single, "--out", out, "--structure", emt_water / "start.xyz", "--threshold", "0.1")) == (
        f"Error: {single.resolve()}: expected a committee checkpoint (train with --committee N, N >= 2)")
    assert "expected either --structure (explore by MD) or --pool" in one_error(
        run(committee, "--out", out, "--threshold", "0.1"))
    assert "expected either --structure (explore by MD) or --pool" in one_error(
        run(committee, "--out", out, "--threshold", "0.1", "--structure", emt_water / "start.xyz",
            "--pool", emt_water / "pool.xyz"))
    assert "expected a committee checkpoint (COMMITTEE)" in one_error(
        run("--out", out, "--threshold", "0.1", "--pool", emt_water / "pool.xyz"))
    assert one_error(run("--out", tmp_path / "none", "--resume")) == (
        f"Error: {tmp_path / 'none'}: expected a learning run to resume (state.json), found none")
    copper = tmp_path / "copper.xyz"
    write_frames(copper, [Atoms("Cu4", positions=np.eye(4, 3) * 2.0, cell=np.diag([6.0, 6.0, 6.0]), pbc=True)])
    assert "Cu" in one_error(run(committee, "--out", out, "--structure", copper, "--threshold", "0.1"))
    best, gone = orphan_committee
    assert one_error(run(best, "--out", out, "--pool", emt_water / "pool.xyz", "--threshold", "0.1")) == (
        f"Error: {gone}: training file of the committee not found (give the files with --data)")
    assert not (out / "state.json").exists()
