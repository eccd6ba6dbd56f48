"""Query by committee: ranking a pool by spread (the selection itself: tests/train/committee)."""
from __future__ import annotations

import numpy as np

from pbcgnn.select import rank_by_spread


def test_rank_by_spread():
    assert rank_by_spread(np.array([0.1, 0.5, 0.3, 0.5]), 3).tolist() == [1, 3, 2]
