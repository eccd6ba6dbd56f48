"""The private torch APIs pbcgnn uses exist in the installed torch, only _torch_compat calls them,
and every fallback still gives correct results."""
from __future__ import annotations

import re
import types
from pathlib import Path

import pytest
import torch

import pbcgnn
from pbcgnn.model import _torch_compat as compat
from pbcgnn.model.aggregate.chunked import chunked_aggregate


@pytest.mark.parametrize("name", sorted(compat.PRIVATE_APIS))
def test_private_api_exists(name):
    if compat.private_api(name) is None:
        pytest.fail(
            f"{name} is gone from torch {torch.__version__}: pbcgnn falls back "
            f"({compat.PRIVATE_APIS[name]}); update pbcgnn/model/_torch_compat.py"
        )


def test_only_the_compat_module_calls_private_torch():
    root = Path(pbcgnn.__file__).parent
    private = re.compile(r"\btorch\._[A-Za-z]")
    offenders = [
        f"{path.relative_to(root)}:{n}"
        for path in sorted(root.rglob("*.py"))
        if path.name != "_torch_compat.py"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if private.search(line.split("#")[0])
    ]
    assert not offenders, f"private torch APIs outside pbcgnn/model/_torch_compat.py: {offenders}"


def _sum_and_grads(need_weights: bool) -> tuple[torch.Tensor, ...]:
    """A chunked sum and its gradients for x and d (and the weight when asked)."""
    gen = torch.Generator().manual_seed(0)
    leaf = torch.randn(5, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    d = torch.rand(8, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, generator=gen, dtype=torch.float64, requires_grad=True)
    edge_index = torch.randint(0, 5, (2, 8), generator=gen)
    x = 2.0 * leaf  # as in a model: the engine refuses questions about leaves during autograd.grad
    out = chunked_aggregate(x, edge_index, lambda d, w: torch.outer(d, w).sin(), (d,), (w,), chunk=3)
    wrt = [leaf, d, w] if need_weights else [leaf, d]
    return (out.detach(), *torch.autograd.grad((out * out).sum(), wrt))


def test_executed_inputs_skips_unreached_gradients_and_falls_back(monkeypatch):
    calls = []
    real = compat.executed_inputs

    def spy(needs, slots):
        calls.append(real(needs, slots))
        return calls[-1]

    monkeypatch.setattr("pbcgnn.model.aggregate.chunked.executed_inputs", spy)
    forces_only = _sum_and_grads(need_weights=False)
    assert calls[-1][-1] is False  # the weight's gradient is not wanted: skipped
    full = _sum_and_grads(need_weights=True)
    assert calls[-1][-1] is True
    monkeypatch.delattr(torch._C, "_will_engine_execute_node")
    fallback = _sum_and_grads(need_weights=False)
    assert calls[-1][-1] is True  # without the API every gradient is computed
    for a, b in zip(fallback, forces_only):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    for a, b in zip(forces_only, full):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert compat.executed_inputs([True, False], [0, 1]) == [True, False]  # outside backward: unchanged


def test_dynamo_fallbacks(monkeypatch):
    t = torch.zeros(4, 2)
    compat.mark_dynamic(t, 0)
    with compat.recompile_limit(64):
        assert compat.private_api("torch._dynamo.config.recompile_limit") == 64
    monkeypatch.setattr(torch._dynamo, "config", types.SimpleNamespace())
    monkeypatch.delattr(torch._dynamo, "mark_dynamic")
    assert compat.private_api("torch._dynamo.mark_dynamic") is None
    compat.mark_dynamic(t, 0)  # nothing to do
    with compat.recompile_limit(64):  # a do-nothing context
        pass


def test_unpatched_index_select_restores_the_patch(monkeypatch):
    """Inside the block torch.index_select is torch's own function (metatensor imports there), after it
    whatever was installed before (torch_geometric's wrapper)."""
    original = compat.private_api("torch._C._VariableFunctions.index_select")
    wrapper = lambda *args, **kwargs: original(*args, **kwargs)  # noqa: E731
    monkeypatch.setattr(torch, "index_select", wrapper)
    with compat.unpatched_index_select():
        assert torch.index_select is original
    assert torch.index_select is wrapper
