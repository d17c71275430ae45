"""Label-protection frontier of vertical SL on ticdata.csv (imbalanced: utility and leakage as
ROC AUC), 2 passive parties, 3 seeds per setting.

Usage (from the repo root):

    .venv/bin/python bench/vertical_frontier.py [--seeds 3] [--rounds 10]

Per setting: the test ROC AUC and accuracy of the trained model, and the label AUC of the
strongest adaptive attack by passive party 1 (the maximum over completion, cluster, cosine,
norm and residual (adaptive to Marvell: the norm off each batch's noise axis), each told the
defenses' public mechanisms). A binary score that ranks the labels the
wrong way round (AUC < 0.5) still separates them: an attacker who knows one record's label
turns it round, so the frontier judges max(AUC, 1 - AUC) ("separation"), the defender's worst
case; the AUC as the attack oriented it is printed beside it. Prints the settings whose
separation's upper 95% bound stays <= 0.60, with their utility cost against the undefended
runs.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import one_thread  # noqa: E402
from vertical import assembled, config, test_auc  # noqa: E402

from slsec.report.stats import fmt_ci, t_interval  # noqa: E402
from slsec.run.harness import resolve, run_attack  # noqa: E402
from slsec.run.runner import run_local  # noqa: E402
from slsec.run.scoring import score  # noqa: E402
from slsec.run.setup import prepare  # noqa: E402

SETTINGS = [("none", {})] + \
    [(f"dp sigma={s}", {"defense": "dp", "sigma": s}) for s in (0.5, 1.0, 2.0, 4.0)] + \
    [(f"label-rr eps={e}", {"defense": "label-rr", "label_epsilon": e}) for e in (2.0, 1.0, 0.5)] + \
    [("max-norm", {"defense": "max-norm"})] + \
    [(f"marvell s={p:g}", {"defense": "marvell", "marvell_power": p})
     for p in (0.25, 1.0, 4.0, 16.0, 64.0)] + \
    [(f"mid lambda={w}", {"defense": "mid", "mid_weight": w}) for w in (0.01, 0.1, 1.0)] + \
    [(f"grad-sparsify keep={k}", {"defense": "grad-sparsify", "grad_keep": k})
     for k in (0.5, 0.1, 0.01)]
METHODS = ("completion", "cluster", "cosine", "norm", "residual")


def run_setting(extra: dict, seed: int, args: argparse.Namespace) -> dict[str, float]:
    cfg = config("ticdata.csv", seed, args, **extra)
    setup = prepare(cfg)
    outcomes = run_local(resolve(cfg, setup))
    server = outcomes[0]
    aucs = {}
    for method in METHODS:
        c = cfg.replace(method=method)
        m, _ = score(e := resolve(c, setup), run_attack(e, outcomes[1]), server.truth_inputs,
                     server.truth_labels)
        aucs[method] = m["label_auc"]
    best = max(aucs, key=aucs.get)
    sep = {k: max(v, 1.0 - v) for k, v in aucs.items()}
    return {"utility AUC": test_auc(assembled(setup, outcomes), setup.data.test),
            "accuracy": server.records[-1].accuracy, "label AUC": aucs[best],
            "separation": max(sep.values()), **{f"{k} AUC": v for k, v in aucs.items()}}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--observe", type=int, default=1024)
    p.add_argument("--only", default="", help="comma list of defenses to run (with 'none')")
    p.add_argument("--settings", default="", help="comma list of setting names to run, e.g. "
                   "'none,marvell s=16' (with --only: both filters apply)")
    args = p.parse_args()
    one_thread()
    table: dict[str, dict[str, list[float]]] = {}
    only = set(args.only.split(",")) - {""}
    for name, extra in SETTINGS:
        if only and extra and extra["defense"] not in only:
            continue
        if args.settings and name not in args.settings.split(","):
            continue
        for seed in range(args.seeds):
            for k, v in run_setting(extra, seed, args).items():
                table.setdefault(name, {}).setdefault(k, []).append(v)
        row = table[name]
        print(f"{name:22s} utility ROC AUC {fmt_ci(*t_interval(row['utility AUC']))}  "
              f"acc {fmt_ci(*t_interval(row['accuracy']))}  strongest label AUC "
              f"{fmt_ci(*t_interval(row['label AUC']))}  separation "
              f"{fmt_ci(*t_interval(row['separation']))}  ("
              + ", ".join(f"{m} {fmt_ci(*t_interval(row[f'{m} AUC']))}" for m in METHODS)
              + ")", flush=True)
    base = table["none"]
    print(f"\nsettings whose label separation stays <= 0.60 (upper 95% bound), "
          f"{args.seeds} seeds, ticdata, 2 parties:")
    found = False
    for name, row in table.items():
        mean, hw = t_interval(row["separation"])
        if mean + (hw if hw == hw else 0.0) <= 0.60:
            found = True
            cost = t_interval([b - d for b, d in zip(base["utility AUC"], row["utility AUC"])])
            acc = t_interval([b - d for b, d in zip(base["accuracy"], row["accuracy"])])
            print(f"  {name}: separation {fmt_ci(mean, hw)}; utility ROC AUC cost "
                  f"{fmt_ci(*cost)}, accuracy cost {fmt_ci(*acc)}")
    if not found:
        print("  none")


if __name__ == "__main__":
    main()
