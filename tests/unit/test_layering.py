"""The layers hold: the core imports no UI or web framework and not the sidecar; only the store
talks SQL. Read from the source with ast, so a lazy import inside a function counts too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]


def imports(path: Path) -> set[str]:
    """Top-level module names a file imports (absolute imports, anywhere in the file)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def sources(*parts: str) -> list[Path]:
    out = []
    for part in parts:
        target = ROOT / part
        out += sorted(target.rglob("*.py")) if target.is_dir() else [target]
    return out


def test_the_core_imports_neither_the_sidecar_nor_a_web_or_ui_framework():
    offenders = {str(p.relative_to(ROOT)): sorted(imports(p) & {"server", "fastapi", "starlette", "streamlit"})
                 for p in sources("voiceforge")}
    assert {k: v for k, v in offenders.items() if v} == {}
    assert len(offenders) > 30  # the walk really read the package


def test_only_the_store_imports_sqlalchemy():
    above = [p for p in sources("voiceforge", "server", "app_pages", "app.py", "forge_ui.py", "realtime")
             if "voiceforge/store/" not in p.as_posix()]
    assert [str(p.relative_to(ROOT)) for p in above if "sqlalchemy" in imports(p)] == []
    assert any("sqlalchemy" in imports(p) for p in sources("voiceforge/store"))


def test_a_violation_would_be_seen(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from server.main import create_app\n    import streamlit as st\n")
    assert {"server", "streamlit"} <= imports(bad)
