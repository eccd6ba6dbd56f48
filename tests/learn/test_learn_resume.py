"""A run killed anywhere and resumed ends as the uninterrupted one: the same labels, none lost, none
computed twice, the same committee."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pbcgnn.io import read_frames
from pbcgnn.learn import learn

from .conftest import HERE
from labellers import CRASH_AFTER, KILL_AFTER, Crash  # the module --calculator imports (conftest puts it on sys.path)


def _labels(out: Path) -> list[list[tuple]]:
    """Per round: (id, energy, forces) of every label, in file order."""
    rounds = []
    for folder in sorted(out.glob("round_*")):
        path = folder / "labelled.xyz"
        frames = read_frames(path) if path.is_file() else []
        rounds.append([(a.info["learn_id"], a.get_potential_energy(), a.get_forces().tobytes()) for a in frames])
    return rounds


def assert_same_run(out: Path, reference: Path) -> None:
    """The labels of every round and the last committee's weights equal those of ``reference``."""
    got, want = _labels(out), _labels(reference)
    assert [[i for i, *_ in r] for r in got] == [[i for i, *_ in r] for r in want]
    assert got == want
    assert all(len({i for i, *_ in r}) == len(r) for r in got)  # no frame labelled twice
    assert not list(out.glob("round_*/failed.jsonl"))
    a = torch.load(out / "round_001" / "committee" / "best.pt", weights_only=True)["model"]
    b = torch.load(reference / "round_001" / "committee" / "best.pt", weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _crash_on_call(target, n: int):
    """``target`` that raises :class:`Crash` on its ``n``-th call (1-based) instead of running."""
    calls = [0]

    def wrapper(*args, **kwargs):
        calls[0] += 1
        if calls[0] == n:
            raise Crash(f"killed in {target.__name__}")
        return target(*args, **kwargs)

    return wrapper


@pytest.mark.usefixtures("one_thread_torch")
@pytest.mark.parametrize("where", ["labelling, after one label", "exploring round 1, second trajectory",
                                   "training member 1 of round 0", "between a stage's files and state.json"])
def test_a_run_killed_anywhere_resumes_to_the_same_labels(where, options, reference_run, tmp_path, monkeypatch):
    import pbcgnn.learn.explore
    import pbcgnn.learn.rounds
    import pbcgnn.train.committee

    out = tmp_path / "run"
    config = options()
    if where.startswith("labelling"):
        config = options(calculator="labellers:emt_crash")
        monkeypatch.setenv(CRASH_AFTER, "1")
    elif where.startswith("exploring"):
        monkeypatch.setattr(pbcgnn.learn.explore, "run_md", _crash_on_call(pbcgnn.learn.explore.run_md, 4))
    elif where.startswith("training"):
        monkeypatch.setattr(pbcgnn.train.committee, "fit_model", _crash_on_call(pbcgnn.train.committee.fit_model, 2))
    else:  # the 3rd save: after round 0's picks are written, before the state says so
        monkeypatch.setattr(pbcgnn.learn.rounds, "_save", _crash_on_call(pbcgnn.learn.rounds._save, 3))
    with pytest.raises(Crash):
        learn(config, out)
    monkeypatch.undo()
    result = learn(None, out, resume=True)
    assert result.status == "stopped" and result.labels == 4
    assert_same_run(out, reference_run)


@pytest.mark.usefixtures("one_thread_torch")
def test_a_process_killed_while_labelling_loses_no_label(committee, emt_water, reference_run, tmp_path):
    """SIGKILL in the middle of the labels (the second calculation), then ``pbcgnn learn --resume``."""
    from click.testing import CliRunner

    from pbcgnn.cli import main

    out = tmp_path / "run"
    args = [str(committee), "--out", str(out), "--structure", str(emt_water / "start.xyz"), "--temperature", "300",
            "--temperature", "500", "--steps", "20", "--sample-every", "4", "--threshold", "1e-4",
            "--max-per-round", "2", "--max-rounds", "2", "--epochs", "1", "--calculator", "labellers:emt_killed",
            "--device", "cpu"]
    env = {**os.environ, KILL_AFTER: "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    killed = subprocess.run([sys.executable, "-m", "pbcgnn.cli", "learn", *args], env=env, capture_output=True,
                            text=True, timeout=900)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert len(read_frames(out / "round_000" / "labelled.xyz")) == 1
    resumed = CliRunner().invoke(main, ["learn", "--out", str(out), "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert "stopped: round budget spent" in resumed.output
    assert_same_run(out, reference_run)
