"""Query by committee: ranking a pool by spread, and the selection streamed over the pool (the
selection's physics: tests/train/committee)."""
from __future__ import annotations

import gc
import tracemalloc

import numpy as np
import pytest

from pbcgnn import select as select_module
from pbcgnn.checkpoint import load_checkpoint
from pbcgnn.dataset import FrameDataset
from pbcgnn.evaluation.metrics import SPREAD_MEASURES, frame_spread
from pbcgnn.evaluation.predict import predict
from pbcgnn.io import read_frames, write_frames
from pbcgnn.select import rank_by_spread, select_frames


def test_rank_by_spread():
    assert rank_by_spread(np.array([0.1, 0.5, 0.3, 0.5]), 3).tolist() == [1, 3, 2]


@pytest.mark.parametrize("by", SPREAD_MEASURES)
def test_streamed_selection_equals_the_in_memory_one(random_committee, bundled_n2p2, tmp_path, small_chunks,
                                                     one_thread, by):
    """Scored in chunks of 4 frames, picked from a last pass: the frames and spreads of a ranking of
    the whole pool predicted at once."""
    model, _ = load_checkpoint(random_committee)
    pred = predict(model, FrameDataset(bundled_n2p2, model.cutoff), batch_size=2)
    spread = frame_spread(pred.energy_std, pred.forces_std, pred.natoms)
    expected = rank_by_spread(spread[by], 5).tolist()
    rows = select_frames(random_committee, bundled_n2p2, 5, tmp_path / "picked.xyz", by=by, batch_size=2,
                         tabulate=False)
    assert [r["pool_index"] for r in rows] == expected
    for measure in SPREAD_MEASURES:
        np.testing.assert_allclose([r[measure] for r in rows], spread[measure][expected], rtol=1e-12)
    pool = read_frames(bundled_n2p2)
    written = read_frames(tmp_path / "picked.xyz", require_energy=False)
    assert [a.info["pool_index"] for a in written] == expected
    for atoms, k in zip(written, expected):
        np.testing.assert_array_equal(atoms.numbers, pool[k].numbers)
        np.testing.assert_allclose(atoms.positions, pool[k].positions, rtol=0, atol=1e-8)  # extxyz: 8 decimals


def test_tabulated_ranking_equals_the_exact_one(random_committee, bundled_n2p2, tmp_path, one_thread):
    """The default ranking, through tabulated filters, picks the frames the exact networks pick, with
    spreads equal within float32 rounding (the spreads differ by several percent between frames)."""
    exact = select_frames(random_committee, bundled_n2p2, 5, tmp_path / "exact.xyz", tabulate=False)
    fast = select_frames(random_committee, bundled_n2p2, 5, tmp_path / "fast.xyz")
    assert [r["pool_index"] for r in fast] == [r["pool_index"] for r in exact]
    for measure in SPREAD_MEASURES:
        values = np.array([r[measure] for r in exact])
        assert np.ptp(values) > 1e-3 * values.max()  # a ranking that means something
        np.testing.assert_allclose([r[measure] for r in fast], values, rtol=1e-4)


def test_selection_memory_does_not_grow_with_the_pool(random_committee, water_frames, tmp_path, monkeypatch):
    """Python/numpy memory (tracemalloc) held while scoring a pool of 100 and of 500 frames, and the
    peak, grow by less than 0.5 MB (three spreads per frame are kept); a pool held in memory would
    take about 6 KB per 3-atom frame: 2.4 MB."""
    held: list[int] = []
    real_predict = select_module.predict

    def predict_and_measure(*args, **kwargs):
        gc.collect()  # PyG graphs are reference cycles: count what is live, not garbage not yet collected
        held.append(tracemalloc.get_traced_memory()[0])
        return real_predict(*args, **kwargs)

    monkeypatch.setattr(select_module, "predict", predict_and_measure)
    peaks, most = {}, {}
    for n in (20, 100, 500):  # the first run only warms up (imports, caches)
        pool = tmp_path / f"pool{n}.xyz"
        write_frames(pool, water_frames(n))
        held.clear()
        gc.collect()
        gc.freeze()  # what exists now is never collected: gc.collect() above stays fast
        tracemalloc.start()
        try:
            rows = select_frames(random_committee, pool, 3, tmp_path / f"picked{n}.xyz", batch_size=16)
            peaks[n], most[n] = tracemalloc.get_traced_memory()[1], max(held)
        finally:
            tracemalloc.stop()
            gc.unfreeze()
        assert len(rows) == 3 and len(read_frames(tmp_path / f"picked{n}.xyz", require_energy=False)) == 3
    assert most[500] - most[100] < 500_000, f"held {most}"
    assert peaks[500] - peaks[100] < 500_000, f"peaks {peaks}"
