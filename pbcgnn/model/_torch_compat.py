"""Every private PyTorch API pbcgnn uses, each behind a fallback: the one module to update when torch moves one.

The rest of pbcgnn calls these wrappers, never ``torch._C`` or ``torch._dynamo`` directly.
``tests/model/test_torch_compat.py`` fails, naming the API, when the installed torch lacks one
of :data:`PRIVATE_APIS`, and checks that every fallback still gives correct (slower) results.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["PRIVATE_APIS", "private_api", "executed_inputs", "mark_dynamic", "recompile_limit",
           "unpatched_index_select"]

#: The private APIs wrapped here, by their dotted names, and what is lost without them.
PRIVATE_APIS = {
    "torch._C._current_autograd_node": "executed_inputs: every input gradient is computed",
    "torch._C._will_engine_execute_node": "executed_inputs: every input gradient is computed",
    "torch._dynamo.mark_dynamic": "mark_dynamic: compiled kernels specialise on sizes (recompiles)",
    "torch._dynamo.config.recompile_limit": "recompile_limit: dynamo's default limit applies",
    "torch._C._VariableFunctions.index_select": "unpatched_index_select: metatensor cannot be imported "
                                                "after torch_geometric (pbcgnn export fails)",
}


def private_api(name: str) -> Any:  # noqa: ANN401
    """The object at the dotted ``name`` (one of :data:`PRIVATE_APIS`), or ``None`` when torch lacks it.

    Looked up at call time, so importing pbcgnn does not import ``torch._dynamo``.
    """
    obj: Any = torch
    for part in name.split(".")[1:]:
        try:
            obj = getattr(obj, part)
        except (AttributeError, ImportError):
            return None
    return obj


def executed_inputs(needs_input_grad: Sequence[bool], slots: Sequence[int]) -> list[bool]:
    """In a custom ``autograd.Function.backward``: the inputs whose gradient this pass really uses.

    ``ctx.needs_input_grad`` says which inputs require grad; the engine knows which of them
    the running ``backward``/``grad`` call will reach (forces need no weight gradients, so
    the caller can skip those matmuls). Uses ``torch._C._current_autograd_node`` and
    ``torch._C._will_engine_execute_node``; without them, or when the engine refuses (no
    backward running), returns ``needs_input_grad`` unchanged.

    Args:
        needs_input_grad: ``ctx.needs_input_grad``, one flag per input of ``forward``.
        slots: the positions of the tensor inputs in that list, in order (the node's
            ``next_functions`` has one entry per tensor input).

    Returns:
        One flag per input: ``needs_input_grad`` with False where the engine will not execute it.
    """
    need = list(needs_input_grad)
    current = private_api("torch._C._current_autograd_node")
    will_execute = private_api("torch._C._will_engine_execute_node")
    if current is None or will_execute is None:
        return need
    try:
        node = current()
        for slot, (fn, _) in zip(slots, node.next_functions):
            if need[slot] and fn is not None:
                need[slot] = bool(will_execute(fn))
    except (AttributeError, RuntimeError):  # not inside a backward pass, or refused: compute them all
        return list(needs_input_grad)
    return need


def mark_dynamic(tensor: Tensor, dim: int) -> None:
    """``torch._dynamo.mark_dynamic``: compile for any size of ``tensor``'s ``dim``; else nothing."""
    mark = private_api("torch._dynamo.mark_dynamic")
    if mark is not None:
        mark(tensor, dim)


def recompile_limit(limit: int) -> contextlib.AbstractContextManager:
    """A context raising dynamo's recompile limit to ``limit`` (``torch._dynamo.config.patch``); else nothing."""
    config = private_api("torch._dynamo.config")
    if config is None or private_api("torch._dynamo.config.recompile_limit") is None:
        return contextlib.nullcontext()
    return config.patch(recompile_limit=limit)


@contextlib.contextmanager
def unpatched_index_select() -> Iterator[None]:
    """``torch.index_select`` as torch defines it (``torch._C._VariableFunctions``) inside the block.

    torch_geometric (2.8) replaces ``torch.index_select`` on import by a wrapper that TorchScript
    cannot compile, and metatensor compiles TorchScript functions calling it when it is imported:
    import metatensor/metatomic inside this block. Nothing changes without the private API.
    """
    original = private_api("torch._C._VariableFunctions.index_select")
    patched = torch.index_select
    if original is None or patched is original:
        yield
        return
    torch.index_select = original
    try:
        yield
    finally:
        torch.index_select = patched
