"""The one code fingerprint behind lmforge's data caches: a short hash of the source of the modules
that shape the cached rows or features, so editing any of them rebuilds the cache.

Modules are named (``lmforge.data.formats``) and found through the import system, never by a path
inside the repository; a caller one layer up passes its own modules (a stage's) as module objects.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
from collections.abc import Iterable
from types import ModuleType


def code_fingerprint(modules: Iterable[str | ModuleType]) -> str:
    """16 hex digits over the source of `modules` (names or module objects), in the given order."""
    h = hashlib.sha256()
    for module in modules:
        h.update(_source(module.__name__ if isinstance(module, ModuleType) else module))
    return h.hexdigest()[:16]


@functools.lru_cache(maxsize=256)
def _source(name: str) -> bytes:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.origin or not spec.has_location:
        return name.encode()
    with open(spec.origin, "rb") as f:
        return f.read()


def with_imports(name: str) -> list[str]:
    """`name` and every lmforge module its source imports directly (at module or function level):
    the code a stage module tokenises with, found from the stage itself rather than listed here."""
    import ast

    source = _source(name)
    if source == name.encode():
        return [name]
    found = [name]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lmforge."):
            targets = [node.module]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names if a.name.startswith("lmforge.")]
        else:
            continue
        found += [t for t in targets if t not in found]
    return found
