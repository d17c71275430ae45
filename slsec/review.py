"""`slsec review`: a security review of every split configuration of a model/dataset.

For each protocol (`--protocol vanilla,ushaped` lists several) and each candidate cut it
measures, with short training runs: inversion leakage (SSIM/PSNR, strongest method the
server's role allows; its gain over the server's prior and top-1 re-identification, which
grade the risk), label leakage (100% when the protocol sends labels to the server;
otherwise the label-inference attack's AUC/accuracy), ε when a DP defense is configured,
accuracy, and the cost of the cut (bytes per sample, client parameters and FLOPs). Each row
gets a risk grade (RISK_RULE) and the report recommends a configuration (split selection).
"""
from __future__ import annotations

import io
import math
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from slsec import progress
from slsec import review_malicious as malicious
from slsec.config import RunConfig
from slsec.errors import UserError
from slsec.results import atomic_write, check_writable, legend_outside, save_figure
from slsec.stats import CI_SUFFIX, fmt_ci, mean_row, seed_list, seeds_text

SSIM_HIGH, SSIM_MEDIUM = 0.5, 0.3       # 0.5 = metrics.IDENTIFIABLE_SSIM (plot shading)
GAIN_HIGH, GAIN_MEDIUM = 0.2, 0.05      # SSIM gain of the attack over the attacker's prior
REID_HIGH, REID_MEDIUM = 0.5, 0.05      # top-1 re-identification; MEDIUM: beyond the prior's
AUC_HIGH, AUC_MEDIUM = 0.9, 0.7         # on max(AUC, 1 - AUC)
GRADES = ("LOW", "MEDIUM", "HIGH")
RISK_RULE = (f"Risk grade, per leakage channel, the overall grade being the worse of the two. "
             f"Inputs, graded by leakage beyond what the server already holds (its prior: public "
             f"aux data and the labels it receives or predicts): HIGH if the reconstruction's "
             f"SSIM gain over the prior >= {GAIN_HIGH} or top-1 re-identification among the "
             f"candidates >= {REID_HIGH}; MEDIUM if the gain >= {GAIN_MEDIUM} or top-1 "
             f"re-identification exceeds the prior's own by >= {REID_MEDIUM}; LOW otherwise. "
             f"Labels: HIGH if the labels are "
             f"sent to the server (100% leak) or the label-inference AUC >= {AUC_HIGH}, MEDIUM if "
             f"AUC >= {AUC_MEDIUM}, LOW otherwise (an AUC below 0.5 counts as 1 - AUC: it leaks as "
             f"much once flipped). With --seeds N > 1 every cut is measured with each seed and "
             f"the grades, the selection and the recommendation use the per-cut means over "
             f"seeds; tables show mean ± the 95% Student-t half-width.")


def input_grade(gain: float, reid: float = math.nan, prior_reid: float = 0.0) -> str:
    """Input-leakage grade from the SSIM gain over the prior and top-1 re-identification."""
    if math.isnan(gain) and math.isnan(reid):
        return "–"
    reid_v = -math.inf if math.isnan(reid) else reid
    gain_v = -math.inf if math.isnan(gain) else gain
    prior_v = 0.0 if math.isnan(prior_reid) else prior_reid
    if gain_v >= GAIN_HIGH or reid_v >= REID_HIGH:
        return "HIGH"
    if gain_v >= GAIN_MEDIUM or reid_v - prior_v >= REID_MEDIUM:
        return "MEDIUM"
    return "LOW"


def label_grade(sent: bool, auc: float) -> str:
    if sent:
        return "HIGH"
    if math.isnan(auc):
        return "–"
    a = max(auc, 1 - auc)
    return "HIGH" if a >= AUC_HIGH else "MEDIUM" if a >= AUC_MEDIUM else "LOW"


def overall_grade(*grades: str) -> str:
    known = [g for g in grades if g in GRADES]
    return max(known, key=GRADES.index) if known else "–"


def _protocols(cfg: RunConfig) -> list[str]:
    from slsec.protocols.base import PROTOCOLS
    names = [p.strip() for p in cfg.protocol.split(",")]
    if any(not p for p in names):
        raise UserError(f"--protocol: empty name in {cfg.protocol!r}")
    for p in names:
        if PROTOCOLS.get(p).cuts_needed == 0:
            raise UserError(f"--protocol {p} has no cut to review; use vanilla, ushaped or "
                            "splitfed")
    return list(dict.fromkeys(names))


def _attack_configs(cfg: RunConfig, protocol: str) -> tuple[RunConfig, RunConfig]:
    """(inversion config, label-inference config) for one protocol; --method/--knowledge go to
    the attack named by --attack."""
    if cfg.attack not in (None, "inversion", "label-inference"):
        raise UserError(f"slsec review runs inversion and label-inference itself; --attack "
                        f"{cfg.attack} is not part of it (use --attack inversion or "
                        "label-inference only to pass --method/--knowledge to that attack)")
    base = cfg.replace(protocol=protocol, cut=None, backend="local")
    own = {"method": cfg.method, "knowledge": cfg.knowledge}
    plain = {"method": None, "knowledge": None}
    inv = base.replace(attack="inversion", **(own if cfg.attack == "inversion" else plain))
    lab = base.replace(attack="label-inference",
                       **(own if cfg.attack == "label-inference" else plain))
    return inv, lab


def review_folder(cfg: RunConfig) -> Path:
    name = cfg.run_id or f"review-{cfg.model_name}-{cfg.dataset}-{time.strftime('%Y%m%d-%H%M%S')}"
    return Path(cfg.out) / name


def run_review(cfg: RunConfig, *, min_accuracy: str | None,
               max_client_flops: str | None, force: bool = False,
               hijack_steps: int = malicious.DEFAULT_STEPS) -> Path:
    """Measure every (protocol, cut), grade it, recommend one; print and write the report.
    `hijack_steps` > 0: the malicious-server column (slsec.review_malicious) with that bound."""
    from slsec.commands import console
    from slsec.defenses.split_selection import (choose, evaluate_cached, measure,
                                                parse_flops, parse_min_accuracy)
    from slsec.harness import check_attack
    from slsec.setup import check_defenses

    acc_budget, relative = parse_min_accuracy(min_accuracy)
    flops_budget = parse_flops(max_client_flops)
    protocols = _protocols(cfg)
    plans = []
    from slsec.folders import claim, keeping, mark, unique_folder
    from slsec.preflight import check_grid
    folder = (review_folder(cfg) if cfg.run_id else unique_folder(cfg.out, review_folder(cfg).name))
    claim(folder, "review", force=force)
    for p in protocols:                          # validate everything before any training
        inv, lab = _attack_configs(cfg, p)
        check_attack(inv)
        check_defenses(inv)
        plans.append((p, inv, lab))
    check_grid([inv for _, inv, _ in plans], lambda c: f"protocol {c.protocol}")
    check_writable(cfg.out)
    check_writable(folder)

    rows: list[dict[str, Any]] = []
    per_seed: list[dict[str, Any]] = []         # --seeds > 1: one raw row per seed and cut
    rankings = {}
    with progress.phase("review", unit="cuts"):   # stderr: status line, or plain lines when piped
        for p, inv, lab in plans:
            def step(cut: str, i: int, n: int, p: str = p) -> None:
                progress.tick("review", 0, done=i, total=n,
                              note=f"{p}: cut {cut} ({i + 1}/{n})" if cut else p)
            measured = measure_seeds(inv, step, per_seed)
            ranking = choose(measured, min_accuracy=acc_budget, max_client_flops=flops_budget,
                             relative=relative)
            rankings[p] = ranking
            for r in ranking.rows:
                m = r["metrics"]
                row = {"protocol": p, "cut": r["cut"], "cuts": r["cuts"],
                       "accuracy": r["accuracy"],
                       "attack_method": r.get("attack_method"),
                       "methods_compared": m.get("methods_compared"),
                       "attack_ssim_mean": r.get("attack_ssim_mean", math.nan),
                       "attack_psnr_mean": r.get("attack_psnr_mean", math.nan),
                       "baseline_ssim_mean": r.get("baseline_ssim_mean", math.nan),
                       "prior_ssim_mean": m.get("prior_ssim_mean", math.nan),
                       "ssim_gain_mean": m.get("ssim_gain_mean", math.nan),
                       "reid_top1": m.get("reid_top1", math.nan),
                       "prior_reid_top1": m.get("prior_reid_top1", math.nan),
                       "reid_chance_top1": m.get("reid_chance_top1", math.nan),
                       "labels_sent_to_server": bool(m.get("labels_sent_to_server")),
                       "label_leak": 1.0 if m.get("labels_sent_to_server") else math.nan,
                       "label_auc": math.nan, "label_accuracy": math.nan,
                       "epsilon": m.get("epsilon", math.nan),
                       "smashed_bytes_per_sample": r["smashed_bytes_per_sample"],
                       "client_params": r["client_params"], "client_flops": r["client_flops"],
                       "eligible": r["eligible"], "why": r["why"], "selected": r["chosen"]}
                if not row["labels_sent_to_server"] and p in _label_roles():
                    bar.update(task, description=f"{p}: label inference, cut {r['cut']}")
                    lm = label_metrics(lab.replace(cut=r["cut"]), per_seed, p)
                    for k in ("label_auc", "label_accuracy"):
                        row[k] = lm.get(k, math.nan)
                        if k + CI_SUFFIX in lm:
                            row[k + CI_SUFFIX] = lm[k + CI_SUFFIX]
                for k in SEED_KEYS:
                    if k + CI_SUFFIX in r:
                        row[k + CI_SUFFIX] = r[k + CI_SUFFIX]
                if inv.seeds > 1:
                    row["n_seeds"] = inv.seeds
                row["input_risk"] = input_grade(row["ssim_gain_mean"], row["reid_top1"],
                                                row["prior_reid_top1"])
                row["label_risk"] = label_grade(row["labels_sent_to_server"], row["label_auc"])
                row["risk"] = overall_grade(row["input_risk"], row["label_risk"])
                if hijack_steps > 0 and malicious.applies(p):
                    progress.tick("review", 0, note=f"{p}: malicious server, cut {r['cut']}")
                    found = malicious.measure(inv, r["cut"], hijack_steps)
                    row["malicious"] = malicious.cell(found)
                    row.update({k: v for k, v in found.items() if k != "detected_by"})
                rows.append(row)
    best, reason = recommend(rows, rankings)
    for r in rows:
        r["recommended"] = best is not None and r is best
    with keeping(f"nothing of this review was kept in {folder}; free space and "
                 "run it again"):
        moved = mark(folder, "review", force=force)
        write_outputs(folder, cfg, rows, rankings, best, reason, acc_budget, relative,
                      flops_budget, per_seed)
    if moved:
        console.print(f"--force: the earlier files of {folder.name} are kept in {moved}")
    out = console if console.is_terminal else Console(width=220, highlight=False)  # logs: wide (no wrapped cells)
    out.print(review_table(cfg, rows))
    if (legend := malicious.note(rows)) is not None:
        out.print(legend, markup=False)
    out.print(("Recommended: " if best else "No recommendation: ") + reason, markup=False)
    out.print(seeds_text(cfg.seeds, cfg.seed) + (" (grades and recommendation on the means)"
                                                 if cfg.seeds > 1 else ""), markup=False)
    out.print(f"report: {folder}/report.html", markup=False)
    return folder


SEED_KEYS = ("accuracy", "attack_ssim_mean", "attack_psnr_mean", "baseline_ssim_mean")


def measure_seeds(cfg: RunConfig, progress: Any, per_seed: list[dict[str, Any]]
                  ) -> list[dict[str, Any]]:
    """split_selection.measure per seed (seed..seed+N-1); one row per cut holding each numeric
    value's mean and `<key>_ci95` (slsec.stats). The raw per-seed rows go to `per_seed`."""
    from slsec.defenses.split_selection import measure
    if cfg.seeds == 1:
        return measure(cfg, progress)
    runs = [measure(cfg.replace(seed=s, seeds=1), progress) for s in seed_list(cfg.seed, cfg.seeds)]
    fixed = {"smashed_bytes_per_sample", "client_params", "client_flops", "metrics"}
    out = []
    for i, first in enumerate(runs[0]):
        mine = [run[i] for run in runs]
        for s, r in zip(seed_list(cfg.seed, cfg.seeds), mine):
            per_seed.append({"row_kind": "seed", "protocol": cfg.protocol, "seed": s,
                             **{k: v for k, v in r.items() if k != "metrics"}})
        out.append({**first, **mean_row(mine, skip=fixed),
                    "metrics": mean_row([r["metrics"] for r in mine])})
    return out


def label_metrics(cfg: RunConfig, per_seed: list[dict[str, Any]], protocol: str) -> dict[str, Any]:
    """The label-inference metrics of one cut: one seed's, or the mean (+ `_ci95`) over seeds."""
    from slsec.defenses.split_selection import evaluate_cached
    if cfg.seeds == 1:
        return evaluate_cached(cfg)
    ms = []
    for s in seed_list(cfg.seed, cfg.seeds):
        m = evaluate_cached(cfg.replace(seed=s, seeds=1))
        ms.append(m)
        per_seed.append({"row_kind": "seed", "protocol": protocol, "seed": s,
                         "cut": cfg.cut, "attack": "label-inference",
                         **{k: m.get(k) for k in ("label_auc", "label_accuracy") if k in m}})
    return mean_row(ms)


def _label_roles() -> set[str]:
    import slsec.attacks  # noqa: F401
    from slsec.attacks.base import ATTACKS
    return set(ATTACKS.get("label-inference").roles)


def recommend(rows: list[dict[str, Any]], rankings: dict[str, Any]
              ) -> tuple[dict[str, Any] | None, str]:
    """Among each protocol's selected cut: lowest overall risk, then least SSIM, then FLOPs."""
    picks = [r for r in rows if r["selected"]]
    if not picks:
        return None, "; ".join(f"{p}: {rk.reason}" for p, rk in rankings.items())
    best = min(picks, key=lambda r: (GRADES.index(r["risk"]) if r["risk"] in GRADES else 3,
                                     _n(r["attack_ssim_mean"]), r["client_flops"]))
    why = rankings[best["protocol"]].reason
    others = [p for p in rankings if p != best["protocol"]]
    return best, (f"protocol {best['protocol']}, cut {best['cut']} (risk {best['risk']}): {why}"
                  + (f". Preferred over the selected cut of {', '.join(others)} by overall risk, "
                     "then SSIM, then client FLOPs" if others else ""))


def _n(v: Any) -> float:
    return math.inf if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


COLUMNS = [("protocol", "protocol"), ("cut", "cut"), ("accuracy", "acc"),
           ("attack_ssim_mean", "SSIM"), ("prior_ssim_mean", "prior SSIM"),
           ("ssim_gain_mean", "SSIM gain"), ("reid", "re-id@1 (chance)"),
           ("attack_psnr_mean", "PSNR"),
           ("label", "labels"), ("epsilon", "ε"), ("smashed_bytes_per_sample", "bytes/sample"),
           ("client_params", "client params"), ("client_flops", "client FLOPs"),
           ("malicious", "malicious server"), ("risk", "risk"), ("note", "note")]


def risk_text(r: dict[str, Any]) -> str:
    """'HIGH: inputs+labels', 'MEDIUM: inputs', 'LOW': the grade and the channels causing it."""
    why = [c for c, g in (("inputs", r["input_risk"]), ("labels", r["label_risk"]))
           if g == r["risk"]]
    return r["risk"] + (f": {'+'.join(why)}" if r["risk"] != "LOW" and why else "")


def columns(rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """The table columns (ε only when a DP defense produced one)."""
    dp = any(not math.isnan(_f(r.get("epsilon"))) for r in rows)
    hijacked = any("malicious" in r for r in rows)
    return [c for c in COLUMNS if (c[0] != "epsilon" or dp) and (c[0] != "malicious" or hijacked)]


def _f(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _cells(r: dict[str, Any], cols: list[tuple[str, str]] = COLUMNS) -> list[Any]:
    from slsec.report import fmt
    label = ("sent (100%)" if r["labels_sent_to_server"] else
             f"AUC {_pm(r, 'label_auc', 2)}" if not math.isnan(r["label_auc"]) else "–")
    note = ("RECOMMENDED" if r.get("recommended") else "selected" if r["selected"] else
            r["why"] if not r["eligible"] else "")
    reid = (f"{fmt(r['reid_top1'], 3)} ({fmt(r['reid_chance_top1'], 4)})"
            if not math.isnan(_f(r.get("reid_top1"))) else "–")
    vals = {"malicious": "–", **r, "label": label, "risk": risk_text(r), "note": note, "reid": reid,
            "smashed_bytes_per_sample": f"{r['smashed_bytes_per_sample']:,.0f}",
            "client_params": f"{r['client_params']:,}",
            "client_flops": f"{r['client_flops']:.3g}"}
    for k in SEED_KEYS:            # several seeds: mean ± 95% half-width
        if k + CI_SUFFIX in r:
            vals[k] = _pm(r, k, 1 if k == "attack_psnr_mean" else 3)
    return [vals[k] for k, _ in cols]


def _pm(r: dict[str, Any], key: str, digits: int) -> str:
    from slsec.report import fmt
    if key + CI_SUFFIX not in r:
        return fmt(r[key], digits)
    return fmt_ci(_f(r[key]), _f(r[key + CI_SUFFIX]), digits)


def review_table(cfg: RunConfig, rows: list[dict[str, Any]]) -> Table:
    """The review as a rich table (risk coloured, the recommended row bold)."""
    from rich.markup import escape

    from slsec.report import fmt
    t = Table(title=f"security review: {cfg.model_name} on {cfg.dataset}")
    cols = columns(rows)
    for k, name in cols:
        t.add_column(name, justify="left" if k in ("protocol", "cut", "label", "risk", "note",
                                                   "reid", "malicious")
                     else "right")
    style = {"HIGH": "red", "MEDIUM": "yellow", "LOW": "green"}
    at = [k for k, _ in cols].index("risk")
    for r in rows:
        cells = [c if isinstance(c, str) else fmt(c, 1 if k == "attack_psnr_mean" else 3)
                 for c, (k, _) in zip(_cells(r, cols), cols)]
        cells = [escape(c) for c in cells]
        cells[at] = f"[{style.get(r['risk'], 'default')}]{cells[at]}[/]"
        t.add_row(*cells, style="bold" if r.get("recommended") else None)
    return t


def write_outputs(folder: Path, cfg: RunConfig, rows: list[dict[str, Any]],
                  rankings: dict[str, Any], best: dict[str, Any] | None, reason: str,
                  acc_budget: float | None, relative: bool, flops_budget: float | None,
                  per_seed: list[dict[str, Any]] | None = None) -> None:
    """results.csv (one row per protocol and cut; several seeds: those rows are the aggregate
    rows, followed by one raw row per seed), a leakage plot, report.md + report.html."""
    import pandas as pd

    from slsec import report as rpt
    buf = io.StringIO()
    table = ([{"row_kind": "aggregate", "seed": cfg.seed, **r} for r in rows] + per_seed
             if per_seed else rows)
    pd.DataFrame(table).to_csv(buf, index=False)
    atomic_write(folder / "results.csv", buf.getvalue())
    png = folder / "leakage_by_cut.png"
    leakage_plot(rows, png)
    budgets = []
    if acc_budget is not None:
        budgets.append(f"accuracy >= {acc_budget:.0%} of the best cut's" if relative
                       else f"accuracy >= {acc_budget:g} (absolute)")
    if flops_budget is not None:
        budgets.append(f"client FLOPs per sample <= {flops_budget:.3g}")
    compared = next((r["methods_compared"] for r in rows if r.get("methods_compared")), None)
    winners = ", ".join(f"{r['protocol']}/{r['cut']} {r['attack_method']}"
                        for r in rows if r.get("attack_method"))
    method = (f"the stronger of {compared.replace(',', ' and ')} per cut, all run: {winners}"
              if compared else next((r["attack_method"] for r in rows if r.get("attack_method")), "–"))
    sent = {r["protocol"] for r in rows if r["labels_sent_to_server"]}
    blocks: list[tuple] = [
        ("p", f"Model {cfg.model_name} on {cfg.dataset}; protocols "
              f"{', '.join(rankings)}; {cfg.clients} clients ({cfg.partition}), {cfg.rounds} "
              f"round(s), {seeds_text(cfg.seeds, cfg.seed)}"
              + (" (grades, selection and recommendation on the per-cut means)"
                 if cfg.seeds > 1 else "")
              + (f", at most {cfg.max_train} private training samples" if cfg.max_train else "")
              + f"; defenses: {'+'.join(cfg.defense) or 'none'}. Inversion: the honest-but-curious "
              f"server with the strongest method its role allows ({method}) on {cfg.probe_size} "
              "probe inputs. Label leakage: 100% where the protocol sends labels to the server, "
              "else the label-inference attack on the gradients the server sees."),
        ("h", "Recommendation"),
        ("p", ("Recommended: " if best else "**No configuration meets the budgets: ") + reason
              + ("" if best else "**")),
        ("p", "Budgets: " + ("; ".join(budgets) or "none (pass --min-accuracy, e.g. 0.9 or 95%, "
                                                   "and --max-client-flops, e.g. 2e6)") + ". "
              "Selection rule: among cuts within the budgets, the least inversion SSIM; cuts "
              "within 0.01 SSIM of it are tied and the fewest client FLOPs wins. Across "
              "protocols: lowest overall risk grade, then SSIM, then client FLOPs."),
        *([("p", "Labels reach the server in " + ", ".join(sorted(sent)) + ": label leakage is "
                 "100% (risk HIGH) at every cut there. U-shaped SL keeps the labels on the "
                 "client (review it with --protocol vanilla,ushaped).")] if sent else []),
        ("h", "Every configuration"),
        ("table", [n for _, n in columns(rows)], [_cells(r, columns(rows)) for r in rows]),
        ("p", RISK_RULE),
        *([("p", legend)] if (legend := malicious.note(rows)) is not None else []),
        ("img", str(png), "inversion SSIM per cut (with the mean-image baseline and the grade "
                          "thresholds)"),
        ("p", "Bytes per sample: what crosses the (first) cut per sample, float32. Client "
              "params / FLOPs: the client's head up to the cut (forward FLOPs per sample; "
              "U-shaped clients also run the tail). Accuracy comes from short review runs: "
              "compare cuts with each other, not with fully trained models."),
        ("p", "Rows: results.csv in this folder (one per protocol and cut)."),
    ]
    rpt.write_document(folder, f"slsec security review: {cfg.model_name} / {cfg.dataset}",
                       blocks)


def leakage_plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Inversion SSIM per cut, one line per protocol, grade thresholds shaded."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    ax.axhspan(SSIM_HIGH, 1.0, color="red", alpha=0.07, label="HIGH (identifiable)")
    ax.axhspan(SSIM_MEDIUM, SSIM_HIGH, color="orange", alpha=0.07, label="MEDIUM")
    by_p: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_p.setdefault(r["protocol"], []).append(r)
    for p, rs in by_p.items():
        line, = ax.plot([r["cut"] for r in rs], [r["attack_ssim_mean"] for r in rs], marker="o",
                        label=f"{p}")
        if any("attack_ssim_mean" + CI_SUFFIX in r for r in rs):   # 95% CI over seeds
            ax.errorbar([r["cut"] for r in rs], [r["attack_ssim_mean"] for r in rs],
                        yerr=[_f(r.get("attack_ssim_mean" + CI_SUFFIX)) for r in rs], fmt="none",
                        ecolor=line.get_color(), capsize=3, elinewidth=1)
        if any(not math.isnan(_f(r.get("prior_ssim_mean"))) for r in rs):
            ax.plot([r["cut"] for r in rs], [_f(r.get("prior_ssim_mean")) for r in rs], ls="--",
                    color=line.get_color(), lw=1, label=f"{p}: server's prior (no inversion)")
        for r in rs:
            if r.get("recommended"):
                ax.scatter([r["cut"]], [r["attack_ssim_mean"]], s=180, facecolors="none",
                           edgecolors="crimson", linewidths=1.8, zorder=4, label="recommended")
    base = [r["baseline_ssim_mean"] for r in rows if not math.isnan(r["baseline_ssim_mean"])]
    if base:
        ax.axhline(sum(base) / len(base), color="gray", ls=":", lw=1, label="mean-image baseline")
    ax.set_ylim(0, 1)
    ax.set_xlabel("cut (shallow → deep)")
    ax.set_ylabel("inversion SSIM (lower = less leakage)")
    ax.set_title("input leakage per cut", fontsize=10)
    ax.grid(alpha=0.3)
    legend_outside(ax, fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
