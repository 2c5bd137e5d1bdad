"""Import boundary: only lib_lora/webui/ and scripts/ import the WebUI (modules, launch) or gradio,
and only inside functions, so the library imports and tests without the WebUI."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WEBUI_NAMES = {"modules", "gradio", "launch"}


def _imports(tree: ast.AST):
    """(top-level package, line, inside a function?) for every import in a module."""
    found = []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend((a.name.split(".")[0], child.lineno, nested) for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                found.append((child.module.split(".")[0], child.lineno, nested))
            visit(child, nested)

    visit(tree, False)
    return found


def test_only_webui_layer_imports_the_webui_and_only_lazily():
    bad = []
    for path in list((ROOT / "lib_lora").rglob("*.py")) + list((ROOT / "scripts").glob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        allowed = rel.startswith("lib_lora/webui/") or rel.startswith("scripts/")
        for name, line, in_function in _imports(ast.parse(path.read_text(encoding="utf-8"))):
            if name in WEBUI_NAMES and (not allowed or not in_function):
                bad.append(f"{rel}:{line} imports {name}" + ("" if allowed else " outside lib_lora/webui"))
    assert not bad, "\n".join(bad)
