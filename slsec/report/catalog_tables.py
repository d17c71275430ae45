"""`slsec list`'s document: what the CLI accepts, as tables (from slsec.catalog: no torch
import, so the command answers in well under a second)."""
from __future__ import annotations

from rich.console import RenderableType
from rich.table import Table
from rich.text import Text


def catalog_tables() -> list[RenderableType]:
    """Every registry as a table (protocols, attacks, defenses, models), the datasets as a line,
    and each broken SLSEC_PLUGINS file named (it is left out of the tables)."""
    from slsec import catalog, plugins

    out: list[RenderableType] = []
    t = Table(title="protocols")
    t.add_column("name"), t.add_column("cuts"), t.add_column("labels reach the server")
    for name, (cuts, labels) in sorted(catalog.PROTOCOLS.items()):
        t.add_row(name, str(cuts), "yes (100% leak)" if labels else "no")
    out.append(t)
    t = Table(title="attacks")
    t.add_column("name"), t.add_column("role per protocol"), t.add_column("methods (needs)")
    for name, a in sorted(catalog.ATTACKS.items()):
        t.add_row(name, ", ".join(f"{p}: {r}" for p, r in sorted(a["roles"].items())),
                  "; ".join(f"{m} ({', '.join(sorted(k))}{_only(a, m)})"
                            for m, k in a["methods"].items()))
    out.append(t)
    t = Table(title="defenses")
    t.add_column("name"), t.add_column("point"), t.add_column("protocols")
    for name, (point, protocols) in sorted(catalog.DEFENSES.items()):
        t.add_row(name, point, ", ".join(sorted(protocols)))
    out.append(t)
    out.append(Text("datasets: " + ", ".join(sorted(catalog.DATASETS))
                    + ", tu:<NAME>, images:<DIR>, npz:<FILE>, csv:<FILE>"))
    t = Table(title="models and cut points")
    t.add_column("model"), t.add_column("cut points (shallow → deep)")
    for name, cuts in sorted(catalog.MODELS.items()):
        t.add_row(name, ", ".join(cuts))
    out.append(t)
    out += [Text(f"broken plug-in (left out): {p}") for p in plugins.problems()]
    return out


def _only(attack: dict, method: str) -> str:
    """'; <protocols> only' for a method that applies to some of the attack's protocols."""
    only = attack.get("method_protocols", {}).get(method)
    return f"; {', '.join(sorted(only))} only" if only else ""
