"""Active learning (``pbcgnn learn``): rounds of committee exploration, selection, labelling and retraining.

* :mod:`pbcgnn.learn.config`: :class:`LearnConfig`, the options.
* :mod:`pbcgnn.learn.explore`: committee MD (or a pool) and the calibrated spread of every frame.
* :mod:`pbcgnn.learn.pick`: the most uncertain frames, none two of nearly the same configuration.
* :mod:`pbcgnn.learn.label`: ASE calculators named ``module:function``, the external step, labels on disk.
* :mod:`pbcgnn.learn.retrain`: the committee fine-tuned on every label so far.
* :mod:`pbcgnn.learn.rounds`: :func:`learn`, the loop; its state on disk, resume and the stop rule.

Names are re-exported lazily, so the CLI reads :class:`LearnConfig` defaults without torch.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "LearnConfig": "pbcgnn.learn.config",
    "LearnResult": "pbcgnn.learn.rounds",
    "learn": "pbcgnn.learn.rounds",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'pbcgnn.learn' has no attribute {name!r}")


if TYPE_CHECKING:  # for type checkers and IDEs only
    from .config import LearnConfig
    from .rounds import LearnResult, learn
