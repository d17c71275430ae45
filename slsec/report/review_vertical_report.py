"""The vertical review's grades, frontier and outputs (slsec/study/review_vertical.py measures).

Grades per (setting, party), on the means over seeds, with the horizontal review's thresholds
(slsec/report/review_report.py): labels by the strongest attack's separation max(AUC, 1 - AUC);
columns by the reconstruction's gain over the prior (R² in standardised units for numeric
columns, else the accuracy gain of categorical ones; the same GAIN_HIGH/GAIN_MEDIUM) and top-1
re-identification beside the prior's. A setting's risk is its worst party's. The frontier plots
the utility (ROC AUC when the labels are imbalanced, i.e. the majority class holds >= 70%,
else accuracy) against the worst party's label separation, with 95% intervals; a setting
"keeps the labels" when that separation's upper bound stays <= LABEL_TARGET.
"""
from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from slsec.config import RunConfig
from slsec.report.results import atomic_write, save_figure
from slsec.report.review_report import (GRADES, RISK_RULE, input_grade, label_grade,
                                        overall_grade)
from slsec.report.stats import fmt_ci, seeds_text

LABEL_TARGET = 0.60
IMBALANCED = 0.70    # majority-class share from which utility and leakage are judged by AUC


def _f(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def upper(r: dict[str, Any], key: str) -> float:
    """The upper 95% bound (the mean with one seed)."""
    hw = _f(r.get(key + "_ci95"))
    return _f(r.get(key)) + (0.0 if math.isnan(hw) else hw)


def imbalanced(rows: list[dict[str, Any]]) -> bool:
    prior = [_f(r.get("label_baseline_accuracy")) for r in rows]
    return any(p >= IMBALANCED for p in prior if not math.isnan(p)) and \
        any(not math.isnan(_f(r.get("test_auc"))) for r in rows)


def utility_key(rows: list[dict[str, Any]]) -> str:
    return "test_auc" if imbalanced(rows) else "accuracy"


def grade(rows: list[dict[str, Any]], budget: float | None, relative: bool
          ) -> list[dict[str, Any]]:
    """Each row's grades; each setting's worst party, frontier flag and budget verdict; the
    recommendation (lowest worst risk, then least utility cost) marked on its rows."""
    for r in rows:
        r["label_risk"] = label_grade(False, _f(r.get("label_separation")))
        r["input_risk"] = input_grade(_f(r.get("feature_gain")), _f(r.get("reid_top1")),
                                      _f(r.get("prior_reid_top1")))
        r["risk"] = overall_grade(r["label_risk"], r["input_risk"])
    base_acc = next((_f(r.get("accuracy")) for r in rows if r["setting"] == "none"), math.nan)
    cost = utility_key(rows) + "_cost"
    for s in settings_of(rows):
        mine = [r for r in rows if r["setting"] == s]
        worst = overall_grade(*(r["risk"] for r in mine))
        sep_hi = max(upper(r, "label_separation") for r in mine)
        acc = _f(mine[0].get("accuracy"))
        floor = None if budget is None else budget * base_acc if relative else budget
        ok = floor is None or acc >= floor
        for r in mine:
            r.update(setting_risk=worst, setting_label_upper=sep_hi,
                     keeps_labels=sep_hi <= LABEL_TARGET, eligible=ok,
                     why="" if ok else f"accuracy {acc:.3f} < {floor:.3f}")
    picks = {r["setting"]: r for r in rows if r["eligible"]}
    best = min(picks.values(), default=None,
               key=lambda r: (GRADES.index(r["setting_risk"]) if r["setting_risk"] in GRADES
                              else 3, _f(r.get(cost)) if not math.isnan(_f(r.get(cost))) else 0.0))
    for r in rows:
        r["recommended"] = best is not None and r["setting"] == best["setting"]
    return rows


def settings_of(rows: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(r["setting"] for r in rows))


COLUMNS = (("setting", "setting"), ("party", "party"), ("columns", "cols"),
           ("utility", "accuracy (cost)"), ("auc", "ROC AUC (cost)"),
           ("label", "label separation [method]"), ("label_acc", "label acc (prior)"),
           ("feature", "column gain over prior [method]"), ("r2", "R² attack / prior"),
           ("reid", "top-1 re-id (chance)"), ("epsilon", "ε"), ("risk", "risk (labels/columns)"))


def _cells(r: dict[str, Any]) -> list[str]:
    def pm(k: str, d: int = 3) -> str:
        return fmt_ci(_f(r.get(k)), _f(r.get(k + "_ci95")), d)

    def cost(k: str) -> str:
        if math.isnan(_f(r.get(k))):
            return "–"
        return pm(k) if r["setting"] == "none" else f"{pm(k)} (cost {pm(k + '_cost')})"
    kind = "R²" if r.get("feature_gain_kind") == "numeric_r2_gain" else "acc"
    eps = _f(r.get("epsilon"))
    return [str(r["setting"]) + (" *" if r.get("recommended") else ""), str(r["party"]),
            str(r["columns"]), cost("accuracy"), cost("test_auc"),
            f"{pm('label_separation')} [{r.get('label_method')}]",
            f"{pm('label_accuracy')} ({_f(r.get('label_baseline_accuracy')):.3f})",
            f"{kind} {pm('feature_gain')} [{r.get('feature_method')}]",
            f"{_f(r.get('attack_numeric_r2')):.3f} / {_f(r.get('prior_numeric_r2')):.3f}",
            f"{_f(r.get('reid_top1')):.3f} ({_f(r.get('reid_chance_top1')):.4f})",
            "–" if math.isnan(eps) else f"{eps:.3g}",
            f"{r['risk']} ({r['label_risk']}/{r['input_risk']})"]


def frontier_lines(rows: list[dict[str, Any]], n_seeds: int) -> list[str]:
    """The settings that keep every party's label separation <= LABEL_TARGET (upper bound)."""
    key = utility_key(rows)
    name = "ROC AUC" if key == "test_auc" else "accuracy"
    out = [f"Settings whose label separation stays <= {LABEL_TARGET:.2f} (upper 95% bound, worst "
           f"party, {n_seeds} seed(s)), with their utility cost ({name}, against the undefended "
           "run of each seed):"]
    kept = [r for r in rows if r["party"] == 1 and r["keeps_labels"] and r["setting"] != "none"]
    for r in kept:
        out.append(f"  {r['setting']}: separation <= {r['setting_label_upper']:.3f}; {name} cost "
                   f"{fmt_ci(_f(r.get(key + '_cost')), _f(r.get(key + '_cost_ci95')))}")
    if not kept:
        out.append("  none: no setting keeps the labels from the strongest adaptive attack")
    return out


def review_table(cfg: RunConfig, rows: list[dict[str, Any]]) -> Table:
    t = Table(title=f"security review: vertical SL on {cfg.dataset}, {cfg.clients} passive "
                    "parties (* recommended)")
    for _, name in COLUMNS:
        t.add_column(name)
    style = {"HIGH": "red", "MEDIUM": "yellow", "LOW": "green"}
    from rich.markup import escape
    for r in rows:
        cells = [escape(c) for c in _cells(r)]
        cells[-1] = f"[{style.get(r['risk'], 'default')}]{cells[-1]}[/]"
        t.add_row(*cells, style="bold" if r.get("recommended") else None)
    return t


def recommendation(rows: list[dict[str, Any]]) -> str:
    best = next((r for r in rows if r.get("recommended")), None)
    if best is None:
        return "No recommendation: " + "; ".join(
            dict.fromkeys(f"{r['setting']}: {r['why']}" for r in rows if not r["eligible"]))
    key = utility_key(rows)
    if best["setting_risk"] == "HIGH":
        return ("No setting lowers the worst party's risk below HIGH; the least costly is "
                f"{best['setting']}")
    return (f"Recommended: {best['setting']} (worst party's risk {best['setting_risk']}, "
            f"{'ROC AUC' if key == 'test_auc' else 'accuracy'} cost "
            f"{fmt_ci(_f(best.get(key + '_cost')), _f(best.get(key + '_cost_ci95')))}): the "
            "lowest worst-party risk, then the least utility cost")


def frontier_plot(rows: list[dict[str, Any]], path: Path) -> None:
    from slsec.report.plots import pyplot
    plt = pyplot()
    key = utility_key(rows)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    for s in settings_of(rows):
        mine = [r for r in rows if r["setting"] == s]
        worst = max(mine, key=lambda r: _f(r.get("label_separation")))
        u = mine[0]
        ax.errorbar(_f(u.get(key)), _f(worst.get("label_separation")),
                    xerr=_nz(u.get(key + "_ci95")), yerr=_nz(worst.get("label_separation_ci95")),
                    fmt="o", capsize=3, label=s)
    ax.axhline(LABEL_TARGET, color="green", ls="--", lw=1, label=f"separation {LABEL_TARGET}")
    ax.set_xlabel("test ROC AUC" if key == "test_auc" else "test accuracy")
    ax.set_ylabel("label separation, worst party")
    ax.set_title("vertical SL: utility against label leakage (95% CI)")
    ax.legend(fontsize=7, loc="best")
    save_figure(fig, path)
    plt.close(fig)


def _nz(v: Any) -> float:
    x = _f(v)
    return 0.0 if math.isnan(x) else x


def write_outputs(folder: Path, cfg: RunConfig, rows: list[dict[str, Any]],
                  raw: list[dict[str, Any]]) -> None:
    """results.csv (aggregate rows, then one raw row per setting, party and seed), the
    frontier plot, report.md and report.html."""
    import pandas as pd

    from slsec import report as rpt
    buf = io.StringIO()
    pd.DataFrame([{"row_kind": "aggregate", **r} for r in rows]
                 + [{"row_kind": "seed", **r} for r in raw]).to_csv(buf, index=False)
    atomic_write(folder / "results.csv", buf.getvalue())
    png = folder / "frontier.png"
    frontier_plot(rows, png)
    blocks: list[tuple] = [
        ("p", f"Vertical SL on {cfg.dataset}: {cfg.clients} passive parties, the active party "
              f"holds the labels; {cfg.rounds} round(s), {seeds_text(cfg.seeds, cfg.seed)}. Per "
              "defense setting and passive party: the strongest label-inference attack that "
              "party can run from its gradients (adaptive: told every defense's public "
              "mechanism), and the strongest feature reconstruction of its columns by the "
              "active party, each beside the prior."),
        ("h", "Recommendation"),
        ("p", recommendation(rows)),
        ("h", "Frontier"),
        ("p", "\n".join(frontier_lines(rows, cfg.seeds))),
        ("img", str(png), "utility against the worst party's label separation"),
        ("h", "Every setting and party"),
        ("table", [n for _, n in COLUMNS], [_cells(r) for r in rows]),
        ("p", "Label separation: max(AUC, 1 - AUC) of the strongest attack (a score ranked the "
              "wrong way round leaks as much once flipped); the majority prior scores 0.5. "
              "Column gain: the reconstruction's R² (numeric columns, standardised) minus the "
              "prior's (public column means), or the categorical accuracy gain. " + RISK_RULE),
        ("p", "Rows: results.csv in this folder (aggregate rows, then one row per seed)."),
    ]
    rpt.write_document(folder, f"slsec security review: vertical SL / {cfg.dataset}", blocks)


def print_review(cfg: RunConfig, rows: list[dict[str, Any]], folder: Path,
                 moved: str | None) -> None:
    from slsec.report.console import console
    out = console if console.is_terminal else Console(width=220, highlight=False)
    if moved:
        console.print(f"--force: the earlier files of {folder.name} are kept in {moved}")
    out.print(review_table(cfg, rows))
    for line in [recommendation(rows), *frontier_lines(rows, cfg.seeds),
                 seeds_text(cfg.seeds, cfg.seed) + (" (grades on the means)" if cfg.seeds > 1
                                                    else ""),
                 f"report: {folder}/report.html"]:
        out.print(line, markup=False)
