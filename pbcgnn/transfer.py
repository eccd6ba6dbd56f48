"""Fine-tuning from a trained checkpoint: architecture from it, weights, E0/scale refit, frozen groups.

Transfer to another level of theory (say revPBE0-D3 -> CCSD(T)) keeps what the network
learnt about the geometry of water but must not keep the absolute energies: two levels of
theory differ by eV per atom, so the per-element references E0 are refitted on the new
frames, as the least-squares residual of the *pretrained* network (the fine-tuning starts
with zero mean energy error). The energy scale is re-estimated from the new forces with the
readout compensated, so the starting function is unchanged, or kept (``keep_scale``).

Freeze groups (``TransferConfig.freeze``), comma-separated or as a sequence:

==================  ===========================================================
``embedding``       the element embedding
``interactions``    every interaction block (filters, convolution, update)
``interactions:I``  block I (0-based); ``interactions:I-J`` blocks I..J inclusive
``readout``         the atomwise MLP (both layers); needs ``keep_scale``
==================  ===========================================================

Frozen parameters get ``requires_grad=False`` and are left out of the optimizer, so they stay
bit-identical (the EMA of a constant is that constant: ``lerp(a, a, w) == a``).
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch_geometric.loader import DataLoader

from .errors import InputError
from .model.reference import estimate_scale, fit_reference_energies
from .train.checkpoint import read_checkpoint
from .train.config import Config

__all__ = ["parse_freeze", "freeze_parameters", "resolve_config", "load_init_weights", "refit_reference",
           "member_state_dict"]

log = logging.getLogger(__name__)

#: Freeze group -> attribute names of :class:`pbcgnn.model.SchNet` it covers.
GROUPS = {"embedding": ("embedding",), "interactions": ("interactions",), "readout": ("lin1", "lin2")}
#: The readout's last linear layer, rescaled when the energy scale is re-estimated.
LAST_LAYER = "lin2"


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


def freeze_parameters(model: torch.nn.Module, spec: str | Sequence[str]) -> list[str]:
    """Set ``requires_grad=False`` on the parameters of the groups in ``spec`` (a SchNet).

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
                 sum(p.numel() for n, p in model.named_parameters() if n in frozen), ", ".join(_items(spec)))
    return frozen


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


def member_state_dict(ckpt: dict[str, Any], member: int = 0) -> dict[str, torch.Tensor]:
    """The weights of one model in a checkpoint: the model itself, or member ``member`` of a committee."""
    state = ckpt["model"]
    if "members" not in ckpt:
        return state
    prefix = f"members.{member}."
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def load_init_weights(model: torch.nn.Module, path: str, member: int = 0) -> None:
    """Load the (EMA) weights and buffers of checkpoint ``path`` into ``model`` (same architecture)."""
    ckpt = read_checkpoint(path)
    state = member_state_dict(ckpt, member)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise InputError(f"weights do not fit the model built from its config: {err}", path=path) from None
    log.info("initialised from %s%s (epoch %s)", path, f" member {member}" if "members" in ckpt else "",
             ckpt.get("epoch"))


@torch.no_grad()
def _network_energies(model: torch.nn.Module, dataset, device: torch.device) -> np.ndarray:
    """Per frame, the model energy without the E0 part: ``sum_i scale * y_i`` [F] eV."""
    was_training = model.training
    model.eval()
    out = []
    for batch in DataLoader(dataset, batch_size=8, shuffle=False):
        batch = batch.to(device)
        energy = model(batch.z, batch.pos, batch.edge_index, batch.cell_offsets, batch.cell, batch.batch,
                       batch.num_graphs)  # [B] float64
        e0 = model.reference.e0[batch.z]  # [N] float64 eV
        e0_sum = torch.zeros_like(energy).index_add_(0, batch.batch, e0)  # [B]
        out.append((energy - e0_sum).cpu())
    model.train(was_training)
    return torch.cat(out).numpy()


def refit_reference(model: torch.nn.Module, train_set, keep_scale: bool = False,
                    device: str | torch.device = "cpu") -> dict[str, Any]:
    """Refit E0 (and re-estimate the scale) of a pretrained model on new training frames.

    Scale: unless ``keep_scale`` (or the frames have no forces), ``scale`` becomes the RMS force
    component of the new frames and the last readout layer is multiplied by
    ``old_scale / new_scale``: the network energy ``sum_i scale * y_i`` is unchanged.

    E0: least squares of ``E_ref - sum_i scale * y_i`` over the frames
    (:func:`pbcgnn.model.fit_reference_energies`; for pure water only ``2 E0[H] + E0[O]`` is
    determined and the minimum-norm split is used). Elements absent from the new frames keep
    their old E0.

    Args:
        model: a SchNet with pretrained weights, on ``device``.
        train_set: graphs with ``energy`` [1] eV, ``forces`` [N, 3] eV/Angstrom, ``has_forces``.
        keep_scale: keep the pretrained scale and readout.
        device: where the model is.

    Returns:
        ``e0`` (Z -> eV), ``scale`` (eV), ``scale_ratio`` (old/new), ``rank``, the energy RMSE
        (meV/atom) of the pretrained model on the frames before and after the refit, and the
        E0 shift per H2O-like formula is left to the caller.
    """
    device = torch.device(device)
    ref = model.reference
    numbers = [g.z.numpy() for g in train_set]
    energies = np.array([float(g.energy) for g in train_set])
    natoms = np.array([len(z) for z in numbers])
    forces = [g.forces.numpy() for g in train_set if bool(g.has_forces)]
    old_scale = float(ref.scale)
    new_scale = old_scale
    if not keep_scale and forces:
        new_scale = estimate_scale(forces, np.zeros(len(numbers)))
        last = getattr(model, LAST_LAYER)
        with torch.no_grad():
            last.weight.mul_(old_scale / new_scale)
            last.bias.mul_(old_scale / new_scale)
        ref.set_values(scale=new_scale)
    elif not keep_scale:
        log.info("no forces in the fine-tuning frames: the pretrained scale %.4f eV is kept", old_scale)
    before = _network_energies(model, train_set, device)
    e0_old = ref.e0.cpu().numpy()
    old_total = before + np.array([e0_old[zs].sum() for zs in numbers])  # [F] eV
    rmse_before = float(np.sqrt(np.mean(((old_total - energies) / natoms) ** 2)))
    e0, info = fit_reference_energies(numbers, energies - before)
    ref.set_values(e0=e0)
    residual = (energies - before - np.array([sum(e0[int(z)] for z in zs) for zs in numbers])) / natoms
    rmse_after = float(np.sqrt(np.mean(residual**2)))
    log.info("E0 refitted on %d frames: %s eV; scale %.4f -> %.4f eV; pretrained energy RMSE %.1f -> %.3f meV/atom",
             len(numbers), {int(k): round(v, 6) for k, v in e0.items()}, old_scale, new_scale,
             1000 * rmse_before, 1000 * rmse_after)
    return {"e0": {int(k): float(v) for k, v in e0.items()}, "scale": new_scale, "scale_ratio": old_scale / new_scale,
            "rank": info["rank"], "full_rank": info["full_rank"], "elements": info["elements"],
            "energy_rmse_before_mev_per_atom": 1000 * rmse_before,
            "energy_rmse_after_mev_per_atom": 1000 * rmse_after}
