"""Device resolution: ``auto``, ``cpu``, ``cuda`` or ``cuda:K`` to a ``torch.device``, with one clear error."""
from __future__ import annotations

import torch

from .errors import InputError

__all__ = ["resolve_device"]


def resolve_device(name: str | torch.device) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; an unknown name, or CUDA without CUDA, is an input error."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise InputError(f"expected a device auto, cpu, cuda or cuda:K, found {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {name!r} requested but CUDA is not available")
    if device.type not in ("cpu", "cuda"):
        raise InputError(f"expected a device auto, cpu, cuda or cuda:K, found {name!r}")
    return device
