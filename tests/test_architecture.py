"""The package's shape: imports point one way (no cycles among slsec modules and plug-ins,
counting imports inside functions too), the core never compares a plug-in's name, and a module
over MAX_LINES lines says why in its docstring."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# source folder -> package it installs as (pyproject's package-dir mapping)
FOLDERS = {"slsec": "slsec", "attacks": "slsec.attacks", "defenses": "slsec.defenses",
           "protocols": "slsec.protocols"}
MAX_LINES = 300


def _modules() -> dict[str, Path]:
    out = {}
    for folder, package in FOLDERS.items():
        for path in (ROOT / folder).rglob("*.py"):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            out[".".join([package, *parts])] = path
    return out


def _imports(module: str, path: Path, known: set[str]) -> set[str]:
    """slsec modules `module` imports anywhere in its body (package imports included)."""
    found: set[str] = set()
    is_pkg = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = module.split(".") if is_pkg else module.split(".")[:-1]
                pkg = pkg[: len(pkg) - node.level + 1]
                base = ".".join(pkg + ([base] if base else []))
            names = [f"{base}.{a.name}" for a in node.names] + [base]
        for n in names:
            while n and n not in known:
                n = n.rpartition(".")[0]
            if n and n != module and not module.startswith(n + "."):
                found.add(n)   # (a module's own parent packages are imported before it anyway)
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def import_graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    graph = {m: _imports(m, p, known) for m, p in mods.items()}
    for package in ("slsec.attacks", "slsec.defenses", "slsec.protocols"):   # import_all
        graph[package] |= {m for m in mods if m.startswith(package + ".")}
    return graph


def test_the_import_graph_has_no_cycles():
    assert _cycles(import_graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def _plugin_names() -> set[str]:
    from slsec import plugins
    return {d.name for d in plugins.declarations()}


def _name_comparisons(tree: ast.AST, names: set[str]) -> list[tuple[int, str]]:
    """(line, name) of every comparison of a plug-in name literal (==, !=, in, not in)."""
    hits = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Compare):
            continue
        for side in [node.left, *node.comparators]:
            elts = side.elts if isinstance(side, (ast.Tuple, ast.List, ast.Set)) else [side]
            for e in elts:
                if isinstance(e, ast.Constant) and e.value in names:
                    hits.append((node.lineno, e.value))
    return hits


def test_the_core_compares_no_plugin_name():
    names = _plugin_names()
    hits = {str(p.relative_to(ROOT)): h for p in sorted((ROOT / "slsec").rglob("*.py"))
            if (h := _name_comparisons(ast.parse(p.read_text(encoding="utf-8")), names))}
    assert hits == {}


def test_the_name_finder_finds_a_comparison():
    tree = ast.parse("if cfg.protocol == 'vanilla' or d in ('dp', 'x'): pass")
    assert _name_comparisons(tree, {"vanilla", "dp"}) == [(1, "vanilla"), (1, "dp")]


def test_a_long_module_says_why_in_its_docstring():
    """Over MAX_LINES lines, the module docstring gives the reason ("Over 300 lines: ...")."""
    unexplained = []
    for module, path in sorted(_modules().items()):
        text = path.read_text(encoding="utf-8")
        doc = ast.get_docstring(ast.parse(text)) or ""
        if len(text.splitlines()) > MAX_LINES and str(MAX_LINES) not in doc:
            unexplained.append(f"{module} ({len(text.splitlines())} lines)")
    assert unexplained == []


# what builds a document (a table, a page, a plot): slsec/report's work, never the CLI's
RENDERERS = ("rich.table", "rich.markdown", "matplotlib", "slsec.report.plots")


def test_the_cli_renders_no_document():
    """slsec/cli parses options and prints what slsec.report renders: none of its modules
    imports a table, page or plot builder."""
    mods = _modules()
    found = {m: sorted(n for n in _names(p) if n.startswith(RENDERERS))
             for m, p in mods.items() if m.startswith("slsec.cli")}
    assert {m: n for m, n in found.items() if n} == {}


def _names(path: Path) -> set[str]:
    """Every module name `path` imports (any package), anywhere in its body."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
    return out
