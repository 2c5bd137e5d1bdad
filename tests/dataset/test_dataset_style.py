"""The data side keeps the project's rules: no WebUI imports, small files and functions."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "lib_lora"
FILES = sorted((ROOT / "dataset").glob("*.py")) + sorted((ROOT / "tagging").glob("*.py"))


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_no_webui_imports_and_small_units(path):
    text = path.read_text(encoding="utf-8")
    tree = ast.parse(text)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots = [a.name.split(".")[0] for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            roots = [(node.module or "").split(".")[0]]
        else:
            roots = []
        assert not set(roots) & {"modules", "gradio", "launch"}, f"{path.name}:{node.lineno}"
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            assert node.end_lineno - node.lineno + 1 <= 60, f"{path.name}:{node.name} is too long"
    assert len(text.splitlines()) <= 400
    if path.name != "__init__.py":
        assert "from __future__ import annotations" in text
