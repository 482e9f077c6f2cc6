"""Imports point one way (STYLE.md): cli > pipeline·infer > stages > training > data·models·runs >
config > errors. Function-level (lazy) imports count too, and the module import graph has no cycle."""

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "lmforge"

LAYERS = {
    "errors": 0,
    "env_info": 0,
    "runtime": 0,
    "faults": 0,
    "__init__": 0,
    "config": 1,
    "data": 2,
    "models": 2,
    "decode": 2,
    "runs": 2,
    "teacher": 2,
    "training": 3,
    "tuners": 3,
    "rl": 3,
    "stages": 4,
    "pipeline": 5,
    "launch": 5,
    "infer": 5,
    "evaluate": 5,
    "export": 5,
    "serve": 5,
    "webui": 6,
    "cli": 6,
    "cli_common": 6,
    "cli_data": 6,
    "cli_run": 6,
    "swift": 6,
    "commands": 6,
    "pipeline_file": 6,
    "__main__": 6,
}


def _layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS[parts[1] if len(parts) > 1 else "__init__"]


def test_imports_point_downward():
    bad = []
    for module, targets in import_graph().items():
        own = _layer(module)
        for target in sorted(targets):
            if _layer(target) > own:
                bad.append(f"{module} (layer {own}) imports {target} (layer {_layer(target)})")
    assert not bad, "\n".join(bad)


def test_stages_never_import_each_other():
    stage_files = [p for p in (PKG / "stages").glob("*.py") if p.name != "__init__.py"]
    names = {p.stem for p in stage_files}
    for path in stage_files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lmforge.stages."):
                assert node.module.split(".")[-1] not in names - {path.stem}, (
                    f"{path.name} imports {node.module}"
                )


def _module_names() -> dict[str, tuple[Path, bool]]:
    """Dotted name → (file, is a package __init__) for every module of lmforge."""
    out = {}
    for path in PKG.rglob("*.py"):
        parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
        is_pkg = path.name == "__init__.py"
        out[".".join(parts[:-1] if is_pkg else parts)] = (path, is_pkg)
    return out


def _imported(module: str, is_pkg: bool, node: ast.AST) -> list[str]:
    """The dotted names an import statement names: `from pkg import name` names `pkg` and
    `pkg.name` (a module when there is one); relative imports are resolved against `module`."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = node.module or ""
    if node.level:
        here = module.split(".") if is_pkg else module.split(".")[:-1]
        here = here[: len(here) - (node.level - 1)]
        base = ".".join([*here, *([node.module] if node.module else [])])
    return [base, *(f"{base}.{a.name}" for a in node.names)]


def import_graph() -> dict[str, set[str]]:
    """lmforge module → the lmforge modules it imports anywhere in its body (lazy imports too)."""
    modules = _module_names()
    graph = {}
    for module, (path, is_pkg) in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = {n for node in ast.walk(tree) for n in _imported(module, is_pkg, node)}
        graph[module] = {n for n in names if n in modules and n != module}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None when the graph is acyclic (iterative DFS)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for root in sorted(graph):
        if root in state:
            continue
        path, stack = [root], [iter(sorted(graph[root]))]
        state[root] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph[nxt])))
    return None


def test_find_cycle_reports_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"a"}}) == ["a", "a"]


def test_import_graph_sees_lazy_relative_and_from_imports():
    graph = import_graph()
    assert "lmforge.pipeline" in graph["lmforge.cli_run"]  # a lazy import inside cmd_train
    assert "lmforge.faults" in graph["lmforge.pipeline"]  # `from lmforge import faults`
    assert "lmforge" in graph["lmforge.pipeline"]  # the package __init__ itself


def test_import_graph_is_acyclic():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])
