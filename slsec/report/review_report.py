"""The review's grading rule and outputs: the table of every reviewed cut (with seeds: mean ± 95% CI), the
files (review.json, report.md, report.html) and the leakage-vs-accuracy plot."""
from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

from rich.table import Table

from slsec.config import RunConfig
from slsec.report.results import atomic_write, legend_outside, save_figure
from slsec.report.stats import CI_SUFFIX, fmt_ci, seeds_text
from slsec.run.split_search import budget_text

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


SEED_KEYS = ("accuracy", "attack_ssim_mean", "attack_psnr_mean", "baseline_ssim_mean")


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
                  per_seed: list[dict[str, Any]] | None = None,
                  target: list[tuple] | None = None) -> None:
    """results.csv (one row per protocol and cut; several seeds: those rows are the aggregate
    rows, followed by one raw row per seed), a leakage plot, report.md + report.html.
    `target`: the --privacy-target section's blocks (slsec.study.privacy_target)."""
    import pandas as pd

    from slsec import report as rpt
    buf = io.StringIO()
    table = ([{"row_kind": "aggregate", "seed": cfg.seed, **r} for r in rows] + per_seed
             if per_seed else rows)
    pd.DataFrame(table).to_csv(buf, index=False)
    atomic_write(folder / "results.csv", buf.getvalue())
    png = folder / "leakage_by_cut.png"
    leakage_plot(rows, png)
    budgets = budget_text(acc_budget, flops_budget, relative)
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
        ("p", "Budgets: " + (budgets or "none (pass --min-accuracy, e.g. 0.9 or 95%, "
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
        *([("p", legend)] if (legend := note(rows)) is not None else []),
        ("img", str(png), "inversion SSIM per cut (with the mean-image baseline and the grade "
                          "thresholds)"),
        ("p", "Bytes per sample: what crosses the (first) cut per sample, float32. Client "
              "params / FLOPs: the client's head up to the cut (forward FLOPs per sample; "
              "U-shaped clients also run the tail). Accuracy comes from short review runs: "
              "compare cuts with each other, not with fully trained models."),
        ("p", "Rows: results.csv in this folder (one per protocol and cut)."),
        *(target or []),
    ]
    rpt.write_document(folder, f"slsec security review: {cfg.model_name} / {cfg.dataset}",
                       blocks)


def leakage_plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Inversion SSIM per cut, one line per protocol, grade thresholds shaded."""
    from slsec.report.plots import pyplot
    plt = pyplot()

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


# --------------------------------------------------------------------------- malicious-server column

def cell(r: dict[str, Any]) -> str:
    """'SSIM 0.63; splitguard @41, gradient-check @35' (or '–' where it does not apply)."""
    if "hijack_ssim" not in r:
        return "–"
    caught = ", ".join(f"{n} @{s}" if s is not None else f"{n} missed"
                       for n, s in r["detected_by"].items())
    return f"SSIM {r['hijack_ssim']:.3f}" + (f"; {caught}" if caught else "")


def note(rows: list[dict[str, Any]]) -> str | None:
    """The bound and the legend of the column (None when no row has it)."""
    ran = [int(r["hijack_steps"]) for r in rows if r.get("hijack_steps") is not None]
    if not ran:
        return None
    steps = max(ran)
    return (f"Malicious server: feature-space hijacking (FSHA) for {steps} client steps per cut "
            f"(one client), reconstruction SSIM of the probe without a detector; '<detector> @s': "
            f"the client flagged the server at its step s and stopped sending; 'missed': not "
            f"within the {steps} steps.")
