"""Frozen dataclasses for data, model and training options: the only place defaults live."""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from .errors import InputError
from .units import ENERGY_UNITS, LENGTH_UNITS

__all__ = ["DataConfig", "ModelConfig", "TrainConfig", "TransferConfig", "CommitteeConfig", "Config", "GROUPS",
           "parse_freeze", "FINETUNE_LR", "RECIPES"]

#: Learning rate of fine-tuning when none is given (``pbcgnn train --init-from``, ``pbcgnn learn``'s
#: retraining). The from-scratch 3e-3 undoes a pretrained model in its first Adam steps
#: (validation forces 652 meV/A after one epoch of 16 DeePMD frames, against 100 at 3e-4), and
#: 3e-4 ends 25 % lower (``benchmarks/transfer/README.md``, "Fine-tuning with few labels").
FINETUNE_LR = 3e-4

#: Each architecture's measured recipe where it departs from the dataclass defaults (SchNet's):
#: ``pbcgnn train --model NAME`` starts from it for every option not given ("section.field": value).
#: PaiNN's is its Cheng pilots' and long run's: 20 sine functions, a 5 A cutoff and lr 1e-3 reached
#: 87.5 meV/A in 45 CPU-minutes (6 A: 91.0) and 54.1 after 480 (``benchmarks/accuracy/README.md``).
RECIPES: dict[str, dict[str, object]] = {
    "schnet": {},
    "painn": {"model.num_rbf": 20, "model.cutoff": 5.0, "train.lr": 1e-3},
}


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise InputError(message)


#: Freeze group -> attribute names it covers, the same in every architecture (:class:`pbcgnn.model.EnergyModel`).
GROUPS = {"embedding": ("embedding",), "interactions": ("interactions",), "readout": ("lin1", "lin2")}


def _items(spec: str | Sequence[str]) -> list[str]:
    parts = [spec] if isinstance(spec, str) else list(spec)
    return [item.strip() for part in parts for item in str(part).split(",")]


def parse_freeze(spec: str | Sequence[str], num_interactions: int | None = None) -> dict[str, list[int] | None]:
    """Parse a freeze spec such as ``"embedding,interactions:0-2,readout"``.

    Args:
        spec: a comma-separated string or a sequence of items (each may hold commas);
            empty (``""`` or ``()``) freezes nothing.
        num_interactions: when given, block indices must be below it.

    Returns:
        Group name -> sorted block indices (``interactions``) or ``None`` (the whole group).

    Raises:
        InputError: an unknown group, a malformed or reversed range, an index out of range.
    """
    items = _items(spec)
    if items == [""]:
        return {}
    groups: dict[str, list[int] | None] = {}
    for item in items:
        name, _, rng = item.partition(":")
        name = name.strip()
        if name not in GROUPS or (rng and name != "interactions"):
            raise InputError(f"expected freeze groups {', '.join(GROUPS)} or interactions:I[-J], found {item!r}")
        if not rng:
            groups[name] = None
            continue
        lo, dash, hi = rng.partition("-")
        try:
            first, last = int(lo), int(hi) if dash else int(lo)
        except ValueError:
            raise InputError(f"expected interactions:I or interactions:I-J with integers, found {item!r}") from None
        if first < 0 or last < first:
            raise InputError(f"expected 0 <= I <= J in interactions:I-J, found {item!r}")
        if num_interactions is not None and last >= num_interactions:
            raise InputError(f"freeze {item!r}: the model has interaction blocks 0-{num_interactions - 1}")
        if groups.get(name, []) is not None:
            groups[name] = sorted(set(groups.get(name) or []) | set(range(first, last + 1)))
    return groups


#: Where training graphs live: :attr:`DataConfig.storage`.
STORAGES = ("auto", "memory", "disk")


@dataclass(frozen=True)
class DataConfig:
    """Which frames to train on and how to read them.

    Attributes:
        paths: training data files (n2p2, extended XYZ or any ASE format).
        val_paths: optional separate validation files; otherwise ``val_fraction`` of
            ``paths`` is held out at random (seeded by ``split_seed``).
        format, length_unit, energy_unit: as :func:`pbcgnn.io.read_frames`.
        cache_dir: where processed graphs (and frame stores) are cached; ``None`` keeps graphs in
            memory only (frame stores then go to :func:`pbcgnn.dataset.streamed.default_store_root`).
        storage: ``"memory"`` keeps every graph in RAM (:class:`pbcgnn.dataset.FrameDataset`);
            ``"disk"`` keeps positions and labels in an on-disk store and builds each graph when a
            batch needs it (:class:`pbcgnn.dataset.StreamedFrameDataset`); ``"auto"`` takes
            memory when the graphs' estimated size fits in half the free memory, else disk.
        energy_key, forces_key, stress_key: columns holding the labels in extended XYZ and
            other ASE formats (e.g. ``REF_forces``); ``None``: the usual names
            (:mod:`pbcgnn.io.labels`). Stored in checkpoints, so evaluation reads the same columns.
    """

    paths: tuple[str, ...] = ()
    val_paths: tuple[str, ...] = ()
    val_fraction: float = 0.1
    split_seed: int = 0
    format: str | None = None
    length_unit: str | None = None
    energy_unit: str | None = None
    cache_dir: str | None = None
    energy_key: str | None = None
    forces_key: str | None = None
    stress_key: str | None = None
    storage: str = "auto"

    def validate(self) -> None:
        _check(len(self.paths) > 0, "expected at least one training data file, found none")
        for name in ("energy_key", "forces_key", "stress_key"):
            key = getattr(self, name)
            _check(key is None or (isinstance(key, str) and key.strip() == key != ""),
                   f"expected {name} to be a column name, found {key!r}")
        _check(self.storage in STORAGES, f"expected storage to be one of {', '.join(STORAGES)}, found {self.storage!r}")
        _check(0.0 < self.val_fraction < 1.0 or bool(self.val_paths),
               f"expected 0 < val_fraction < 1, found {self.val_fraction}")
        _check(self.length_unit is None or self.length_unit.lower() in LENGTH_UNITS,
               f"unknown length unit {self.length_unit!r}")
        _check(self.energy_unit is None or self.energy_unit.lower() in ENERGY_UNITS,
               f"unknown energy unit {self.energy_unit!r}")


#: The architectures ``pbcgnn train --model`` builds (:data:`pbcgnn.model.ARCHITECTURES`).
ARCHITECTURES = ("schnet", "painn")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture and size: :class:`pbcgnn.model.SchNet` or :class:`pbcgnn.model.PaiNN`.

    ``num_filters`` is SchNet's convolution width (PaiNN's filters are 3 x ``hidden_channels``);
    ``dtype`` is float32 or float64. Checkpoints written before the architecture was stored
    load as SchNet (the default).
    """

    architecture: str = "schnet"
    hidden_channels: int = 64
    num_filters: int = 64
    num_interactions: int = 3
    num_rbf: int = 32
    cutoff: float = 6.0
    dtype: str = "float32"

    def validate(self) -> None:
        for name in ("hidden_channels", "num_filters", "num_interactions", "num_rbf"):
            _check(getattr(self, name) >= 1, f"expected {name} >= 1, found {getattr(self, name)}")
        _check(self.cutoff > 0, f"expected a positive cutoff, found {self.cutoff}")
        _check(self.dtype in ("float32", "float64"), f"expected dtype float32 or float64, found {self.dtype!r}")
        _check(self.architecture in ARCHITECTURES,
               f"expected a model in {', '.join(ARCHITECTURES)}, found {self.architecture!r}")

    def model_kwargs(self) -> dict[str, Any]:
        """The architecture's constructor arguments."""
        skip = {"dtype", "architecture"} | ({"num_filters"} if self.architecture != "schnet" else set())
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}


#: Smallest Huber delta (eV/atom, eV/A): the float32 resolution of forces near 1 eV/A is ~1e-7, and
#: below this the loss is L1 scaled by delta, whose gradients approach Adam's epsilon (1e-8).
MIN_HUBER_DELTA = 1e-6


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation. The loss is ``energy_weight * MSE(E/N) + force_weight * MSE(F)``
    in eV/atom and eV/Angstrom; frames without forces add no force term.

    Attributes:
        max_minutes: stop after this wall-clock time, resumed parts included (``None``: no
            limit). A run limited by time is not bit-reproducible across machines; epochs are.
        stop_after: pause after this many wall-clock minutes of this invocation (at the end of
            an epoch, ``last.pt`` saved), leaving the schedule, which follows ``epochs`` and
            ``max_minutes``, untouched: ``--resume`` continues the run as if it had not stopped.
            For runs longer than one invocation; not stored for the resumed part.
        patience: early stop after this many epochs without a better validation loss.
        lr_schedule: ``cosine`` decays the learning rate from ``lr`` to ``min_lr`` along half a
            cosine over the run's budget, step by step: the progress is the larger of the
            fraction of ``epochs`` done and the fraction of ``max_minutes`` used, so a
            time-limited run ends at ``min_lr`` whatever the machine. ``plateau`` halves it
            (``lr_factor``) after ``lr_patience`` epochs without a better validation loss, and
            then, over the last ``anneal`` fraction of the budget, decays it from wherever the
            plateaus left it to ``min_lr`` along half a cosine. Noisy validation losses seldom
            stall for ``lr_patience`` epochs in a run limited by time, which would otherwise end
            at the starting rate.
        anneal: fraction of the budget (epochs or minutes, as for ``cosine``) that ends a
            ``plateau`` run with a decay to ``min_lr``; 0 never decays there.
        final_energy_weight: the loss's energy weight at the end of that final fraction of the
            budget (either schedule), as MACE's SWA stage raises it to fit energies once forces
            are learnt; over the phase it rises from ``energy_weight`` as the rate falls
            (:func:`pbcgnn.train.schedule.energy_weight`). ``None`` keeps ``energy_weight``.
            Validation weighs energies by it throughout the phase; those losses do not compare
            with earlier ones, so ``best.pt`` and early stopping start afresh with the phase.
        huber_delta: train on Huber losses of the per-atom energy and force-component errors
            with this delta (eV/atom, eV/A; scaled to equal the squares below it), as MACE does;
            ``None`` trains on squares; at least :data:`MIN_HUBER_DELTA`. Validation (``best.pt``,
            the plateaus, early stopping) stays on the squared errors that the reported RMSEs measure.
        lr_patience, lr_factor: ReduceLROnPlateau on the validation loss (``plateau`` only).
        min_lr: the floor of either schedule.
        ema_decay: exponential moving average of the weights used for validation and
            for the saved model (0 disables it).
        clip_grad: maximum gradient norm (0 disables clipping).
        device: ``auto`` (CUDA when present), ``cpu`` or ``cuda``.
        workers: ``DataLoader`` worker processes that read frames and build graphs while the
            model trains (0: in the training process). Batches are the same for any number.
    """

    epochs: int = 200
    batch_size: int = 4
    lr: float = 3e-3
    weight_decay: float = 0.0
    energy_weight: float = 10.0
    force_weight: float = 1.0
    ema_decay: float = 0.99
    lr_schedule: str = "plateau"
    lr_patience: int = 10
    lr_factor: float = 0.5
    anneal: float = 0.2
    final_energy_weight: float | None = None
    huber_delta: float | None = None
    min_lr: float = 1e-6
    patience: int = 40
    clip_grad: float = 10.0
    seed: int = 0
    device: str = "auto"
    workers: int = 0
    max_minutes: float | None = None
    stop_after: float | None = None

    def validate(self) -> None:
        for f in fields(self):  # NaN fails every comparison below, but inf passes them
            value = getattr(self, f.name)
            _check(not isinstance(value, float) or math.isfinite(value),
                   f"expected a finite {f.name} (--{f.name.replace('_', '-')}), found {value}")
        _check(self.epochs >= 1, f"expected epochs >= 1, found {self.epochs}")
        _check(self.batch_size >= 1, f"expected batch_size >= 1, found {self.batch_size}")
        _check(self.workers >= 0, f"expected workers >= 0, found {self.workers}")
        _check(self.lr > 0, f"expected lr > 0, found {self.lr}")
        _check(self.energy_weight >= 0 and self.force_weight >= 0, "expected non-negative loss weights")
        _check(self.energy_weight + self.force_weight > 0, "expected a non-zero loss weight")
        _check(0.0 <= self.ema_decay < 1.0, f"expected 0 <= ema_decay < 1, found {self.ema_decay}")
        _check(self.lr_schedule in ("cosine", "plateau"),
               f"expected lr_schedule cosine or plateau, found {self.lr_schedule!r}")
        _check(0.0 <= self.min_lr < self.lr, f"expected 0 <= min_lr < lr, found min_lr {self.min_lr}, lr {self.lr}")
        _check(0.0 <= self.anneal <= 1.0, f"expected 0 <= anneal <= 1, found {self.anneal}")
        _check(self.final_energy_weight is None or (self.final_energy_weight >= 0 and self.anneal > 0),
               "expected final_energy_weight >= 0, with anneal > 0 (the final phase it applies to)")
        _check(self.huber_delta is None or self.huber_delta >= MIN_HUBER_DELTA,
               f"expected huber_delta (--huber-delta) >= {MIN_HUBER_DELTA:g} eV/atom and eV/A, found "
               f"{self.huber_delta}: below that the loss's gradients (2 delta per error) vanish in float32 "
               "and Adam's epsilon, and nothing trains")
        _check(0.0 < self.lr_factor < 1.0, f"expected 0 < lr_factor < 1, found {self.lr_factor}")
        _check(self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"),
               f"expected device auto, cpu or cuda, found {self.device!r}")
        _check(self.max_minutes is None or self.max_minutes > 0, "expected max_minutes > 0")
        _check(self.stop_after is None or self.stop_after > 0, "expected stop_after > 0")


@dataclass(frozen=True)
class TransferConfig:
    """Fine-tuning from a trained checkpoint, e.g. to a higher level of theory.

    The architecture and cutoff come from the checkpoint (:func:`pbcgnn.train.transfer.resolve_config`;
    ``model.dtype`` stays this run's). The per-element reference energies E0 are always refitted
    on the new training frames, as the residual of the pretrained network: absolute energies of
    two levels of theory differ by eV per atom.

    Attributes:
        init_from: checkpoint to start from (``None``: train from scratch).
        init_member: for a committee checkpoint, the member to start from (0-based).
        freeze: parameter groups kept fixed: ``embedding``, ``interactions`` (all),
            ``interactions:I`` or ``interactions:I-J`` (0-based, inclusive), ``readout``.
        keep_scale: keep the checkpoint's energy scale. Otherwise the scale is re-estimated as
            the RMS force of the new frames and the readout's last layer is multiplied by
            old/new scale, so training starts from the pretrained function (only E0 changes). Frames
            without forces give no scale: it is then kept. A frozen readout needs ``keep_scale``.
    """

    init_from: str | None = None
    init_member: int = 0
    freeze: tuple[str, ...] = ()
    keep_scale: bool = False

    def validate(self) -> None:
        _check(self.init_member >= 0, f"expected init_member >= 0, found {self.init_member}")
        _check(self.init_from is not None or not self.freeze, "freeze needs init_from (a checkpoint)")
        _check(self.init_from is not None or not self.keep_scale, "keep_scale needs init_from (a checkpoint)")
        groups = parse_freeze(self.freeze)
        _check(self.keep_scale or "readout" not in groups,
               "a frozen readout keeps the pretrained energy scale: set keep_scale (--keep-scale)")


@dataclass(frozen=True)
class CommitteeConfig:
    """A committee of independently trained models, for uncertainty (:class:`pbcgnn.model.Committee`, :func:`pbcgnn.train.committee.fit_committee`).

    Attributes:
        size: number of members; member k trains with seed ``train.seed + k`` into
            ``out/member_k`` and the members are combined into one checkpoint.
        bootstrap: each model trains on a bootstrap resample (drawn with replacement,
            seeded by its ``train.seed``) of the training frames; applies to single runs too.
    """

    size: int = 1
    bootstrap: bool = False

    def validate(self) -> None:
        _check(self.size >= 1, f"expected a committee size >= 1, found {self.size}")


@dataclass(frozen=True)
class Config:
    """Everything a run needs; ``asdict(config)`` is stored in every checkpoint."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    transfer: TransferConfig = field(default_factory=TransferConfig)
    committee: CommitteeConfig = field(default_factory=CommitteeConfig)

    def validate(self) -> Config:
        self.data.validate()
        self.model.validate()
        self.train.validate()
        self.transfer.validate()
        self.committee.validate()
        if self.transfer.freeze:
            parse_freeze(self.transfer.freeze, self.model.num_interactions)  # indices in range
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Config:
        def build(kind, values):
            names = {f.name for f in fields(kind)}
            unknown = set(values) - names
            if unknown:
                raise InputError(f"unknown {kind.__name__} options: {', '.join(sorted(unknown))}")
            values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
            return kind(**values)

        return cls(
            data=build(DataConfig, d.get("data", {})),
            model=build(ModelConfig, d.get("model", {})),
            train=build(TrainConfig, d.get("train", {})),
            transfer=build(TransferConfig, d.get("transfer", {})),  # absent in older checkpoints
            committee=build(CommitteeConfig, d.get("committee", {})),
        )

    def replace(self, **sections: dict[str, Any]) -> Config:
        """A new config with some options of some sections changed, e.g.
        ``config.replace(train={"epochs": 5})``."""
        parts = {name: dataclasses.replace(getattr(self, name), **opts) for name, opts in sections.items()}
        return dataclasses.replace(self, **parts)
