"""Forces and stress from the model energy by one autograd pass (symmetric strain displacement)."""
from __future__ import annotations

import torch
from torch import Tensor
from torch_geometric.data import Data

__all__ = ["compute_properties"]

#: Cells with |det| below this (Angstrom^3) have no volume: no stress.
MIN_VOLUME = 1e-6


def compute_properties(
    model: torch.nn.Module,
    data: Data,
    forces: bool = True,
    stress: bool = False,
    training: bool = False,
) -> dict[str, Tensor]:
    r"""Energy, and optionally forces and stress, of every frame in ``data``.

    Stress follows Knuth et al., Comput. Phys. Commun. 190, 33 (2015), as in NequIP's
    ``ForceStressOutput`` and SchNetPack: apply a homogeneous strain ``eps`` [B, 3, 3]
    (zeros, requiring grad) to each frame, symmetrised so it carries no rotation,

    .. math::
        \mathbf{r}_i' = \mathbf{r}_i (1 + \varepsilon_{b(i)}), \qquad
        \mathbf{h}_b' = \mathbf{h}_b (1 + \varepsilon_b)

    (rows of ``cell`` are lattice vectors ``h``), evaluate :math:`E(\mathbf{r}', \mathbf{h}')`,
    and take one ``autograd.grad`` over ``(pos, eps)``:

    .. math::
        \mathbf{F}_i = -\partial E / \partial \mathbf{r}_i, \qquad
        \sigma_b = \frac{1}{V_b} \left.\frac{\partial E_b}{\partial \varepsilon_b}\right|_{\varepsilon=0}

    This is ASE's sign convention (positive when tensile: the box wants to shrink);
    the virial is :math:`W = -V\sigma`. Straining the cell together with the positions is
    essential: the integer ``cell_offsets`` then follow the deformation, and the strain
    derivative includes the periodic images.

    Args:
        model: an energy model with SchNet's ``forward`` signature, returning [B] eV.
        data: a PyG ``Data`` (one frame) or ``Batch`` with ``z``, ``pos``, ``edge_index``,
            ``cell_offsets``, ``cell`` [B, 3, 3] and (for batches) ``batch``.
        forces: compute forces.
        stress: compute stress; every frame needs a cell with non-zero volume.
        training: keep the graph of the derivatives (``create_graph``) so a force or stress
            loss can be back-propagated to the weights; otherwise outputs are detached.

    Returns:
        ``energy`` [B] float64 eV; ``forces`` [N, 3] eV/Angstrom in ``pos``'s dtype when
        asked; ``stress`` [B, 3, 3] eV/Angstrom^3 when asked.

    Raises:
        ValueError: stress requested for a frame with zero cell volume (non-periodic).
    """
    cell = data.cell.reshape(-1, 3, 3)  # [B, 3, 3]
    num_graphs = cell.shape[0]
    batch = data.batch if data.batch is not None else torch.zeros_like(data.z)  # [N]
    # Differentiate wrt a fresh leaf, never the caller's tensor (no requires_grad left behind).
    pos = data.pos.detach().requires_grad_(forces)  # [N, 3]
    wrt = [pos] if forces else []
    if stress:
        volume = torch.linalg.det(cell.to(torch.float64)).abs()  # [B] Angstrom^3
        empty = (volume < MIN_VOLUME).nonzero().flatten().tolist()
        if empty:
            raise ValueError(
                f"compute_properties: stress needs a cell with volume, found |det(cell)| < "
                f"{MIN_VOLUME} A^3 for frame(s) {empty} (non-periodic); call with stress=False"
            )
        eps = torch.zeros(num_graphs, 3, 3, dtype=pos.dtype, device=pos.device, requires_grad=True)
        sym = 0.5 * (eps + eps.transpose(-1, -2))  # [B, 3, 3]
        # [N, 1, 3] @ [N, 3, 3] -> [N, 3]: each atom strained by its own frame's eps.
        pos_in = pos + torch.bmm(pos.unsqueeze(1), sym[batch]).squeeze(1)
        cell_in = cell.to(pos.dtype) + torch.bmm(cell.to(pos.dtype), sym)  # [B, 3, 3]
        wrt.append(eps)
    else:
        pos_in, cell_in = pos, cell

    energy = model(data.z, pos_in, data.edge_index, data.cell_offsets, cell_in, batch, num_graphs)  # [B]
    out = {"energy": energy if training else energy.detach()}
    if not wrt:
        return out
    # Frames are independent, so d(sum E)/d(pos of frame b) = dE_b/d(pos of frame b).
    if energy.requires_grad:
        grads = torch.autograd.grad(
            energy.sum(), wrt, create_graph=training, allow_unused=True  # unused: no edges at all
        )
    else:  # frozen weights and no edges: the energy does not depend on pos or eps
        grads = [None] * len(wrt)
    grads = [torch.zeros_like(w) if g is None else g for g, w in zip(grads, wrt)]
    if forces:
        out["forces"] = -grads[0]  # [N, 3] eV/Angstrom
    if stress:
        out["stress"] = grads[-1] / volume.to(grads[-1].dtype).view(-1, 1, 1)  # [B, 3, 3]
    return out
