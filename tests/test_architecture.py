"""The package's shape: imports point one way (no cycle, counting function-local imports), short
functions, modules under 400 lines."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pbcgnn"
#: pbcgnn modules that wrap optional engines (matplotlib, OpenMM, metatomic): imported inside the function that
#: needs them. pbcgnn.metatomic_model imports metatomic at the top (TorchScript resolves its types from the
#: module's globals), so pbcgnn.export imports it inside a function, only when metatomic is installed.
LAZY_OK = ("pbcgnn.evaluation.plots", "pbcgnn.md.plots", "pbcgnn.md.openmm_md", "pbcgnn.metatomic_model")
MAX_FUNCTION_LINES = 80
MAX_MODULE_LINES = 400


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _in_type_checking(tree: ast.Module) -> set[int]:
    """ids of the import nodes under ``if TYPE_CHECKING:`` (never executed)."""
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            skip |= {id(n) for n in ast.walk(node)}
    return skip


def _imports(name: str, source: str, is_package: bool = False) -> set[str]:
    """The pbcgnn modules that module ``name`` imports anywhere (top level or inside functions)."""
    tree = ast.parse(source)
    skip = _in_type_checking(tree)
    package = name.split(".") if is_package else name.split(".")[:-1]
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            # ``from pkg import sub`` imports the submodule pkg.sub; ``from mod import name`` the module
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        found |= {t for t in targets if t in MODULES and t != name}
    return found


GRAPH = {name: _imports(name, path.read_text(), path.name == "__init__.py") for name, path in MODULES.items()}


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules, or None (depth-first search with colours)."""
    colour, stack = {}, []

    def visit(node: str) -> list[str] | None:
        colour[node] = "grey"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if colour.get(nxt) == "grey":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in colour and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        colour[node] = "black"
        return None

    for start in sorted(graph):
        if start not in colour and (cycle := visit(start)):
            return cycle
    return None


def test_the_graph_sees_function_local_imports():
    """The checker itself: a local import counts, and a planted cycle is found."""
    source = "from .model import SchNet\n\ndef f():\n    from .train.loop import fit_model\n"
    assert _imports("pbcgnn.checkpoint", source) == {"pbcgnn.model", "pbcgnn.train.loop"}
    assert "pbcgnn.model.committee" in GRAPH["pbcgnn.checkpoint"]
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle():
    cycle = _find_cycle(GRAPH)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_inference_does_not_import_training():
    """The calculator, evaluation and selection load checkpoints without the training code."""
    def reach(name: str, seen: set[str]) -> set[str]:
        for nxt in GRAPH[name] - seen:
            seen.add(nxt)
            reach(nxt, seen)
        return seen

    for user in ("pbcgnn.calculator", "pbcgnn.evaluation.report", "pbcgnn.select", "pbcgnn.checkpoint"):
        training = sorted(m for m in reach(user, set()) if m.startswith("pbcgnn.train"))
        assert not training, f"{user} imports {training}"


def test_the_learning_loop_sits_above_md():
    """pbcgnn.learn uses md, the calculator and training; nothing below it imports it, and it
    imports nothing above it (analysis, export)."""
    inside = {m for m in MODULES if m == "pbcgnn.learn" or m.startswith("pbcgnn.learn.")}
    assert inside >= {"pbcgnn.learn.rounds", "pbcgnn.learn.explore", "pbcgnn.learn.label"}
    users = sorted(m for m in set(MODULES) - inside if GRAPH[m] & inside)
    assert not users, f"{users} import pbcgnn.learn"
    above = sorted(f"{m}: {t}" for m in inside for t in GRAPH[m] if t in ("pbcgnn.analysis", "pbcgnn.export"))
    assert not above, above
    assert "pbcgnn.md" in GRAPH["pbcgnn.learn.explore"] and "pbcgnn.train.run" in GRAPH["pbcgnn.learn.retrain"]


def test_lazy_imports_are_optional_engines_only():
    """Function-local imports of pbcgnn modules (relative or absolute) are only of the modules
    that wrap optional engines, never a way to hide a cycle."""
    local = []
    for name, path in MODULES.items():
        is_package = path.name == "__init__.py"
        for fn in ast.walk(ast.parse(path.read_text())):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                hidden = _imports(name, ast.unparse(fn), is_package) - set(LAZY_OK)
                local += [f"{name}.{fn.name}: {module}" for module in sorted(hidden)]
    assert not local, "function-local pbcgnn imports:\n" + "\n".join(local)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_functions_and_modules_are_short(name):
    path = MODULES[name]
    source = path.read_text()
    assert len(source.splitlines()) <= MAX_MODULE_LINES, f"{path.name}: {len(source.splitlines())} lines"
    long = []
    for fn in ast.walk(ast.parse(source)):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            body = fn.body[1:] if ast.get_docstring(fn) is not None else fn.body
            lines = body[-1].end_lineno - body[0].lineno + 1 if body else 0
            if lines > MAX_FUNCTION_LINES:
                long.append(f"{fn.name}: {lines} lines")
    assert not long, f"{name}: " + ", ".join(long)


def test_every_subpackage_is_installed():
    """pyproject's explicit package list names every folder of pbcgnn with an __init__.py, so a
    non-editable install (a wheel) holds all of them."""
    import tomllib
    repo = PACKAGE.parent
    listed = set(tomllib.loads((repo / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(repo).parts) for p in PACKAGE.rglob("__init__.py")}
    assert found - listed == set()
