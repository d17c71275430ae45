"""The benchmark's tables and report: accuracy, rounds to convergence, time and bytes per
architecture x partition x dataset (with seeds: mean ± 95% CI), beside the seed's figures."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from rich.table import Table

from slsec import report as rpt
from slsec.report.console import console, warn
from slsec.errors import UserError
from slsec.report.results import intact_rows

ARCHITECTURE = {"vanilla": "vanilla", "ushaped": "U-shaped", "splitfed": "SplitFed",
                "splitfed-async": "SplitFed (async)", "fedavg": "FedAvg (baseline)"}


# The seed's SLPerf-style figures: CIFAR-10 / ResNet-18, test accuracy % IID, non-IID, rounds.
# Published by the seed, NOT measured by this code.
SEED_PUBLISHED: dict[str, tuple[float, float, int]] = {
    "vanilla": (91.2, 84.7, 120), "ushaped": (90.1, 83.9, 135), "splitfed": (92.4, 88.3, 95)}


CSV_NAME = "results.csv"


TABLE_HEADER = ["architecture", "partition", "dataset", "test accuracy", "rounds to convergence",
                "wall-clock s", "MB on the wire"]


def _partition_label(partition: str, alpha: float) -> str:
    return "IID" if partition == "iid" else f"Dirichlet α={alpha:g}"


def seeds_text(n: int, first: int) -> str:
    from slsec.report.stats import seeds_text as text
    return text(n, first)


def _f(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def _conv(v: Any) -> Any:
    return int(float(v)) if v not in (None, "", "None") else None


def table_rows(rows: list[dict[str, Any]]) -> list[list[Any]]:
    """The report table (formatted text): one line per cell, in grid order; several seeds:
    mean ± 95% half-width."""
    if any(r.get("row_kind") == "aggregate" for r in rows):
        return [[r["architecture"], _partition_label(r["partition"], _f(r.get("alpha")) or 0.5),
                 f"{r['dataset']} ({r['model']})", _pm(r, "test_accuracy", 4),
                 _pm(r, "rounds_to_convergence", 1), _pm(r, "wall_clock_s", 1),
                 _pm(r, "mb_on_wire", 1)] for r in rows]
    return [[r["architecture"], _partition_label(r["partition"], _f(r.get("alpha")) or 0.5),
             f"{r['dataset']} ({r['model']})", rpt.fmt(_f(r["test_accuracy"]), 4),
             rpt.fmt(_conv(r["rounds_to_convergence"])), rpt.fmt(_f(r["wall_clock_s"]), 1),
             rpt.fmt(_f(r["mb_on_wire"]), 1)] for r in rows]


def _pm(r: dict[str, Any], key: str, digits: int) -> str:
    from slsec.report.stats import fmt_ci
    return fmt_ci(_f(r.get(key)), _f(r.get(key + "_ci95")), digits)


def _find(rows: list[dict[str, Any]], dataset: str, protocol: str, partition: str) -> dict | None:
    return next((r for r in rows if r["dataset"] == dataset and r["protocol"] == protocol
                 and r["partition"] == partition), None)


def seed_rows(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    """The seed's published CIFAR-10 figures, with ours (each dataset measured) beside them."""
    header = ["architecture", "figures from", "IID acc %", "non-IID (Dirichlet) acc %", "rounds (IID)"]
    out: list[list[Any]] = []
    for proto, (iid, non, rounds) in SEED_PUBLISHED.items():
        out.append([ARCHITECTURE[proto], "seed, published (CIFAR-10/ResNet-18)", f"{iid:.1f}",
                    f"{non:.1f}", str(rounds)])
        for d in dict.fromkeys(r["dataset"] for r in rows):
            a, b = _find(rows, d, proto, "iid"), _find(rows, d, proto, "dirichlet")
            if a or b:
                model = (a or b)["model"]  # type: ignore[index]
                out.append([ARCHITECTURE[proto], f"ours, measured ({d}/{model})",
                            rpt.fmt(100 * _f(a["test_accuracy"]), 1) if a else "–",
                            rpt.fmt(100 * _f(b["test_accuracy"]), 1) if b else "–",
                            rpt.fmt(_conv(a["rounds_to_convergence"])) if a else "–"])
    return header, out


def verdicts(rows: list[dict[str, Any]]) -> list[str]:
    """One honest line per dataset: SplitFed or vanilla, which is better under Dirichlet here."""
    lines = []
    for d in dict.fromkeys(r["dataset"] for r in rows):
        sf, va = _find(rows, d, "splitfed", "dirichlet"), _find(rows, d, "vanilla", "dirichlet")
        if not (sf and va):
            continue
        a_sf, a_va = _f(sf["test_accuracy"]), _f(va["test_accuracy"])
        diff = 100 * (a_sf - a_va)
        step = 100 / max(int(_f(sf.get("n_test")) or 1), 1)
        noise = 100 * max(_f(sf.get("last5_std_accuracy")), _f(va.get("last5_std_accuracy")), 0.0)
        alpha = _f(sf.get("alpha")) or 0.5
        hw_sf, hw_va = _f(sf.get("test_accuracy_ci95")), _f(va.get("test_accuracy_ci95"))
        n = sf.get("n_seeds")
        seeds = (f"mean of {n} seeds, 95% CI ± {100 * hw_sf:.1f} / ± {100 * hw_va:.1f} points"
                 if n and hw_sf == hw_sf and hw_va == hw_va else "one seed")
        rule = sf.get("converged") not in (None, "")   # trained to convergence
        when = (f"at each run's stopping round (at most {sf['rounds']})" if rule else
                f"after {sf['rounds']} rounds")
        head = (f"Dirichlet α={alpha:g}, {d}: SplitFed {100 * a_sf:.1f}% vs vanilla "
                f"{100 * a_va:.1f}% test accuracy {when} (measured here, {seeds})")
        if seeds != "one seed" and abs(diff) <= 100 * (hw_sf + hw_va):
            tail = (f"no winner: the {abs(diff):.1f}-point gap is within the seeds' spread "
                    f"(the two 95% intervals overlap).")
        elif abs(diff) < step - 1e-9 or abs(diff) <= noise:
            tail = (f"no winner: the {abs(diff):.1f}-point gap is within "
                    f"{'one test sample' if abs(diff) < step - 1e-9 else 'the round-to-round noise'}"
                    f" ({step:.1f} points per test sample; last-5-round std up to {noise:.1f} points).")
        else:
            better = "SplitFed" if diff > 0 else "vanilla"
            tail = (f"{better} is better here, by {abs(diff):.1f} points (last-5-round std up to "
                    f"{noise:.1f} points)" + ("; the seed's claim that SplitFed leads under "
                                              "non-IID data holds here." if diff > 0 else
                                              "; this does NOT reproduce the seed's SplitFed lead "
                                              "(88.3% vs 84.7% on CIFAR-10)."))
        climbing = [name for name, r in (("SplitFed", sf), ("vanilla", va))
                    if (_f(r["converged"]) < 1 if rule else
                        (_conv(r.get("rounds_to_convergence")) or 0) >= int(_f(r["rounds"])) - 1)]
        if climbing and rule:
            tail += (f" The stopping rule did not fire for every seed of "
                     f"{' and '.join(climbing)} within {sf['rounds']} rounds.")
        elif climbing:
            tail += (f" {' and '.join(climbing)} {'was' if len(climbing) == 1 else 'were'} still "
                     f"improving in the last rounds, so this compares progress after "
                     f"{sf['rounds']} rounds, not final accuracy.")
        lines.append(f"{head}: {tail}")
    return lines


def print_tables(rows: list[dict[str, Any]]) -> None:
    t = Table(title="slsec benchmark (measured here)")
    for c in TABLE_HEADER:
        t.add_column(c, justify="left" if c in ("architecture", "partition", "dataset") else "right")
    for r in table_rows(rows):
        t.add_row(*r)
    console.print(t)
    header, srows = seed_rows(rows)
    t = Table(title="the seed's published CIFAR-10 / ResNet-18 figures (NOT ours) beside ours")
    for c in header:
        t.add_column(c, justify="left" if c == "architecture" else "right")
    for r in srows:
        t.add_row(*[rpt.fmt(c, 1) for c in r], style=None if r[1].startswith("ours") else "dim")
    console.print(t)
    for line in verdicts(rows):
        console.print(line)


def render_benchmark(folder: str | Path, rows: list[dict[str, Any]] | None = None, *,
                     total: dict[str, float] | None = None) -> list[Path]:
    """report.md + report.html of a benchmark folder from its results.csv rows."""
    folder = Path(folder)
    if rows is None:
        rows = intact_rows(folder / CSV_NAME, "benchmark", warn)
        need = ("architecture", "partition", "dataset", "model", "cuts", "rounds", "batch_size",
                "lr", "clients", "seed", "backend", "test_accuracy", "rounds_to_convergence",
                "wall_clock_s", "mb_on_wire", "protocol")
        if rows and any(k not in rows[0] for k in need):
            raise UserError(f"{folder / CSV_NAME} is not a benchmark table (columns "
                            f"{', '.join(k for k in need if k not in rows[0])} missing)")
        if any(r.get("row_kind") == "aggregate" for r in rows):
            rows = [r for r in rows if r.get("row_kind") == "aggregate"]
    if not rows:
        raise UserError(f"{folder / CSV_NAME} holds no benchmark rows")
    settings = []
    for d in dict.fromkeys(r["dataset"] for r in rows):
        mine = [r for r in rows if r["dataset"] == d]
        cuts = {", ".join(_cuts(r["cuts"])): None for r in mine}
        settings.append(f"{d}: {mine[0]['rounds']} rounds, batch {mine[0]['batch_size']}, lr "
                        f"{mine[0]['lr']}, cut(s) {' / '.join(cuts)}")
    r0 = rows[0]
    n = int(_f(r0.get("n_seeds")) or 1) if r0.get("row_kind") == "aggregate" else 1
    blocks: list[tuple] = [("p", f"{r0['clients']} clients, {seeds_text(n, int(_f(r0['seed'])))}, backend "
                                 f"{r0['backend']}, machine with {os.cpu_count()} CPU core(s). "
                                 + "; ".join(settings) + ".")]
    if total:
        blocks.append(("p", f"Total wall-clock {total['wall_s']:.0f} s (CPU {total['cpu_s']:.0f} s) "
                            f"for {len(rows)} cells."))
    blocks += [("h", "Results (measured here)"), ("table", TABLE_HEADER, table_rows(rows)),
               ("p", "Test accuracy: final round, on the dataset's held-out test split. Rounds to "
                     "convergence: first round reaching 98% of the run's best accuracy (or "
                     "--target-accuracy). Wall-clock: training including the per-round test "
                     "evaluation. MB on the wire: every byte through the server's links "
                     "(headers included), both directions.")]
    header, srows = seed_rows(rows)
    blocks += [("h", "The seed's published figures (CIFAR-10 / ResNet-18), not ours"),
               ("p", "**Rows marked 'seed, published' are the seed's SLPerf-style figures on "
                     "CIFAR-10 with ResNet-18 (non-IID = its Dirichlet split); this run did not "
                     "produce them. Rows marked 'ours' are measured by this run on the datasets "
                     "named (run with --dataset cifar10 --data-root DIR to measure CIFAR-10 / "
                     "ResNet-18 here).**"),
               ("table", header, srows)]
    lines = verdicts(rows)
    if lines:
        blocks += [("h", "SplitFed vs vanilla under Dirichlet α=0.5")] + [("p", s) for s in lines]
    return rpt.write_document(folder, "slsec benchmark: SL architectures × partitions × datasets",
                              blocks)


def _cuts(v: Any) -> list[str]:
    import json
    if isinstance(v, str):
        try:
            return list(json.loads(v))
        except (ValueError, TypeError):
            return [v]
    return list(v)
