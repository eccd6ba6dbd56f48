"""Pure error and calibration metrics: committee spread measures and Spearman rank correlation."""
from __future__ import annotations

import numpy as np
import pytest

from pbcgnn.evaluation.metrics import frame_spread, spearman


def test_frame_spread_by_hand():
    natoms = np.array([2, 1])
    forces_std = np.array([[3.0, 0, 0], [0, 4.0, 0], [1.0, 2.0, 2.0]])  # per-atom |std| 3, 4, 3
    spread = frame_spread(np.array([0.2, 0.6]), forces_std, natoms)
    np.testing.assert_allclose(spread["energy"], [0.1, 0.6])
    np.testing.assert_allclose(spread["forces"], [np.sqrt(25 / 6), np.sqrt(9 / 3)])
    np.testing.assert_allclose(spread["max_force"], [4.0, 3.0])


def test_spearman_matches_scipy_with_ties():
    from scipy.stats import spearmanr

    rng = np.random.default_rng(0)
    a = rng.integers(0, 5, 40).astype(float)  # many ties
    b = a + rng.normal(0, 2, 40)
    assert spearman(a, b) == pytest.approx(spearmanr(a, b).statistic, abs=1e-12)
    assert spearman(np.arange(5), np.arange(5) ** 3) == pytest.approx(1.0)
    assert spearman([1, 2, np.nan, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)  # NaN pairs dropped
    assert np.isnan(spearman([1, 1, 1], [1, 2, 3]))
