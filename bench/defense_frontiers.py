"""The frontiers of several cut/gradient defenses side by side, from `slsec sweep` folders.

Usage (from the repo root), after one `slsec sweep --seeds N` per defense into the same --out:

    .venv/bin/python bench/defense_frontiers.py reports/f28t/mid reports/f28t/ctopk ...

Reads each sweep's per-seed rows (`row_kind = seed` in results.csv) and prints, per defense
setting, mean ± 95% t half-width over seeds of: accuracy, accuracy as a fraction of the same
seed's undefended accuracy (the cell's twin), attack SSIM, the attacker's prior SSIM, the SSIM
gain over the prior (and its upper bound), top-1 re-identification; the methods that won; and
VFLAIR's DCS of the cell (its aggregate row, computed from the seed means). The undefended row
comes from the twins. Then, per defense, the verdict of issue #28: the setting with the highest
accuracy whose gain's upper bound is <= 0.05 at >= 90% of undefended accuracy (mean ratio), or
"none" and the closest: the lowest gain upper bound among the settings at >= 90% (or among all
when none keeps 90%).
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from slsec.report.stats import t_interval  # noqa: E402

# the parameter each defense's setting is read from
SETTING = {"mid": ("mid_weight",), "compress": ("compress_keep", "compress_bits"),
           "grad-sparsify": ("grad_keep",), "nopeek": ("nopeek_weight",), "dp": ("sigma",)}
GAIN_MAX, ACC_MIN = 0.05, 0.90
CUT_MAPS = ("mid", "compress", "dp")   # defenses that change what crosses the cut at inference


def _f(v: str) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def ci(values: list[float]) -> tuple[float, float]:
    xs = [v for v in values if not math.isnan(v)]
    return t_interval(xs) if xs else (math.nan, math.nan)


def fmt(m: float, h: float) -> str:
    return f"{m:.3f}" if math.isnan(h) else f"{m:.3f} ± {h:.3f}"


def setting_of(row: dict[str, str]) -> tuple[str, str]:
    d = row["defense"]
    keys = ("cut",) + SETTING.get(d, ())
    parts = [row[k] if k == "cut" else f"{k}={_f(row[k]):g}" for k in keys
             if not (k == "compress_keep" and _f(row[k]) == 1.0)
             and not (k == "compress_bits" and _f(row[k]) == 0)]
    return d, " ".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sweeps", nargs="+", type=Path)
    ap.add_argument("--deployed", type=Path, default=None,
                    help="bench/deployed_accuracy.py's JSON lines, for sweeps run before the "
                         "runner reported the accuracy as deployed (2026-12-07): the verdict "
                         "then reads it from there; later sweeps' accuracy already is")
    args = ap.parse_args()
    deployed: dict[tuple[str, str, str], float] = {}
    if args.deployed:
        for line in args.deployed.read_text().splitlines():
            r = json.loads(line)
            d = dict(r["setting"])
            key = (d.pop("defense"), " ".join([r.get("cut", "pool2")]
                                              + [f"{k}={float(v):g}" for k, v in d.items()]))
            deployed[key + (str(r["seed"]),)] = float(r["deployed"])
    cells: dict[tuple[str, str], list[dict[str, str]]] = defaultdict(list)
    dcs: dict[tuple[str, str], float] = {}
    twins: dict[tuple[str, str], dict[str, str]] = {}
    for folder in args.sweeps:
        with open(folder / "results.csv", newline="") as fh:
            for row in csv.DictReader(fh):
                key = setting_of(row)
                if row.get("row_kind") == "aggregate":
                    dcs[key] = _f(row.get("dcs"))
                    continue
                cells[key].append(row)
                twins[(row["cut"], row["seed"])] = row
    lines = ["| defense | setting | seeds | accuracy | % of undefended | attack SSIM | prior SSIM "
             "| SSIM gain (upper 95%) | re-id top-1 | method | DCS | deployed accuracy "
             "| deployed % |",
             "|" + "---|" * 13]
    for cut in sorted({c for c, _ in twins}, key=list(dict.fromkeys(c for c, _ in twins)).index):
        und = [r for (c, _), r in twins.items() if c == cut]
        gain = ci([_f(r["undefended_ssim_gain_mean"]) for r in und])
        lines.append(f"| none | {cut} | {len(und)} | "
                     f"{fmt(*ci([_f(r['undefended_accuracy']) for r in und]))} | 100% | "
                     f"{fmt(*ci([_f(r['undefended_attack_ssim_mean']) for r in und]))} | "
                     f"{fmt(*ci([_f(r['undefended_prior_ssim_mean']) for r in und]))} | "
                     f"{fmt(*gain)} ({gain[0] + gain[1]:.3f}) | "
                     f"{fmt(*ci([_f(r['undefended_reid_top1']) for r in und]))} | | | | |")
    verdict: dict[str, list[tuple[float, float, float, str]]] = defaultdict(list)
    for key, rows in cells.items():
        ratio = reported = ci([_f(r["accuracy"]) / _f(r["undefended_accuracy"]) for r in rows])
        dep = [deployed.get(key + (r["seed"],), math.nan) for r in rows]
        dep_ratio = ci([a / _f(r["undefended_accuracy"]) for a, r in zip(dep, rows)])
        if not any(math.isnan(a) for a in dep) and args.deployed:
            ratio = dep_ratio
        elif args.deployed and key[0] in ("mid", "compress", "dp"):
            dep_ratio = (math.nan, math.nan)
        g = ci([_f(r["ssim_gain_mean"]) for r in rows])
        upper = g[0] + (0.0 if math.isnan(g[1]) else g[1]) if len(rows) > 1 else math.inf
        methods = ",".join(sorted({r["attack_method"] for r in rows}))
        lines.append(
            f"| {key[0]} | {key[1]} | {len(rows)} | {fmt(*ci([_f(r['accuracy']) for r in rows]))} "
            f"| {100 * reported[0]:.1f}% | {fmt(*ci([_f(r['attack_ssim_mean']) for r in rows]))} "
            f"| {fmt(*ci([_f(r['prior_ssim_mean']) for r in rows]))} | {fmt(*g)} ({upper:.3f}) "
            f"| {fmt(*ci([_f(r['reid_top1']) for r in rows]))} | {methods} "
            f"| {dcs.get(key, math.nan):.3f} | "
            + (f"{fmt(*ci(dep))} | {100 * dep_ratio[0]:.1f}% |" if key[0] in CUT_MAPS
               and args.deployed else "as reported | as reported |"))
        where = f"{key[0]} at {rows[0]['cut']}"
        verdict[where].append((ratio[0], upper, _f(rows[0]["accuracy"]), key[1]))
    print("\n".join(lines))
    print()
    for d, opts in verdict.items():
        ok = [o for o in opts if o[0] >= ACC_MIN and o[1] <= GAIN_MAX]
        if ok:
            best = max(ok)
            print(f"{d}: {best[3]} keeps gain upper {best[1]:.3f} <= {GAIN_MAX} at "
                  f"{100 * best[0]:.1f}% of undefended accuracy")
            continue
        useful = [o for o in opts if o[0] >= ACC_MIN]
        if useful:
            near = min(useful, key=lambda o: o[1])
            why = f"the lowest gain at >= {100 * ACC_MIN:.0f}% accuracy"
        else:
            near = min(opts, key=lambda o: o[1])
            why = f"no setting keeps {100 * ACC_MIN:.0f}% accuracy; the lowest gain"
        print(f"{d}: none does; {why}: {near[3]}, gain upper {near[1]:.3f} at "
              f"{100 * near[0]:.1f}% of undefended accuracy")


if __name__ == "__main__":
    main()
