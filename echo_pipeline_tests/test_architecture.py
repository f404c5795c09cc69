"""ARCHITECTURE.md's layering, enforced: a module imports only from its own layer and those below,
and only the Dagster layer and the interfaces import Dagster."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "echo_pipeline"
CORE = {"errors", "naming", "settings", "textsafe", "atomic", "__init__"}
# Lowest first; a layer may import any layer at or before its position.
ORDER = ["core", "render", "media", "artifacts", "resonance", "workflows", "defs", "cli"]
DAGSTER_ALLOWED = {"defs", "cli"}
SAME_LAYER = {"definitions": "defs", "api": "cli"}  # the API is the CLI's layer: the two thin clients


def _layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "core"
    if parts[1] in CORE:
        return "core"
    return SAME_LAYER.get(parts[1], parts[1])


def _imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
    return found


def test_layers_import_only_downwards():
    violations = []
    for path in PACKAGE.rglob("*.py"):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        layer = _layer(module)
        assert layer in ORDER, f"{module}: layer {layer!r} is not in ARCHITECTURE.md"
        for imported in _imports(path):
            top = imported.split(".")[0]
            if top == "echo_pipeline" and ORDER.index(_layer(imported)) > ORDER.index(layer):
                violations.append(f"{module} ({layer}) imports {imported} ({_layer(imported)})")
            if top in ("dagster", "dagster_shared") and layer not in DAGSTER_ALLOWED:
                violations.append(f"{module} ({layer}) imports {imported}")
    assert not violations, "\n".join(violations)
