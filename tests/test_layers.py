"""The layers point one way (DESIGN.md): cli -> study -> run -> plug-in bases; report is read
by study and cli and reads neither; api.py sits on study and never on the command line; no
document rendering is left in the command line's package beyond printing."""
from __future__ import annotations

from test_architecture import import_graph


def _reaches(graph: dict[str, set[str]], module: str, prefix: str) -> list[str]:
    return sorted(m for m in graph[module] if m == prefix or m.startswith(prefix + "."))


def test_imports_point_one_way() -> None:
    graph = import_graph()
    bad = {}
    for m in graph:
        rules = []
        if m == "slsec.api" or m.startswith(("slsec.study", "slsec.run", "slsec.report")):
            rules.append("slsec.cli")
        if m.startswith(("slsec.report", "slsec.run")):
            rules.append("slsec.study")
        for r in rules:
            if hit := _reaches(graph, m, r):
                bad[m] = hit
    assert bad == {}


def test_the_layer_check_sees_a_wrong_way_import() -> None:
    assert _reaches({"slsec.api": {"slsec.cli.commands"}}, "slsec.api", "slsec.cli") == \
        ["slsec.cli.commands"]
