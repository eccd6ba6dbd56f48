"""Devices: ``auto``, ``cpu``, ``cuda`` or ``cuda:K`` to a ``torch.device`` (one clear error), and their free memory."""
from __future__ import annotations

import os
from pathlib import Path

import torch

from .errors import InputError

__all__ = ["resolve_device", "available_memory"]


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
    if device.type not in ("cpu", "cuda"):
        raise InputError(f"expected a device auto, cpu, cuda or cuda:K, found {name!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {name!r} requested but CUDA is not available")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise InputError(f"expected a device cuda:K with K < {torch.cuda.device_count()} (the GPUs here), "
                         f"found {name!r}")
    return device


def available_memory(device: str | torch.device = "cpu") -> int | None:
    """Bytes that a new allocation on ``device`` can get now, or None when unknown.

    CUDA: the free memory of that GPU. CPU: ``MemAvailable`` of ``/proc/meminfo``, capped by a
    cgroup (container) limit less its usage; elsewhere the physical memory (``os.sysconf``).
    """
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0]) if torch.cuda.is_available() else None
    found = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    try:
        group = Path("/sys/fs/cgroup")
        limit = (group / "memory.max").read_text().strip()
        if limit != "max":
            found.append(int(limit) - int((group / "memory.current").read_text()))
    except (OSError, ValueError):
        pass
    if not found:
        try:
            found.append(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            return None
    return max(min(found), 0)
