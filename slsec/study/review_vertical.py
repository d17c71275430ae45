"""`slsec review --protocol vertical`: each party's exposure, per defense setting.

Vertical SL has no cut to choose; what a deployment chooses is the defense. The review measures,
for the undefended run and every defense setting (the `--defense` given, with its parameters,
else DEFAULT_SETTINGS: DP on the embedding, Marvell, gradient sparsification, MID, label DP),
with each seed and for each passive party i:

- the labels' exposure to party i: the strongest label-inference attack party i can run from
  the gradients it receives (every contender its knowledge allows, and norm scoring and its
  Marvell-adaptive residual form on binary labels; each told the defenses' public mechanisms), as max(AUC, 1 - AUC) ("separation": a
  score ranked the wrong way round leaks as much once flipped) beside the majority prior;
- party i's columns' exposure to the active party: the strongest feature reconstruction the
  active party can run from party i's embeddings (white-box, learned inverse, substitute,
  prior), as the R² gain over the prior (numeric columns; the accuracy gain for categorical
  ones) and top-1 re-identification beside chance;
- the utility: test accuracy, and the joint model's ROC AUC on binary labels, each with its
  cost against the undefended run of the same seed.

One training run per (setting, seed, party) serves both attacks. The protocol treats passive
parties alike and the attacked passive party is party 1 (rank 1), so party i is measured by
giving party 1 party i's column group (the groups rotate); utility is read from the run in the
configured layout. Rows, grades and the frontier: slsec/report/review_vertical_report.py.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from slsec import progress
from slsec.config import RunConfig, make_config
from slsec.errors import UserError
from slsec.report.stats import mean_row, seed_list

LABEL_ATTACK, FEATURE_ATTACK = "label-inference", "feature-reconstruction"
# binary scores that are not contenders of a plain evaluation: norm scoring (Li et al.) and its
# Marvell-adaptive form (the norm off each batch's noise axis)
BINARY_ONLY = ("norm", "residual")
# one setting per defense at a moderate strength (the frontier benches sweep them)
DEFAULT_SETTINGS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("dp sigma=1", {"defense": ("dp",), "sigma": 1.0}),
    ("marvell s=4", {"defense": ("marvell",), "marvell_power": 4.0}),
    ("grad-sparsify keep=0.1", {"defense": ("grad-sparsify",), "grad_keep": 0.1}),
    ("mid lambda=0.1", {"defense": ("mid",), "mid_weight": 0.1}),
    ("label-rr eps=1", {"defense": ("label-rr",), "label_epsilon": 1.0}),
)
UNDEFENDED = "none"


def settings(cfg: RunConfig) -> list[tuple[str, dict[str, Any]]]:
    """(name, config changes) of every setting: the undefended run first."""
    none: dict[str, Any] = {"defense": ()}
    if not cfg.defense:
        return [(UNDEFENDED, none), *DEFAULT_SETTINGS]
    import slsec.defenses  # noqa: F401  (registration)
    from slsec.defenses.base import DEFENSES
    declared = [p.name for d in cfg.defense for p in DEFENSES.get(d).params]
    set_ = [f"{p}={v:g}" for p in declared
            if isinstance(v := getattr(cfg, p, None), (int, float)) and not isinstance(v, bool)]
    name = "+".join(cfg.defense) + (" " + " ".join(set_) if set_ else "")
    return [(UNDEFENDED, none), (name, {})]


def party_split(names: list[list[str]], party: int) -> str:
    """The --feature-split that gives party 1 the column group of `party` (1-based)."""
    k = party - 1
    groups = names[k:] + names[:k]
    for c in (c for g in groups for c in g):
        if "," in c or "|" in c:
            raise UserError(f"slsec review --protocol vertical: column {c!r} holds ',' or '|', so "
                            "its party cannot be named in --feature-split; rename the column")
    return "|".join(",".join(g) for g in groups)


def column_names(cfg: RunConfig) -> list[list[str]]:
    """Each passive party's original column names under the configured --feature-split."""
    from slsec.data.tabular_models import column_groups
    from slsec.run.setup import prepare
    data = prepare(cfg).data
    enc = data.encoding or [{"column": f"x{i}", "start": i, "width": 1}
                            for i in range(data.num_features)]
    groups = column_groups(enc, data.num_features, cfg.clients, cfg.feature_split)
    by_start = {e["start"]: e["column"] for e in enc}
    return [[by_start[i] for i in g if i in by_start] for g in groups]


def plan(cfg: RunConfig) -> list[dict[str, Any]]:
    """Every cell's config values (label-inference config; the feature attack reuses its run)."""
    from slsec.run.harness import check_attack
    from slsec.run.setup import check_defenses
    if cfg.attack not in (None, LABEL_ATTACK, FEATURE_ATTACK):
        raise UserError(f"slsec review --protocol vertical runs {LABEL_ATTACK} and "
                        f"{FEATURE_ATTACK} itself; --attack {cfg.attack} is not part of it")
    for flag, v in (("--method", cfg.method), ("--knowledge", cfg.knowledge), ("--cut", cfg.cut)):
        if v is not None:
            raise UserError(f"{flag} does not apply to slsec review --protocol vertical (it runs "
                            "every method each role's default knowledge allows; no cut)")
    base = cfg.replace(attack=LABEL_ATTACK, method=None, knowledge=None, cut=None,
                       backend="local", seeds=1)
    names = column_names(base)
    cells = []
    for name, change in settings(cfg):
        scfg = base.replace(**change)
        check_defenses(scfg)
        check_attack(scfg)
        check_attack(scfg.replace(attack=FEATURE_ATTACK))
        for s in seed_list(cfg.seed, cfg.seeds):
            for party in range(1, cfg.clients + 1):
                split = cfg.feature_split if party == 1 else party_split(names, party)
                c = scfg.replace(seed=s, feature_split=split)
                cells.append({"setting": name, "party": party, "columns": len(names[party - 1]),
                              "config": c.to_dict()})
    return cells


def measure_cell(cell: dict[str, Any]) -> dict[str, Any]:
    """Train once; the strongest label attack from party 1, the strongest feature attack on
    party 1's columns (both adaptive); the utility. Runs in a worker with --jobs > 1."""
    from slsec.run.experiment import resolve
    from slsec.run.harness import run_attack, summarize
    from slsec.run.runner import run_local
    from slsec.run.setup import prepare
    cfg = make_config(cell["config"])
    setup = prepare(cfg)
    exp = resolve(cfg, setup)
    outcomes = run_local(exp)
    server = outcomes[0]
    lab = summarize(exp, server, run_attack(exp, outcomes[1]), 0.0).metrics
    out: dict[str, Any] = {k: cell[k] for k in ("setting", "party", "columns")}
    out.update(seed=cfg.seed, accuracy=lab["accuracy"], test_auc=lab.get("test_auc", math.nan),
               epsilon=lab.get("epsilon", math.nan),
               label_baseline_accuracy=lab.get("label_baseline_accuracy", math.nan))
    tried = {lab["attack_method"]: lab["label_auc"]}
    accs = [lab.get("label_accuracy", math.nan)]
    for method in BINARY_ONLY if setup.data.num_classes == 2 else ():
        c = resolve(cfg.replace(method=method), setup)
        m = summarize(c, server, run_attack(c, outcomes[1]), 0.0).metrics
        tried[method] = m["label_auc"]
        accs.append(m.get("label_accuracy", math.nan))
    sep = {m: max(a, 1.0 - a) for m, a in tried.items()}
    best = max(sep, key=lambda m: sep[m])
    out.update(label_separation=sep[best], label_auc=tried[best], label_method=best,
               label_accuracy=max(a for a in accs if a == a) if any(a == a for a in accs)
               else math.nan)
    f = resolve(cfg.replace(attack=FEATURE_ATTACK, method=None), setup)
    feat = summarize(f, server, run_attack(f, server), 0.0).metrics
    gain_key = "numeric_r2_gain" if "numeric_r2_gain" in feat else "categorical_accuracy_gain"
    out.update(feature_gain=feat.get(gain_key, math.nan), feature_gain_kind=gain_key,
               feature_method=feat.get("attack_method"),
               attack_numeric_r2=feat.get("attack_numeric_r2", math.nan),
               prior_numeric_r2=feat.get("prior_numeric_r2", math.nan),
               reid_top1=feat.get("reid_top1", math.nan),
               prior_reid_top1=feat.get("prior_reid_top1", math.nan),
               reid_chance_top1=feat.get("reid_chance_top1", math.nan))
    return out


def run_cells(cells: list[dict[str, Any]], jobs: int) -> list[dict[str, Any]]:
    from slsec.study.executor import run_cells as execute
    got: dict[int, dict[str, Any]] = {}
    with progress.phase("review", total=len(cells), unit="cells"):
        def done(i: int, r: dict[str, Any]) -> None:
            got[i] = r
            progress.tick("review", note=f"{r['setting']}, party {r['party']}, seed {r['seed']}")
        execute(measure_cell, cells, jobs=jobs, on_done=done)
    return [got[i] for i in sorted(got)]


def aggregate(raw: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (setting, party): means and `_ci95` over seeds; utility costs paired by seed
    against the undefended run (utility from each seed's party-1 run)."""
    from slsec.report.stats import t_interval
    util = {(r["setting"], r["seed"]): r for r in raw if r["party"] == 1}
    rows = []
    keys = dict.fromkeys((r["setting"], r["party"]) for r in raw)
    for setting, party in keys:
        mine = [r for r in raw if r["setting"] == setting and r["party"] == party]
        row = {"setting": setting, "party": party, "columns": mine[0]["columns"],
               **mean_row([{k: v for k, v in r.items() if isinstance(v, (int, float))
                            and k not in ("party", "columns", "seed")} for r in mine]),
               "label_method": _most(r["label_method"] for r in mine),
               "feature_method": _most(str(r["feature_method"]) for r in mine),
               "feature_gain_kind": mine[0]["feature_gain_kind"], "n_seeds": len(mine)}
        ups = [util[(setting, r["seed"])] for r in mine if (setting, r["seed"]) in util]
        for k in ("accuracy", "test_auc"):
            vals = [u[k] for u in ups]
            base = [util[(UNDEFENDED, u["seed"])][k] for u in ups if (UNDEFENDED, u["seed"]) in util]
            if vals and len(base) == len(vals):
                row[k], row[k + "_ci95"] = t_interval(vals)
                row[k + "_cost"], row[k + "_cost_ci95"] = t_interval(
                    [b - v for b, v in zip(base, vals)])
        rows.append(row)
    return rows


def _most(values: Any) -> str:
    vals = list(values)
    return max(dict.fromkeys(vals), key=vals.count)


def run_vertical_review(cfg: RunConfig, folder: Path, *, force: bool, jobs: int,
                        min_accuracy: str | None) -> Path:
    """Plan (every check before any training), measure, aggregate, write and print."""
    from slsec.report import review_vertical_report as rep
    from slsec.report.folders import keeping, mark
    from slsec.report.results import check_writable
    from slsec.run.split_search import parse_min_accuracy
    budget, relative = parse_min_accuracy(min_accuracy)
    cells = plan(cfg)
    check_writable(cfg.out)
    check_writable(folder)
    raw = run_cells(cells, jobs)
    rows = rep.grade(aggregate(raw), budget, relative)
    with keeping(f"nothing of this review was kept in {folder}; free space and run it again"):
        moved = mark(folder, "review", force=force)
        rep.write_outputs(folder, cfg, rows, raw)
    rep.print_review(cfg, rows, folder, moved)
    return folder
