"""Imports point one way (STYLE.md): cli > pipeline·infer > stages > training > data·models·runs >
config > errors. Function-level (lazy) imports count too."""

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "lmforge"

LAYERS = {
    "errors": 0,
    "env_info": 0,
    "__init__": 0,
    "config": 1,
    "data": 2,
    "models": 2,
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
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG.parent).with_suffix("")
        module = ".".join(rel.parts)
        if path.name == "__init__.py":
            module = ".".join(rel.parts[:-1]) if len(rel.parts) > 2 else "lmforge.__init__"
        own = _layer(module)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lmforge"):
                targets = [node.module]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.startswith("lmforge")]
            else:
                continue
            for target in targets:
                if target == "lmforge":
                    continue
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
