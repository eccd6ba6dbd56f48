"""The loop's parts on hand-made inputs: picks and their distance, the stop rule, the labels file,
calculators named module:function, options of a resumed run."""
from __future__ import annotations

import json

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.emt import EMT

from pbcgnn.errors import InputError
from pbcgnn.io import read_frames, write_frames
from pbcgnn.learn import LearnConfig
from pbcgnn.learn.label import (ID, failed_ids, label_frames, labelled_ids, load_calculator, read_external,
                                structure_of, trim_torn_tail)
from pbcgnn.learn.pick import configuration_rmsd, pick
from pbcgnn.learn.config import resumed_options
from pbcgnn.learn.rounds import stop_reason


def _box(shift: float = 0.0, n: int = 4) -> Atoms:
    pos = np.array([[1.0 + shift, 1.0, 1.0], [3.0, 3.0, 3.0], [5.0, 1.0, 4.0], [2.0, 6.0, 2.0]])[:n]
    return Atoms("H" * n, positions=pos, cell=np.diag([8.0, 8.0, 8.0]), pbc=True)


def test_rmsd_takes_the_nearest_image_and_refuses_other_atoms():
    a, b = _box(), _box()
    b.positions[0] += [8.0, 0.0, -8.0]  # the same atom one lattice vector away: the same configuration
    assert configuration_rmsd(a, b) == pytest.approx(0.0, abs=1e-12)
    b.positions[1] += [0.0, 0.4, 0.0]
    assert configuration_rmsd(a, b) == pytest.approx(np.sqrt(0.16 / 4))
    assert configuration_rmsd(a, _box(n=3)) == float("inf")
    c = _box()
    c.set_cell(np.diag([8.0, 8.0, 9.0]))
    assert configuration_rmsd(a, c) == float("inf")


def test_pick_takes_the_largest_spreads_never_two_close_ones_and_caps():
    frames = [_box(0.0), _box(0.05), _box(1.0), _box(2.0), _box(3.0)]  # frames 0 and 1 are 0.025 A RMSD apart
    spreads = [0.9, 1.0, 0.5, 0.7, 0.1]
    assert pick(frames, spreads, 3, min_rmsd=0.1) == [1, 3, 2]  # 0 lies within 0.1 A of 1, picked first
    assert pick(frames, spreads, 3, min_rmsd=0.0) == [1, 0, 3]
    assert pick(frames, spreads, 10, min_rmsd=0.1) == [1, 3, 2, 4]
    assert pick(frames, spreads, 1, min_rmsd=0.1) == [1]


def _config(**changes) -> LearnConfig:
    return LearnConfig(**{"committee": "c.pt", "pool": "p.xyz", "threshold": 0.1, "stop_fraction": 0.2,
                          "max_labels": 10, **changes})


def test_stop_rule():
    config = _config()
    assert stop_reason(0.5, 100, 3, config) is None
    assert stop_reason(0.2, 100, 3, config) is None  # at the fraction: goes on
    assert stop_reason(0.19, 100, 3, config).startswith("converged: 19.0 % of 100 explored frames")
    assert stop_reason(0.5, 100, 10, config).startswith("label budget spent: 10 labels")
    assert stop_reason(0.0, 0, 0, config).startswith("nothing explored")
    assert stop_reason(0.0, 50, 0, _config(stop_fraction=0.0)).startswith("converged: 0.0 %")  # nothing to pick
    # a round whose dynamics broke has not converged, however few frames lie above; budgets still stop it
    assert stop_reason(0.0, 50, 3, config, failed=1) is None and stop_reason(0.0, 0, 3, config, failed=2) is None
    assert stop_reason(0.0, 50, 10, config, failed=1).startswith("label budget spent")


def _to_label(n: int) -> list[Atoms]:
    return [structure_of(_box(0.3 * k), **{ID: f"pool-{k:06d}"}) for k in range(n)]


class _FailsOn(EMT):
    """EMT that raises for the frame whose first atom sits at x = ``x``; counts its calculations."""

    def __init__(self, x: float) -> None:
        super().__init__()
        self.x, self.calls = x, 0

    def calculate(self, atoms=None, *args, **kwargs):
        self.calls += 1
        if abs(atoms.positions[0, 0] - self.x) < 1e-9:
            raise RuntimeError("SCF did not converge\nin 200 iterations")
        super().calculate(atoms, *args, **kwargs)


def test_a_failing_frame_is_recorded_and_skipped_and_nothing_is_labelled_twice(tmp_path):
    frames = _to_label(4)
    labels, failures = tmp_path / "labelled.xyz", tmp_path / "failed.jsonl"
    calc = _FailsOn(x=1.3)  # frame 1
    assert label_frames(frames[:3], calc, labels, failures) == (2, 1)
    assert labelled_ids(labels) == ["pool-000000", "pool-000002"]
    assert failed_ids(failures) == {"pool-000001": "RuntimeError: SCF did not converge"}
    calc.calls = 0
    assert label_frames(frames, calc, labels, failures) == (1, 0)  # only the new frame is computed
    assert calc.calls == 1
    assert labelled_ids(labels) == ["pool-000000", "pool-000002", "pool-000003"]
    energies = [a.get_potential_energy() for a in read_frames(labels)]
    reference = [structure_of(frames[k]) for k in (0, 2, 3)]
    for atoms in reference:
        atoms.calc = EMT()
    assert energies == pytest.approx([a.get_potential_energy() for a in reference], abs=1e-12)


def test_a_torn_last_frame_is_cut(tmp_path):
    labels = tmp_path / "labelled.xyz"
    label_frames(_to_label(2), EMT(), labels, tmp_path / "failed.jsonl")
    whole = labels.read_bytes()
    labels.write_bytes(whole[: len(whole) - 40])  # a kill inside the second frame's write
    trim_torn_tail(labels)
    assert labelled_ids(labels) == ["pool-000000"]
    assert whole.startswith(labels.read_bytes())
    trim_torn_tail(labels)  # a whole file is left alone
    assert labelled_ids(labels) == ["pool-000000"]


def test_external_labels_are_checked_and_missing_ones_recorded(tmp_path):
    frames = _to_label(3)
    labels, failures = tmp_path / "labelled.xyz", tmp_path / "failed.jsonl"
    with pytest.raises(InputError, match="found no file"):
        read_external(frames, labels, failures)
    done = []
    for atoms in frames[:2]:
        atoms = atoms.copy()
        atoms.calc = EMT()
        atoms.get_potential_energy()
        done.append(atoms)
    write_frames(labels, done, format="extxyz")
    assert read_external(frames, labels, failures) == (2, 1)
    assert failed_ids(failures) == {"pool-000002": "not in labelled.xyz"}
    write_frames(labels, [done[0], done[0]], format="extxyz")
    with pytest.raises(InputError, match="a second frame with learn_id 'pool-000000'"):
        read_external(frames, labels, failures)


@pytest.mark.parametrize("spec, message", [
    ("labellers", "expected --calculator as module:function"),
    ("no_such_module_for_pbcgnn:make", "cannot import module 'no_such_module_for_pbcgnn' (ModuleNotFoundError"),
    ("labellers:nope", "module 'labellers' has no function 'nope'"),
    ("labellers:raising", "raising() raised RuntimeError: no licence for the reference code"),
    ("labellers:not_a_calculator", "expected not_a_calculator() to return an ASE calculator, found int"),
])
def test_a_calculator_that_cannot_be_made_is_named(spec, message):
    with pytest.raises(InputError) as err:
        load_calculator(spec)
    assert message in str(err.value) and spec in str(err.value)


def test_load_calculator_calls_the_function():
    assert isinstance(load_calculator("labellers:emt"), EMT)


def test_a_resumed_run_keeps_its_options():
    stored = _config()
    assert resumed_options(stored, {"max_labels": 20, "stop_fraction": 0.1}).max_labels == 20
    with pytest.raises(InputError, match="--threshold 0.2 given, but this run was started with 0.1"):
        resumed_options(stored, {"threshold": 0.2})
    assert resumed_options(stored, {"threshold": 0.1}) == stored
    assert LearnConfig.from_dict(json.loads(json.dumps(stored.to_dict()))) == stored
