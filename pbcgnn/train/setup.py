"""Setting up what a single-model run trains: model, reference energies, freezing, optimiser, EMA
and schedule, new or restored from ``last.pt``."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch.optim.lr_scheduler import ReduceLROnPlateau
from torch import Tensor
from torch.optim.swa_utils import AveragedModel

from ..checkpoint import build_model
from ..config import Config
from ..errors import InputError
from .reference import fit_reference
from .state import TrainState
from .transfer import freeze_parameters, load_init_weights

__all__ = ["Training", "set_up", "warmed_up_ema"]

log = logging.getLogger(__name__)


@dataclass
class Training:
    """The objects one model's training updates.

    Attributes:
        model: the raw (trained) weights.
        ema: their exponential moving average (``None`` with ``ema_decay`` 0), which validation
            and the saved checkpoints use.
        optimizer: AdamW over ``trainable``.
        scheduler: ReduceLROnPlateau on the validation loss (``plateau`` schedule).
        trainable: the parameters not frozen.
        reference: what :func:`pbcgnn.train.reference.fit_reference` fitted (kept for the record).
    """

    model: torch.nn.Module
    ema: AveragedModel | None
    optimizer: torch.optim.Optimizer
    scheduler: ReduceLROnPlateau
    trainable: list[torch.nn.Parameter]
    reference: dict[str, Any]

    @property
    def eval_model(self) -> torch.nn.Module:
        """The weights validated and saved: the EMA when there is one."""
        return self.ema.module if self.ema is not None else self.model

    def train_state(self, state: TrainState) -> dict[str, Any]:
        """Everything ``--resume`` needs, as plain types and tensors (``last.pt``'s ``train_state``)."""
        saved = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict(), "torch_rng": torch.get_rng_state(),
                 "loop": state.to_dict(), "reference": self.reference}
        if self.ema is not None:
            saved["ema"] = self.ema.state_dict()
        return saved

    def restore(self, saved: dict[str, Any]) -> TrainState:
        """Load :meth:`train_state`'s output back, including the global torch RNG."""
        self.model.load_state_dict(saved["model"])
        if self.ema is not None:
            self.ema.load_state_dict(saved["ema"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        torch.set_rng_state(saved["torch_rng"])
        return TrainState.from_dict(saved["loop"])


def warmed_up_ema(decay: float):
    r"""An EMA update for :class:`~torch.optim.swa_utils.AveragedModel` whose decay warms up with
    the number of updates :math:`n` (as TensorFlow's ``ExponentialMovingAverage`` and NequIP):

    .. math::
        \bar\theta \leftarrow d_n \bar\theta + (1 - d_n)\,\theta, \qquad
        d_n = \min\left(d, \frac{1 + n}{10 + n}\right)

    A fixed decay of 0.99 averages over ~100 steps from the first one, so early in a run (or in a
    short one) the average trails far behind weights that still move fast: 30 epochs of 40 water
    frames saved a model 50 meV/atom off in energy while the raw weights were at 1.3. With the
    warm-up the average spans about ``(10 + n) / 9`` steps until that reaches ``1 / (1 - d)``.
    """
    def update(ema_params: list[Tensor], params: list[Tensor], num_averaged: Tensor) -> None:
        n = num_averaged.to(torch.float64)  # updates before this one (0-d, on the params' device)
        d = torch.clamp((1.0 + n) / (10.0 + n), max=decay)
        for ema, param in zip(ema_params, params):
            if ema.is_floating_point():
                ema.lerp_(param, (1.0 - d).to(ema.dtype))
            else:  # integer buffers cannot be interpolated: follow the weights
                ema.copy_(param)
    return update


def _initialise(model: torch.nn.Module, config: Config, train_set, device: torch.device) -> dict[str, Any]:
    """Start weights (new, or a checkpoint's when fine-tuning) and the reference fitted to ``train_set``."""
    if config.transfer.init_from is not None:
        load_init_weights(model, config.transfer.init_from, config.transfer.init_member)
    return fit_reference(model, train_set, device, keep_scale=config.transfer.keep_scale)


def set_up(config: Config, train_set, device: torch.device,
           saved: dict[str, Any] | None = None) -> tuple[Training, TrainState]:
    """The model and its optimiser for ``config``, fitted to ``train_set``, or restored from ``saved``.

    Draws the initial weights from the global torch RNG (seeded by the caller); ``saved``, a
    ``last.pt`` ``train_state``, then overwrites weights, optimiser, EMA, schedule and RNG.

    Raises:
        InputError: every parameter is frozen.
    """
    tc = config.train
    model = build_model(config).to(device)
    reference = _initialise(model, config, train_set, device) if saved is None else saved["reference"]
    freeze_parameters(model, config.transfer.freeze)
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise InputError(f"every parameter is frozen ({', '.join(config.transfer.freeze)}): nothing to train")
    ema = AveragedModel(model, multi_avg_fn=warmed_up_ema(tc.ema_decay), use_buffers=True) \
        if tc.ema_decay > 0 else None
    optimizer = torch.optim.AdamW(trainable, lr=tc.lr, weight_decay=tc.weight_decay)
    scheduler = ReduceLROnPlateau(optimizer, factor=tc.lr_factor, patience=tc.lr_patience, min_lr=tc.min_lr)
    training = Training(model, ema, optimizer, scheduler, trainable, reference)
    return training, (TrainState() if saved is None else training.restore(saved))
