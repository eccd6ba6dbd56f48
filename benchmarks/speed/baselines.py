"""The implementations the speed benchmark times against pbcgnn: SchNetPack's SchNet or PaiNN, and a dense SchNet.

Nothing here is part of pbcgnn. SchNetPack is imported only inside :class:`SchNetPackCase`
(``import schnetpack`` fails cleanly when it is not installed; the benchmark then drops
that column). :class:`DenseCase` is the all-pairs formulation of the first prototype: a
[frames, N, N, 3] minimum-image tensor, evaluated with the pbcgnn model's own layers and
weights, so its energy must equal pbcgnn's.
"""
from __future__ import annotations

import typing

import numpy as np
import torch
from ase import Atoms

from pbcgnn.model import SchNet
from pbcgnn.model.cfconv import shifted_softplus

__all__ = ["SchNetPackCase", "schnetpack_representation", "DenseCase", "dense_bytes", "import_schnetpack",
           "matmul_flops", "replicate"]


def import_schnetpack():  # noqa: ANN201
    """``schnetpack``, or None when it is not installed (or does not import)."""
    import torch.utils.data.dataloader as dataloader

    if not hasattr(dataloader, "T_co"):  # removed in torch 2.13; schnetpack 2.1 still imports it
        dataloader.T_co = typing.TypeVar("T_co", covariant=True)
    try:
        import schnetpack
    except Exception:  # noqa: BLE001 (missing, or broken against this torch: skip the column)
        return None
    return schnetpack


# --------------------------------------------------------------------------- SchNetPack


def schnetpack_representation(spk, name: str, hparams: dict) -> torch.nn.Module:  # noqa: ANN001
    """SchNetPack's ``"schnet"`` or ``"painn"`` representation of pbcgnn's sizes (Gaussians, cosine cutoff).

    ``hparams``: ``hidden_channels``, ``num_interactions``, ``num_rbf``, ``cutoff`` (Å), and for SchNet
    ``num_filters``. PaiNN gets separate weights per interaction and a filter network per interaction
    (``shared_interactions=False, shared_filters=False``), SiLU, as SchNetPack's defaults.
    """
    cutoff = hparams["cutoff"]
    radial_basis = spk.nn.GaussianRBF(n_rbf=hparams["num_rbf"], cutoff=cutoff)
    if name == "schnet":
        return spk.representation.SchNet(
            n_atom_basis=hparams["hidden_channels"], n_filters=hparams["num_filters"],
            n_interactions=hparams["num_interactions"], radial_basis=radial_basis,
            cutoff_fn=spk.nn.CosineCutoff(cutoff),
        )
    if name == "painn":
        return spk.representation.PaiNN(
            n_atom_basis=hparams["hidden_channels"], n_interactions=hparams["num_interactions"],
            radial_basis=radial_basis, cutoff_fn=spk.nn.CosineCutoff(cutoff),
            shared_interactions=False, shared_filters=False,
        )
    raise ValueError(f"unknown SchNetPack representation {name!r}; expected one of "
                     f"{SchNetPackCase.REPRESENTATIONS}")


class SchNetPackCase:
    """SchNetPack's ``NeuralNetworkPotential(SchNet or PaiNN -> Atomwise, Forces)`` of the benchmark size.

    Args:
        hparams: pbcgnn's model hyper-parameters (sizes are copied, weights are SchNetPack's own);
            see :func:`schnetpack_representation`.
        neighbor_list: ``"MatScipy"``, ``"ASE"`` or ``"Torch"``: which SchNetPack transform builds the list.
        representation: ``"schnet"`` or ``"painn"``.
    """

    NEIGHBOR_LISTS = ("MatScipy", "ASE", "Torch")
    REPRESENTATIONS = ("schnet", "painn")

    def __init__(self, hparams: dict, neighbor_list: str = "MatScipy", device: str = "cpu",
                 representation: str = "schnet") -> None:
        spk = import_schnetpack()
        if spk is None:
            raise RuntimeError("schnetpack is not importable")
        import schnetpack.transform as trn

        self.spk, self.device = spk, torch.device(device)
        cutoff = hparams["cutoff"]
        self.model = spk.model.NeuralNetworkPotential(
            representation=schnetpack_representation(spk, representation, hparams),
            input_modules=[spk.atomistic.PairwiseDistances()],
            output_modules=[spk.atomistic.Atomwise(n_in=hparams["hidden_channels"], output_key="energy"),
                            spk.atomistic.Forces(energy_key="energy", force_key="forces")],
        ).to(self.device)
        nl = getattr(trn, f"{neighbor_list}NeighborList")(cutoff=cutoff)
        self.converter = spk.interfaces.AtomsConverter(neighbor_list=nl, device=self.device, dtype=torch.float32)

    def inputs(self, atoms: Atoms | list[Atoms]) -> dict:
        """The neighbour list and input tensors (what SchNetPack does per MD step)."""
        return self.converter(atoms)

    def energy_forces(self, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        self.model.eval()
        out = self.model(dict(inputs))
        return out["energy"].detach(), out["forces"].detach()

    def train_step(self, inputs: dict, energy: torch.Tensor, forces: torch.Tensor, optimizer) -> float:  # noqa: ANN001
        """One step on ``energy_weight * MSE(E/N) + force_weight * MSE(F)`` (as pbcgnn's loss)."""
        self.model.train()
        out = self.model(dict(inputs))
        n = inputs["_n_atoms"].to(out["energy"].dtype)
        loss = (((out["energy"] - energy) / n) ** 2).mean() + 100.0 * ((out["forces"] - forces) ** 2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return float(loss.detach())


# --------------------------------------------------------------------------- dense all pairs


def dense_bytes(n_atoms: int, hparams: dict, frames: int = 1) -> float:
    """Rough peak memory (bytes) of a dense energy+forces call: the [B, N, N, ...] tensors kept
    for the backward pass (basis, and per interaction ~4 filter-sized tensors)."""
    pairs = frames * n_atoms**2
    per_pair = 4 * (3 + 3 * hparams["num_rbf"] + 4 * hparams["num_filters"] * hparams["num_interactions"])
    return pairs * per_pair


class DenseCase:
    """SchNet over all N^2 minimum-image pairs of each frame ([B, N, N, F] filters).

    Uses ``model``'s layers and weights, so it computes the same function as pbcgnn when
    every pair has at most one image within the cutoff (cutoff < half the smallest
    lattice-plane spacing); otherwise it refuses.
    """

    def __init__(self, model: SchNet) -> None:
        self.model = model

    @staticmethod
    def valid(atoms: Atoms, cutoff: float) -> bool:
        spacing = 1.0 / np.linalg.norm(np.linalg.inv(atoms.cell.array), axis=0)
        return bool(np.all(atoms.pbc)) and cutoff < 0.5 * spacing.min()

    def energy_forces(self, z: torch.Tensor, pos: torch.Tensor, cell: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z [B, N], pos [B, N, 3], cell [B, 3, 3] -> energy [B] (float64), forces [B, N, 3]."""
        m = self.model
        dtype = m.lin1.weight.dtype
        pos = pos.to(dtype).detach().requires_grad_(True)
        cell = cell.to(dtype)
        n = pos.shape[1]
        diff = pos.unsqueeze(1) - pos.unsqueeze(2)  # [B, N(i), N(j), 3] = pos[j] - pos[i]
        frac = diff @ torch.linalg.inv(cell).unsqueeze(1)  # [B, N, N, 3]
        vec = (frac - torch.round(frac)) @ cell.unsqueeze(1)  # minimum image
        eye = torch.eye(n, dtype=dtype, device=pos.device)
        d = torch.sqrt((vec * vec).sum(-1) + eye * (2 * m.cutoff) ** 2)  # [B, N, N]; self-pair pushed out
        rbf, env = m.rbf(d), m.envelope(d)  # [B, N, N, K], [B, N, N]
        h = m.embedding(z)  # [B, N, H]
        for block in m.interactions:
            conv = block.conv
            w = conv.filter(rbf, env)  # [B, N, N, F]
            agg = torch.einsum("bijf,bjf->bif", w, conv.lin1(h))
            h = h + block.lin(shifted_softplus(conv.lin2(agg)))
        y = m.lin2(shifted_softplus(m.lin1(h))).squeeze(-1)  # [B, N]
        energy = m.reference(y.reshape(-1), z.reshape(-1)).reshape(z.shape).sum(-1)  # [B] float64
        (grad,) = torch.autograd.grad(energy.sum(), [pos])
        return energy.detach(), -grad


def matmul_flops(n_atoms: int, n_edges: int, hparams: dict) -> dict[str, float]:
    """Dense-layer FLOPs (2 per multiply-add) of a standard SchNet energy+forces call.

    Forward: per edge and interaction the filter network (K -> F -> F) and the message
    product; per atom and interaction lin1 (H -> F), lin2 (F -> H) and the block's Linear
    (H -> H); the readout (H -> H/2 -> 1). Forces by backpropagation to the inputs cost
    about as much again, so ``energy_forces = 2 * forward``.
    """
    h, f, k, t = (hparams[x] for x in ("hidden_channels", "num_filters", "num_rbf", "num_interactions"))
    edge = t * n_edges * (2 * (k * f + f * f) + 2 * f)
    atom = n_atoms * (t * 2 * (h * f + f * h + h * h) + 2 * (h * (h // 2) + h // 2))
    forward = edge + atom
    return {"forward": float(forward), "energy_forces": 2.0 * forward, "filter_share": edge / forward}


def replicate(atoms: Atoms, n_atoms: int) -> Atoms:
    """``atoms`` repeated k x k x k times to reach exactly ``n_atoms``."""
    k = round((n_atoms / len(atoms)) ** (1.0 / 3.0))
    if k < 1 or len(atoms) * k**3 != n_atoms:
        raise ValueError(f"{n_atoms} atoms is not {len(atoms)} * k^3 for an integer k")
    big = atoms.repeat((k, k, k))
    big.calc = None
    return big
