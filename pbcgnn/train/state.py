"""The typed state of a training run (saved in ``last.pt`` for a bit-exact resume) and its result."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

__all__ = ["TrainState", "FitResult"]


@dataclass
class TrainState:
    """Where the epoch loop stands; stored as plain types in ``last.pt``'s ``train_state["loop"]``.

    Attributes:
        epoch: epochs completed.
        best_loss: lowest validation loss so far (the one ``best.pt`` holds).
        bad_epochs: epochs since it last improved (early stopping).
        history: one record per epoch (losses, validation metrics, learning rate, times).
        best_metrics: validation metrics of ``best.pt``.
        elapsed_s: wall time of all epochs so far, resumed parts included, seconds.
        epoch_s: wall time of the last epoch, seconds (interpolates the budget within an epoch).
        anneal_from: the learning rate a plateau run's final anneal started from, once it has
            started (``None`` before).
        final_phase: the final phase's energy weight (``final_energy_weight``) is in use and
            ``best_loss`` counts from its first epoch.
    """

    epoch: int = 0
    best_loss: float = math.inf
    bad_epochs: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    best_metrics: dict[str, float] = field(default_factory=dict)
    elapsed_s: float = 0.0
    epoch_s: float = 0.0
    anneal_from: float | None = None
    final_phase: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Plain types for ``torch.load(weights_only=True)``; ``anneal_from`` only once set."""
        d = asdict(self)
        if d["anneal_from"] is None:
            del d["anneal_from"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainState:
        """The state stored by :meth:`to_dict` (keys absent in older checkpoints take their defaults)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def enter_final_phase(self) -> None:
        """The loss's weights change: earlier validation losses no longer compare."""
        self.final_phase, self.best_loss, self.bad_epochs = True, math.inf, 0

    def record(self, val: dict[str, float]) -> bool:
        """Count one validation result; True when it is the best so far."""
        if val["loss"] < self.best_loss:
            self.best_loss, self.bad_epochs, self.best_metrics = val["loss"], 0, val
            return True
        self.bad_epochs += 1
        return False


@dataclass
class FitResult:
    """What a run produced: checkpoint paths, best validation metrics, per-epoch history, why it
    stopped, and ``trained``, the epochs this call trained (0: a resumed run with nothing left to
    train, whose checkpoints were not written)."""

    best: Path
    last: Path
    metrics: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    stopped: str = "epochs"
    trained: int = 0
