"""The layers hold: who may import whom, no import cycles, and adapters that use only the port.

Read from the source with ast, so a lazy import inside a function counts too (imports under
``if TYPE_CHECKING:`` do not: they never run).

Layers, top down:
- ``forge`` (the CLI and the runners that start Forge's processes) may import anything;
- ``app.py``, ``app_pages/`` and ``forge_ui/`` (the Streamlit app) import the core, ``forge`` and,
  for the WebRTC adapter the Live page runs in the app's own process, ``server.transports``;
- ``server`` (the sidecar's app factory, routers and transport adapters) imports the core and
  ``realtime`` (a phone call over a Realtime session);
- ``realtime`` (the speech-to-speech client side) imports only the core;
- ``voiceforge`` (the core) imports none of them, and no web, UI or server framework.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("voiceforge", "server", "realtime", "forge", "forge_ui", "app_pages")


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _is_main_guard(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Compare) and isinstance(test.left, ast.Name) and test.left.id == "__name__"
            and any(isinstance(c, ast.Constant) and c.value == "__main__" for c in test.comparators))


def import_nodes(path: Path) -> list[ast.Import | ast.ImportFrom]:
    """Every import that runs (not under TYPE_CHECKING, not a script's ``__main__`` block)."""
    out: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and (_is_type_checking(node) or _is_main_guard(node)):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import | ast.ImportFrom):
            out.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    return out


def imports(path: Path) -> set[str]:
    """Top-level module names a file imports (absolute imports, anywhere in the file)."""
    names = set()
    for node in import_nodes(path):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def dotted_imports(path: Path) -> set[str]:
    """Full module names a file imports (``from a.b import c`` gives ``a.b`` and ``a.b.c``)."""
    names = set()
    for node in import_nodes(path):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif node.level == 0 and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def sources(*parts: str) -> list[Path]:
    out = []
    for part in parts:
        target = ROOT / part
        out += sorted(target.rglob("*.py")) if target.is_dir() else [target]
    return out


def offenders(parts: tuple[str, ...], forbidden: set[str]) -> dict[str, list[str]]:
    found = {str(p.relative_to(ROOT)): sorted(imports(p) & forbidden) for p in sources(*parts)}
    return {k: v for k, v in found.items() if v}


FRAMEWORKS = {"fastapi", "starlette", "streamlit", "streamlit_webrtc", "uvicorn", "aiortc"}


def test_the_core_imports_no_layer_above_it_and_no_web_or_ui_framework():
    assert offenders(("voiceforge",), {"server", "realtime", "forge", "forge_ui", "app_pages"} | FRAMEWORKS) == {}
    assert len(sources("voiceforge")) > 30  # the walk really read the package


def test_realtime_imports_only_the_core():
    assert offenders(("realtime",), {"server", "forge", "forge_ui", "app_pages"} | FRAMEWORKS) == {}


def test_the_sidecar_imports_neither_the_app_nor_the_cli():
    assert offenders(("server",), {"forge", "forge_ui", "app_pages", "streamlit"}) == {}


def test_pages_import_no_server_internals():
    """Pages go through forge_ui (the Live page's controller) and forge (local runs); only the
    WebRTC adapter, which runs in the app's own process, is reached from forge_ui."""
    assert offenders(("app_pages", "app.py"), {"server", "realtime"}) == {}
    reached = {str(p.relative_to(ROOT)): sorted(n for n in dotted_imports(p) if n.startswith("server.")
                                                and not n.startswith("server.transports"))
               for p in sources("forge_ui")}
    assert {k: v for k, v in reached.items() if v} == {}


def test_only_the_store_imports_sqlalchemy():
    above = [p for p in sources(*PACKAGES, "app.py") if "voiceforge/store/" not in p.as_posix()]
    assert [str(p.relative_to(ROOT)) for p in above if "sqlalchemy" in imports(p)] == []
    assert any("sqlalchemy" in imports(p) for p in sources("voiceforge/store"))


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph() -> dict[str, set[str]]:
    """Module → the project modules it imports (a package import means its ``__init__``)."""
    files = {module_name(p): p for p in sources("voiceforge", "server", "realtime", "forge", "forge_ui")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        targets = set()
        for dotted in dotted_imports(path):
            if dotted in files:
                targets.add(dotted)
        # ``from a.b import c``: c is a submodule (counted above) or a name of a.b (a.b counted)
        graph[name] = {t for t in targets if t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return found


def _package_faces(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The graph without edges from a package's ``__init__`` to its own submodules.

    A package re-exporting its submodules (``voiceforge.providers`` re-exports ``base``) is
    not a cycle with a submodule that imports a sibling through the package.
    """
    return {m: {t for t in ts if not t.startswith(m + ".")} for m, ts in graph.items()}


def test_no_import_cycles():
    graph = _package_faces(import_graph())
    assert len(graph) > 60
    assert cycles(graph) == []


# --- the port --------------------------------------------------------------------------------
OWNERS = ("voiceforge/conversation/", "voiceforge/turn/")
"""The loop and the pipeline: the only code that may touch their insides."""


def port_violations(path: Path) -> list[str]:
    """Reaches behind the port: ``loop.pipeline``, ``loop._x``, ``pipeline.agent`` and the like.

    An object that holds a conversation loop or a turn pipeline (named ``loop``, ``conversation``,
    ``pipeline`` or ending so) is used through its public verbs; a private attribute is never
    read on anything but ``self`` or ``cls``.
    """
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Attribute):
            continue
        holder = node.value
        name = holder.id if isinstance(holder, ast.Name) else holder.attr if isinstance(holder, ast.Attribute) else ""
        name = name.lstrip("_")
        if node.attr.startswith("_") and not node.attr.startswith("__") and name not in ("self", "cls", ""):
            out.append(f"{path.relative_to(ROOT)}:{node.lineno} {name}.{node.attr}")
        elif node.attr == "pipeline" and (name.endswith("loop") or name.endswith("conversation")):
            out.append(f"{path.relative_to(ROOT)}:{node.lineno} {name}.pipeline")
        elif node.attr in ("agent", "memory", "ctx") and name.endswith("pipeline"):
            out.append(f"{path.relative_to(ROOT)}:{node.lineno} {name}.{node.attr}")
    return out


def test_adapters_and_pages_use_only_the_port():
    found = [v for p in sources(*PACKAGES, "app.py") if not any(o in p.as_posix() for o in OWNERS)
             for v in port_violations(p)]
    assert found == []


def test_a_violation_would_be_seen(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f(loop, pipeline):\n    from server.main import create_app\n    import streamlit as st\n"
                   "    loop._held = None\n    pipeline.agent.registry = None\n    return loop.pipeline\n")
    assert {"server", "streamlit"} <= imports(bad)
    hits = port_violations_at(bad)
    assert [h.split(" ")[1] for h in hits] == ["loop._held", "pipeline.agent", "loop.pipeline"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def port_violations_at(path: Path) -> list[str]:
    """:func:`port_violations` for a file outside the repository (the test's own)."""
    global ROOT
    saved, ROOT = ROOT, path.parent
    try:
        return sorted(port_violations(path), key=lambda v: int(v.split(":")[1].split(" ")[0]))
    finally:
        ROOT = saved
