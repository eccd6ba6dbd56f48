"""Fine-tuning from a trained checkpoint: the architecture and weights from it, frozen groups.

Transfer to another level of theory (say revPBE0-D3 -> CCSD(T)) keeps what the network
learnt about the geometry of water but not the absolute energies: E0 (and the scale) are
refitted on the new frames by :func:`pbcgnn.train.reference.fit_reference`, as the residual of
the pretrained network.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

from ..checkpoint import member_state_dict, read_checkpoint
from ..config import GROUPS, Config, parse_freeze
from ..errors import InputError

__all__ = ["freeze_parameters", "resolve_config", "load_init_weights"]

log = logging.getLogger(__name__)


def resolve_config(config: Config) -> Config:
    """The run's config with the model section (architecture, cutoff) of ``transfer.init_from``.

    ``model.dtype`` stays the run's own. Call it once, before training; the returned config is
    what the fine-tuned checkpoint stores.
    """
    ckpt = read_checkpoint(config.transfer.init_from)
    stored = Config.from_dict(ckpt["config"]).model
    n_members = len(ckpt.get("members", [None]))
    if config.transfer.init_member >= n_members:
        raise InputError(f"expected init_member < {n_members} (committee size), found {config.transfer.init_member}",
                         path=config.transfer.init_from)
    model = {k: v for k, v in vars(stored).items() if k != "dtype"}
    if any(getattr(config.model, k) != v for k, v in model.items()):
        log.info("architecture and cutoff from %s: %s", config.transfer.init_from, model)
    return config.replace(model=model)


def load_init_weights(model: torch.nn.Module, path: str, member: int = 0) -> None:
    """Load the (EMA) weights and buffers of checkpoint ``path`` (member ``member`` of a committee)
    into ``model`` (same architecture)."""
    ckpt = read_checkpoint(path)
    state = member_state_dict(ckpt, member)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise InputError(f"weights do not fit the model built from its config: {err}", path=path) from None
    log.info("initialised from %s%s (epoch %s)", path, f" member {member}" if "members" in ckpt else "",
             ckpt.get("epoch"))


def freeze_parameters(model: torch.nn.Module, spec: str | Sequence[str]) -> list[str]:
    """Set ``requires_grad=False`` on the parameters of the groups in ``spec`` (a SchNet;
    groups as :func:`pbcgnn.config.parse_freeze`).

    Frozen parameters are left out of the optimizer, so they stay bit-identical (the EMA of a
    constant is that constant: ``lerp(a, a, w) == a``).

    Returns:
        The names of the frozen parameters (as in ``model.named_parameters()``).
    """
    groups = parse_freeze(spec, len(model.interactions))
    prefixes = []
    for name, blocks in groups.items():
        if name == "interactions" and blocks is not None:
            prefixes += [f"interactions.{i}." for i in blocks]
        else:
            prefixes += [f"{attr}." for attr in GROUPS[name]]
    frozen = []
    for pname, param in model.named_parameters():
        if any(pname.startswith(p) for p in prefixes):
            param.requires_grad_(False)
            frozen.append(pname)
    if frozen:
        log.info("frozen: %d parameter tensors (%d values) in %s", len(frozen),
                 sum(p.numel() for n, p in model.named_parameters() if n in frozen), ", ".join(groups))
    return frozen
