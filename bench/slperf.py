"""The converged SLPerf table (issue 29) from `slsec benchmark` folders: per (architecture,
partition) the mean ± 95% t half-width over seeds of test accuracy, rounds to convergence,
rounds run, wall-clock and MB at the stopping round, each seed's figures beside, the chosen
learning rate and how many seeds the stopping rule fired for; then the seed's claims as paired
differences over seeds (same seed = same data split and initialisation in both protocols).

    .venv/bin/python bench/slperf.py /tmp/bench/benchmark-v1 /tmp/bench/benchmark-v2
"""
from __future__ import annotations

import sys
from pathlib import Path

from _common import ROOT  # noqa: F401  (puts the checkout on sys.path)

from slsec.report.benchmark_report import SEED_PUBLISHED
from slsec.report.results import read_rows
from slsec.report.stats import fmt_ci, t_interval

ORDER = ["vanilla", "U-shaped", "SplitFed (v1)", "SplitFed (v2)"]


def load(folders: list[str]) -> dict[tuple[str, str], list[dict]]:
    cells: dict[tuple[str, str], list[dict]] = {}
    for f in folders:
        for r in read_rows(Path(f) / "results.csv"):
            if r.get("row_kind") == "seed":
                arch = r["architecture"].replace("splitfed", "SplitFed")
                cells.setdefault((arch, r["partition"]), []).append(r)
    return cells


def col(rs: list[dict], k: str) -> list[float]:
    return [float(r[k]) for r in sorted(rs, key=lambda r: int(r["seed"]))]


def table(cells: dict) -> str:
    out = ["| architecture | partition | lr | test accuracy | per seed | rounds to convergence | "
           "per seed | rounds run | rule fired | wall-clock s | MB on the wire | seed's figure "
           "(CIFAR-10/ResNet-18) |", "|" + "---|" * 12]
    for (arch, part) in sorted(cells, key=lambda c: (ORDER.index(c[0]) if c[0] in ORDER else 9, c[1] != "iid")):
        rs = cells[(arch, part)]
        acc, conv = col(rs, "test_accuracy"), col(rs, "rounds_to_convergence")
        proto = "ushaped" if arch == "U-shaped" else "splitfed" if "SplitFed" in arch else "vanilla"
        pub = SEED_PUBLISHED[proto]
        out.append(
            f"| {arch} | {'IID' if part == 'iid' else 'Dirichlet 0.5'} | {float(rs[0]['lr']):g} | "
            f"{fmt_ci(*t_interval(acc))} | {' / '.join(f'{a:.3f}' for a in acc)} | "
            f"{fmt_ci(*t_interval(conv), 1)} | {' / '.join(f'{c:.0f}' for c in conv)} | "
            f"{fmt_ci(*t_interval(col(rs, 'rounds_run')), 1)} | "
            f"{sum(int(float(r['converged'])) for r in rs)}/{len(rs)} | "
            f"{fmt_ci(*t_interval(col(rs, 'wall_clock_s')), 1)} | "
            f"{fmt_ci(*t_interval(col(rs, 'mb_on_wire')), 0)} | "
            f"{pub[0 if part == 'iid' else 1]:.1f}%, {pub[2]} rounds |")
    return "\n".join(out)


def paired(cells: dict, a: str, b: str, part: str, k: str) -> str:
    """mean ± 95% half-width of (a − b) over seeds, paired by seed."""
    ra = {r["seed"]: float(r[k]) for r in cells.get((a, part), [])}
    rb = {r["seed"]: float(r[k]) for r in cells.get((b, part), [])}
    d = [ra[s] - rb[s] for s in sorted(set(ra) & set(rb))]
    if not d:
        return "–"
    m, h = t_interval(d)
    verdict = "n/a" if h != h else ("a > b" if m - h > 0 else "a < b" if m + h < 0 else "within noise")
    return f"{fmt_ci(m, h, 3 if k == 'test_accuracy' else 1)} ({verdict}; n={len(d)})"


def claims(cells: dict) -> str:
    out = ["| claim (a vs b) | partition | Δ test accuracy (a − b) | Δ rounds to convergence (a − b) |",
           "|---|---|---|---|"]
    for a, b in (("SplitFed (v1)", "vanilla"), ("SplitFed (v2)", "vanilla"), ("U-shaped", "vanilla")):
        for part in ("iid", "dirichlet"):
            out.append(f"| {a} vs {b} | {'IID' if part == 'iid' else 'Dirichlet 0.5'} | "
                       f"{paired(cells, a, b, part, 'test_accuracy')} | "
                       f"{paired(cells, a, b, part, 'rounds_to_convergence')} |")
    return "\n".join(out)


if __name__ == "__main__":
    cells = load(sys.argv[1:])
    print(table(cells))
    print()
    print(claims(cells))
