"""The loop end to end on a tiny committee with EMT as the reference: one round, the stop rules,
failed reference calculations, the external step, a pool."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from pbcgnn.calculator import PbcgnnCalculator
from pbcgnn.checkpoint import load_checkpoint, read_checkpoint
from pbcgnn.config import FINETUNE_LR
from pbcgnn.errors import InputError
from pbcgnn.io import read_frames, write_frames
from pbcgnn.learn import learn
from pbcgnn.learn.pick import configuration_rmsd
from pbcgnn.model import Committee

from .conftest import emt_labelled


def _state(out):
    return json.loads((out / "state.json").read_text())


def _record(out, r):
    return json.loads((out / f"round_{r:03d}" / "round.json").read_text())


def test_one_round_explores_picks_labels_and_retrains(options, tmp_path):
    out = tmp_path / "run"
    result = learn(options(max_rounds=1, min_rmsd=0.02), out)
    assert (result.status, result.round, result.labels) == ("stopped", 1, 2)
    assert result.reason == "round budget spent: 1 rounds, --max-rounds 1"
    folder = out / "round_000"
    rows = list(csv.DictReader(open(folder / "scores.csv")))
    assert len(rows) == 10  # 2 trajectories x 5 samples (steps 4..20; the start is not explored)
    assert {r["id"][:9] for r in rows} == {"r000-md00", "r000-md01"}
    # a frame's score is the committee's largest calibrated atomic force spread there, |sigma_i| in eV/A
    sampled = read_frames(folder / "explore" / "md00" / "trajectory.xyz", require_energy=False)[1]
    assert sampled.info["step"] == 4
    calc = PbcgnnCalculator.from_checkpoint(options().committee)
    sampled.calc = calc
    sampled.get_forces()
    row = next(r for r in rows if r["id"] == "r000-md00-s000004")
    spread = np.linalg.norm(calc.results["forces_std"], axis=1)
    assert float(row["max_force"]) == pytest.approx(spread.max(), rel=1e-5)
    raw = np.linalg.norm(calc.results["forces_std_raw"], axis=1).max()
    assert spread.max() / raw == pytest.approx(calc.model.calibration.forces.a, rel=1e-9) != pytest.approx(1.0)
    # the picks are the largest max-force spreads that lie min_rmsd apart
    picks = read_frames(folder / "to_label.xyz", require_energy=False)
    assert len(picks) == 2 and configuration_rmsd(picks[0], picks[1]) >= 0.02
    top = max(rows, key=lambda r: float(r["max_force"]))
    assert picks[0].info["learn_id"] == top["id"]
    assert picks[0].info["learn_spread"] == pytest.approx(float(top["max_force"]), rel=1e-12)
    # labels: EMT's energies and forces of the picked structures, each with its id
    labelled = read_frames(folder / "labelled.xyz")
    assert [a.info["learn_id"] for a in labelled] == [a.info["learn_id"] for a in picks]
    for atoms, ref in zip(labelled, emt_labelled(picks)):
        assert atoms.get_potential_energy() == pytest.approx(ref.get_potential_energy(), abs=1e-9)
        np.testing.assert_allclose(atoms.get_forces(), ref.get_forces(), atol=1e-7)  # extxyz: 8 decimals
    # retrained: a committee fine-tuned from the first one on its data and the labels
    model, ckpt = load_checkpoint(folder / "committee" / "best.pt")
    assert isinstance(model, Committee) and len(model.members) == 2
    assert ckpt["config"]["transfer"]["init_from"] == options().committee
    assert ckpt["config"]["train"]["lr"] == FINETUNE_LR < read_checkpoint(options().committee)["config"]["train"]["lr"]
    assert str(folder / "labelled.xyz") in ckpt["config"]["data"]["paths"]
    assert _state(out)["committee"] == str(folder / "committee" / "best.pt")
    record = _record(out, 0)
    assert (record["explored"], record["above_threshold"], record["picked"], record["labelled"]) == (10, 10, 2, 2)
    assert record["fraction"] == 1.0 and record["failed"] == 0 and "force_rmse_mev_per_A" in record["validation"]


def test_the_stop_rule_fires_when_few_frames_are_uncertain(options, tmp_path):
    out = tmp_path / "run"
    result = learn(options(threshold=1e6), out)
    assert result.status == "stopped" and result.labels == 0 and result.round == 0
    assert result.reason.startswith("converged: 0.0 % of 10 explored frames above the threshold 1e+06 eV/A")
    assert not (out / "round_000" / "to_label.xyz").exists() and not (out / "round_000" / "committee").exists()
    assert _record(out, 0)["stopped"] == result.reason
    # resumed with a stop fraction of 0 and a low threshold kept: still nothing above it, so it stops again
    assert learn(None, out, resume=True, given={"stop_fraction": 0.0}).reason.startswith("converged: 0.0 %")


def test_the_label_budget_stops_the_loop_across_rounds(options, tmp_path):
    out = tmp_path / "run"
    result = learn(options(max_labels=3, max_rounds=5), out)
    assert (result.status, result.labels, result.round) == ("stopped", 3, 2)
    assert result.reason == "label budget spent: 3 labels, --max-labels 3"
    assert [_record(out, r)["labelled"] for r in (0, 1)] == [2, 1]  # the second round picks only what is left
    # a larger budget on --resume goes on from where it stopped
    more = learn(None, out, resume=True, given={"max_labels": 4})
    assert (more.labels, more.round) == (4, 3)


def test_a_failing_reference_calculation_is_recorded_and_skipped(options, tmp_path):
    out = tmp_path / "run"
    result = learn(options(max_rounds=1, max_per_round=3, calculator="labellers:failing_second"), out)
    assert result.status == "stopped" and result.labels == 2
    folder = out / "round_000"
    picks = [a.info["learn_id"] for a in read_frames(folder / "to_label.xyz", require_energy=False)]
    failures = [json.loads(line) for line in (folder / "failed.jsonl").read_text().splitlines()]
    assert failures == [{"id": picks[1], "error": "RuntimeError: SCF did not converge"}]
    assert [a.info["learn_id"] for a in read_frames(folder / "labelled.xyz")] == [picks[0], picks[2]]
    record = _record(out, 0)
    assert (record["labelled"], record["failed"]) == (2, 1) and record["failures"] == {picks[1]: failures[0]["error"]}
    assert (folder / "committee" / "best.pt").is_file()  # trained on the two that worked


def test_the_external_step_stops_and_resumes_once_the_labels_are_there(options, tmp_path):
    out = tmp_path / "run"
    waiting = learn(options(calculator=None, max_rounds=1, max_per_round=3), out)
    folder = out / "round_000"
    assert waiting.status == "waiting" and waiting.to_label == folder / "to_label.xyz"
    assert not (folder / "labelled.xyz").exists() and _state(out)["stage"] == "label"
    picks = read_frames(folder / "to_label.xyz", require_energy=False)
    labelled = emt_labelled(picks)
    for atoms, pick in zip(labelled, picks):
        atoms.info["learn_id"] = pick.info["learn_id"]
    write_frames(folder / "labelled.xyz", [labelled[0], labelled[2]])  # the second one failed outside
    done = learn(None, out, resume=True)
    assert done.status == "stopped" and done.labels == 2
    record = _record(out, 0)
    assert (record["labelled"], record["failed"]) == (2, 1)
    assert record["failures"] == {picks[1].info["learn_id"]: "not in labelled.xyz"}
    paths = read_checkpoint(folder / "committee" / "best.pt")["config"]["data"]["paths"]
    assert paths[-1] == str(folder / "labelled.xyz")


def test_a_pool_is_scored_and_no_frame_is_labelled_twice(options, emt_water, tmp_path):
    out = tmp_path / "run"
    result = learn(options(structures=(), pool=str(emt_water / "pool.xyz"), max_rounds=3, min_rmsd=0.0), out)
    assert result.labels == 3 and result.reason.startswith("nothing explored")  # 3 pool frames: 2, then 1, then none
    ids = [[a.info["learn_id"] for a in read_frames(out / f"round_{r:03d}" / "labelled.xyz")] for r in (0, 1)]
    assert sorted(ids[0] + ids[1]) == ["pool-000000", "pool-000001", "pool-000002"]
    assert [_record(out, r)["explored"] for r in (0, 1, 2)] == [3, 1, 0]


def test_a_trajectory_that_blows_up_keeps_its_frames_and_the_loop_goes_on(options, tmp_path):
    out = tmp_path / "run"
    result = learn(options(max_rounds=1, timestep_fs=3.0, steps=200, temperatures_K=(3000.0,)), out)
    record = _record(out, 0)
    assert list(record["md_failures"]) == ["md00"] and "during MD steps" in record["md_failures"]["md00"]
    assert (out / "round_000" / "explore" / "md00" / "failed.json").is_file()
    steps = [int(r["id"][-6:]) for r in csv.DictReader(open(out / "round_000" / "scores.csv"))]
    assert steps == list(range(4, 4 * len(steps) + 1, 4)) and 0 < len(steps) < 50  # the frames before it stopped
    assert result.status == "stopped" and result.labels == 2


def test_a_failed_trajectory_blocks_the_stop_rule_and_its_last_frame_is_labelled(options, tmp_path):
    out = tmp_path / "run"  # no frame above the threshold: only the blow-up says the committee is not there yet
    result = learn(options(max_rounds=1, threshold=1e6, timestep_fs=3.0, steps=200, temperatures_K=(3000.0,)), out)
    record = _record(out, 0)
    assert list(record["md_failures"]) == ["md00"] and record["above_threshold"] == 0 and record["fraction"] == 0.0
    assert record["candidates"] == 1 and record["picked"] == 1 and record["labelled"] == 1
    last = [r["id"] for r in csv.DictReader(open(out / "round_000" / "scores.csv"))][-1]
    [picked] = read_frames(out / "round_000" / "to_label.xyz", require_energy=False)
    assert picked.info["learn_id"] == last and picked.info["learn_failure"] is True
    assert result.reason.startswith("round budget spent") and result.labels == 1


def test_a_round_whose_trajectories_broke_before_any_sample_says_what_to_try(options, tmp_path):
    out = tmp_path / "run"  # sampled every 200 steps: the blow-up (before step 200) leaves no frame to label
    with pytest.raises(InputError, match="1 trajectories failed before their first sampled frame.*--sample-every"):
        learn(options(max_rounds=1, threshold=1e6, timestep_fs=3.0, steps=200, sample_every=200,
                      temperatures_K=(3000.0,)), out)
    record = _record(out, 0)
    assert record["explored"] == 0 and list(record["md_failures"]) == ["md00"]
    assert not (out / "round_000" / "to_label.xyz").exists()
