"""The checkpoint format: save atomically, read without unpickling code, rebuild the model, committee layout.

A checkpoint is a dict of plain types and tensors only, so ``torch.load(path,
weights_only=True)`` reads it and a file someone sent you cannot run code:

=================  =============================================================
``format``         checkpoint format version (int)
``version``        pbcgnn version that wrote it
``config``         ``Config.to_dict()``: data, model and training options
``model``          state dict of the weights for inference (the EMA average),
                   including the buffers ``reference.e0``/``reference.scale`` and
                   the cutoff, so the file is the whole function
``elements``       atomic numbers seen in training
``units``          ``{"energy": "eV", "length": "Angstrom"}``
``metrics``        validation metrics of these weights
``epoch``          epochs completed
``train_state``    optimizer, scheduler, raw and EMA weights, RNG and loop state
                   for ``--resume`` (``last.pt``); absent when stripped
=================  =============================================================

A committee checkpoint (``pbcgnn train --committee N``) has the same keys; ``model`` is the
state dict of a :class:`pbcgnn.model.Committee` (keys ``members.K.*``), and ``members``
lists per member its ``seed``, ``epoch``, ``metrics`` and run folder. ``config`` is the
committee's (``committee.size`` = N); each member's own folder holds its single-model
checkpoints. ``train_state`` of a committee's ``last.pt`` only marks it resumable (each member
resumes from its own ``last.pt``).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from . import __version__
from .config import Config
from .errors import InputError
from .model import SchNet
from .model.committee import Committee

__all__ = ["FORMAT_VERSION", "UNITS", "save_checkpoint", "read_checkpoint", "load_checkpoint",
           "model_from_checkpoint", "build_model", "member_state_dict", "combine_checkpoints"]

FORMAT_VERSION = 1
#: The units of every checkpoint's energies and lengths (pbcgnn's internal units).
UNITS = {"energy": "eV", "length": "Angstrom"}


def save_checkpoint(path: str | os.PathLike, checkpoint: dict[str, Any]) -> None:
    """Write ``checkpoint`` to ``path`` atomically (temporary file, fsync, rename):
    a kill mid-write leaves the previous file intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format": FORMAT_VERSION, "version": __version__, "units": UNITS, **checkpoint}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint dict, read with ``weights_only=True``; bad files raise InputError."""
    path = Path(path)
    if not path.is_file():
        raise InputError("no such checkpoint file", path=path)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # unpickling errors come in many types
        raise InputError(f"not a pbcgnn checkpoint ({type(err).__name__}: {err})", path=path) from None
    if not isinstance(ckpt, dict) or "format" not in ckpt or "model" not in ckpt:
        raise InputError("not a pbcgnn checkpoint (missing 'format' or 'model')", path=path)
    if ckpt["format"] > FORMAT_VERSION:
        raise InputError(
            f"checkpoint format {ckpt['format']} is newer than this pbcgnn ({__version__}) reads", path=path
        )
    return ckpt


def build_model(config: Config) -> SchNet:
    """A freshly initialised model of the configured size and dtype."""
    dtype = getattr(torch, config.model.dtype)
    return SchNet(**config.model.schnet_kwargs()).to(dtype)


def load_checkpoint(
    path: str | os.PathLike, device: str | torch.device = "cpu", dtype: str | None = None
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild the trained model from a checkpoint.

    Args:
        path: ``best.pt`` or ``last.pt``.
        device: where to put the model.
        dtype: ``"float32"``/``"float64"`` to override the trained dtype (e.g. float64 for MD).

    Returns:
        ``(model, checkpoint)`` with the model in eval mode: a :class:`SchNet`, or for a
        committee checkpoint a :class:`pbcgnn.model.Committee` of them (same ``forward``,
        returning the members' mean energy; ``members`` and ``cutoff`` attributes).
    """
    ckpt = read_checkpoint(path)
    return model_from_checkpoint(ckpt, device, dtype, path=path), ckpt


def model_from_checkpoint(
    ckpt: dict[str, Any], device: str | torch.device = "cpu", dtype: str | None = None,
    path: str | os.PathLike | None = None,
) -> torch.nn.Module:
    """The model (SchNet or Committee) of a checkpoint dict, in eval mode; see :func:`load_checkpoint`."""
    config = Config.from_dict(ckpt["config"])
    if "members" in ckpt:
        model = Committee([build_model(config) for _ in ckpt["members"]])
    elif config.committee.size > 1:
        raise InputError("committee run not finished: no members combined yet (resume it)", path=path)
    else:
        model = build_model(config)
    model.load_state_dict(ckpt["model"])
    if dtype is not None:
        model = model.to(getattr(torch, dtype))
    return model.to(device).eval()


def member_state_dict(ckpt: dict[str, Any], member: int = 0) -> dict[str, torch.Tensor]:
    """The weights of one model in a checkpoint: the model itself, or member ``member`` of a committee."""
    state = ckpt["model"]
    if "members" not in ckpt:
        return state
    prefix = f"members.{member}."
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def combine_checkpoints(config: Config, members: list[dict[str, Any]], dirs: list[Path]) -> dict[str, Any]:
    """One committee checkpoint from the members' single-model checkpoints (plain types only).

    Args:
        config: the committee's config (``committee.size`` = number of members).
        members: the members' checkpoint dicts (``best.pt`` or ``last.pt``), in member order.
        dirs: the members' run folders.
    """
    model = {f"members.{k}.{key}": value for k, ckpt in enumerate(members) for key, value in ckpt["model"].items()}
    info = [{"seed": Config.from_dict(c["config"]).train.seed, "epoch": c["epoch"], "metrics": c.get("metrics", {}),
             "dir": str(d)} for c, d in zip(members, dirs)]
    elements = sorted(set().union(*(c["elements"] for c in members)))
    return {"config": config.to_dict(), "model": model, "members": info, "elements": elements,
            "epoch": max(c["epoch"] for c in members), "units": UNITS}
