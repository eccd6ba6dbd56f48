"""Evaluation as a stream: the metrics, predictions.xyz and plots of chunk-by-chunk evaluation equal
those of all predictions at once on a real file; memory does not grow with the number of frames."""
from __future__ import annotations

import gc
import json
import math
import tracemalloc

import ase.io
import numpy as np
import pytest

from pbcgnn.checkpoint import load_checkpoint
from pbcgnn.dataset import FrameDataset
from pbcgnn.errors import InputError
from pbcgnn.evaluation import running as running_module
from pbcgnn.evaluation.metrics import prediction_metrics
from pbcgnn.evaluation.predict import predict, predictions_to_atoms
from pbcgnn.evaluation.report import evaluate
from pbcgnn.evaluation.running import ReservoirSample, RunningMetrics
from pbcgnn.io import read_frames, write_frames

#: Scores taken from the sample of atoms: estimates once a file has more atoms than the sample.
SAMPLED = {"spearman_forces_atoms", "miscalibration_area_forces"}


def assert_same_metrics(streamed: dict, in_memory: dict, rel: float = 1e-12, skip=frozenset()) -> None:
    assert set(streamed) == set(in_memory)
    for key, value in in_memory.items():
        if key in skip:
            continue
        if isinstance(value, float) and math.isnan(value):
            assert math.isnan(streamed[key]), key
        else:
            assert streamed[key] == pytest.approx(value, rel=rel, abs=0), key


def in_memory(checkpoint, path, batch_size=2):
    """The predictions and metrics of the whole file at once (the reference)."""
    model, ckpt = load_checkpoint(checkpoint)
    pred = predict(model, FrameDataset(path, model.cutoff, elements=ckpt["elements"], periodic=True),
                   batch_size=batch_size)
    return pred, prediction_metrics(pred, model.calibration)


def test_reservoir_sample_does_not_depend_on_the_chunks():
    rows = np.arange(1000.0)[:, None]
    one = ReservoirSample(100, 1)
    one.add(rows)
    cut = ReservoirSample(100, 1)
    for start in range(0, 1000, 37):
        cut.add(rows[start:start + 37])
    np.testing.assert_array_equal(one.rows, cut.rows)
    assert one.seen == 1000 and len(one.rows) == 100 and np.all(np.diff(one.rows[:, 0]) > 0)  # stream order
    assert 300 < one.rows.mean() < 700  # drawn from the whole stream, not its start
    small = ReservoirSample(100, 1)
    small.add(rows[:60])
    np.testing.assert_array_equal(small.rows, rows[:60])  # fewer rows than the size: all, in order


def test_streamed_eval_equals_the_in_memory_one(random_committee, bundled_n2p2, tmp_path, small_chunks,
                                                one_thread):
    """Metrics to 1e-12 (sums in another order), predictions.xyz byte for byte."""
    results = evaluate(random_committee, [bundled_n2p2], tmp_path, batch_size=2)
    pred, expected = in_memory(random_committee, bundled_n2p2)
    assert expected["n_frames"] == 16 and "nll_forces" in expected
    for name in (str(bundled_n2p2), "total"):
        assert_same_metrics(results[name], expected)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["total"] == results["total"]
    ase.io.write(tmp_path / "in_memory.xyz", predictions_to_atoms(pred), format="extxyz")
    assert (tmp_path / "predictions.xyz").read_bytes() == (tmp_path / "in_memory.xyz").read_bytes()
    assert (tmp_path / "parity.png").is_file() and (tmp_path / "calibration.png").is_file()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no partial file left


def test_two_files_and_their_total(random_committee, bundled_n2p2, tmp_path, small_chunks, one_thread):
    frames = read_frames(bundled_n2p2)
    first, second = tmp_path / "first.xyz", tmp_path / "second.xyz"
    write_frames(first, frames[:7])
    write_frames(second, frames[7:])
    results = evaluate(random_committee, [first, second], tmp_path / "out", batch_size=2, plot=False)
    _, expected = in_memory(random_committee, bundled_n2p2)
    # frames 0-6 and 7-15 batch differently from the whole file: float32 sums to 1e-6
    assert_same_metrics(results["total"], expected, rel=1e-5)
    assert_same_metrics(results[str(first)], in_memory(random_committee, first)[1])
    assert results[str(second)]["n_frames"] == 9


def test_a_small_sample_changes_only_the_sampled_scores(random_committee, bundled_n2p2, monkeypatch):
    """With fewer sampled atoms than the file has, every sum and per-frame metric stays exact."""
    pred, expected = in_memory(random_committee, bundled_n2p2)
    model, _ = load_checkpoint(random_committee)
    running = RunningMetrics(sample_atoms=100)
    running.add(pred)
    streamed = running.metrics(model.calibration)
    assert_same_metrics(streamed, expected, skip=SAMPLED)
    assert len(running.sample.rows) == 100 and running.sample.seen == 1440
    assert -1 <= streamed["spearman_forces_atoms"] <= 1 and 0 <= streamed["miscalibration_area_forces"] <= 0.5
    monkeypatch.setattr(running_module, "SAMPLE_ATOMS", 100)
    assert len(running_module.RunningMetrics().sample.rows) == 0 and running_module.RunningMetrics().sample.size == 100


def test_a_bad_frame_midway_leaves_no_predictions_file(random_committee, bundled_n2p2, tmp_path, small_chunks):
    frames = read_frames(bundled_n2p2)
    frames[13].numbers[0] = 6  # carbon in the fourth chunk, after three were evaluated and written
    path = tmp_path / "late.xyz"
    write_frames(path, frames)
    with pytest.raises(InputError, match=r"late\.xyz: frame 13: element\(s\) C not in the model's training set"):
        evaluate(random_committee, [path], tmp_path / "out", batch_size=2)
    assert list((tmp_path / "out").iterdir()) == []


def test_memory_does_not_grow_with_the_frames(water_model, water_frames, tmp_path, monkeypatch):
    """Python/numpy memory (tracemalloc) of evaluations of 100 and of 500 frames: what is held
    after each chunk (garbage collected), and the peak, grow by less than 0.5 MB for the 400 more
    frames (the numbers kept per frame are about 10 KB). Holding the frames or all predictions, as
    an evaluation in memory does, would take about 6 KB per 3-atom frame here: 2.4 MB."""
    monkeypatch.setattr(running_module, "SAMPLE_ATOMS", 60)  # saturated after 20 frames
    held: list[int] = []
    add = RunningMetrics.add

    def add_and_measure(self, pred):
        gc.collect()  # PyG graphs are reference cycles: count what is live, not garbage not yet collected
        held.append(tracemalloc.get_traced_memory()[0])
        add(self, pred)

    monkeypatch.setattr(RunningMetrics, "add", add_and_measure)
    peaks, most = {}, {}
    for n in (20, 100, 500):  # the first run only warms up (imports, caches)
        path = tmp_path / f"water{n}.xyz"
        write_frames(path, water_frames(n))
        held.clear()
        gc.collect()
        gc.freeze()  # what exists now is never collected: gc.collect() above stays fast
        tracemalloc.start()
        try:
            evaluate(water_model, [path], tmp_path / f"out{n}", batch_size=16, plot=False)
            peaks[n], most[n] = tracemalloc.get_traced_memory()[1], max(held)
        finally:
            tracemalloc.stop()
            gc.unfreeze()
        assert len(read_frames(tmp_path / f"out{n}" / "predictions.xyz")) == n
    assert most[500] - most[100] < 500_000, f"held {most}"
    assert peaks[500] - peaks[100] < 500_000, f"peaks {peaks}"
