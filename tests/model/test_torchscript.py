"""The TorchScript path (atomic_energies_plain, what pbcgnn export compiles) is the model's own function."""
from __future__ import annotations

import io

import pytest
import torch

from pbcgnn.graph import atoms_to_graph
from pbcgnn.neighbors import edge_vectors

#: The exported model is TorchScript, which torch 2.13 deprecates (torch.jit.script/save/load warn).
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.:DeprecationWarning")


def _scripted(model: torch.nn.Module) -> torch.jit.ScriptModule:
    """``torch.jit.script(model)``, saved and loaded again (what an engine gets)."""
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(model), buffer)
    buffer.seek(0)
    return torch.jit.load(buffer)


@pytest.mark.parametrize("architecture", ["schnet", "painn"])
def test_scripted_plain_path_equals_the_eval_model(water, make_model, architecture):
    """Atomic energies and forces of the scripted plain path equal the eval model's (chunked sums)
    on a 48-atom 7.8 A box (several images per pair), with a 1 A skin of pairs beyond the cutoff."""
    model = make_model(num_rbf=20, architecture=architecture).eval()
    scripted = _scripted(model)
    atoms = water[2]
    graph = atoms_to_graph(atoms, model.cutoff + 1.0)  # pairs up to 7 A: those beyond 6 A must not count
    pos = graph.pos.clone().requires_grad_(True)
    reference = model.atomic_energies(graph.z, pos, graph.edge_index, graph.cell_offsets, graph.cell)  # [N]
    (ref_grad,) = torch.autograd.grad(reference.sum(), pos)
    pos2 = graph.pos.clone().requires_grad_(True)
    vec = edge_vectors(pos2, graph.edge_index, graph.cell_offsets, graph.cell, torch.zeros_like(graph.z))
    plain = scripted.atomic_energies_plain(graph.z, graph.edge_index, vec)  # [N]
    (grad,) = torch.autograd.grad(plain.sum(), pos2)
    assert plain.dtype == torch.float64 and plain.shape == reference.shape
    assert float((plain - reference).abs().max().detach()) <= 1e-10 * float(reference.abs().max().detach())
    assert float((grad - ref_grad).abs().max()) <= 1e-10 * float(ref_grad.abs().max())
    assert float(grad.abs().max()) > 0


@pytest.mark.parametrize("architecture", ["schnet", "painn"])
def test_plain_path_of_a_float32_model_keeps_float64_energies(water, make_model, architecture):
    """float32 network, float64 reference energies, as in the training and eval paths."""
    model = make_model(num_rbf=20, architecture=architecture).float().eval()
    graph = atoms_to_graph(water[2], model.cutoff)
    vec = edge_vectors(graph.pos.float(), graph.edge_index, graph.cell_offsets, graph.cell.float(),
                       torch.zeros_like(graph.z))
    plain = _scripted(model).atomic_energies_plain(graph.z, graph.edge_index, vec)
    reference = model.atomic_energies(graph.z, graph.pos, graph.edge_index, graph.cell_offsets, graph.cell)
    assert plain.dtype == torch.float64
    assert float((plain - reference).abs().max().detach()) <= 1e-5 * float(reference.abs().max().detach())
