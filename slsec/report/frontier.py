"""Privacy/utility frontier: Pareto points, the Defense Capability Score, frontier plots.

Rows are result rows (config + metrics, as in a sweep's results.csv). Utility is test accuracy
(maximised); leakage is an attack metric (minimised): attack SSIM, attack PSNR or label AUC.

Defense Capability Score, as VFLAIR defines and computes it (Zou et al., "VFLAIR: A Research
Library and Benchmark for Vertical Federated Learning", ICLR 2024; FLAIR-THU/VFLAIR,
`src/metrics/Metrics & Benchmark.md` and `src/metrics/data_process.py`, `cal_dcs`, `get_dcs`,
`get_final`):

    DCS = 1 / (1 + D),  D = sqrt((1 - beta) * max(AP - AP*, 0)^2 + beta * max(MP* - MP, 0)^2)

with beta = 0.5, AP* = 0 (the ideal defense), MP the main-task test accuracy and MP* the
accuracy of the same configuration with no defense and no attack (their `None_None` /
`No_Attack` run). AP is the attack's own success measure, as their `data_process.py` reads it,
negative values set to 0:

- feature (input) reconstruction: AP = 1 - MSE (their GRN and ResSFL rows: `1 - mse`), MSE the
  mean squared error of the reconstruction per pixel in [0, 1] (`attack_mse_mean`);
- label inference: AP = the attack's label accuracy (`label_accuracy`); in a binary task
  max(acc, 1 - acc), as they score norm-based scoring (a reversed ranking is turned round);
  when the protocol sends the labels to the server in the clear, AP = 1.

MP and AP are averaged over the repeated runs of one setting before the DCS is computed
(`get_avg`, then `get_dcs`): a multi-seed row's DCS is computed from its means. T-DCS of an
attack type (label inference, feature reconstruction, ...) = the mean DCS over the attacks of
that type at one defense setting; C-DCS = the mean of the T-DCS over the types present (equal
weights; `get_final` averages the types it has). DCS lies in [1 / (1 + 1), 1]; 1 is ideal.
These scores do not subtract the attacker's prior: the privacy verdict (below) does.

Over 300 lines: the DCS, its T-DCS and C-DCS averages and the frontier they are read on stay
together, with the definitions they follow.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

from slsec.report.results import legend_outside, save_figure

BETA = 0.5

# (metric key, axis label, how leakage is read from it for the Pareto front)
LEAK_METRICS: list[tuple[str, str]] = [
    ("ssim_gain_mean", "attack SSIM gain over the attacker's prior (mean over probes)"),
    ("attack_ssim_mean", "attack SSIM (mean over probes)"),
    ("attack_psnr_mean", "attack PSNR dB (mean over probes)"),
    ("label_auc", "label-inference AUC"),
]
BASELINES = {"attack_ssim_mean": ("baseline_ssim_mean", "mean-image baseline"),
             "attack_psnr_mean": ("baseline_psnr_mean", "mean-image baseline"),
             "label_auc": (None, "random guess (AUC 0.5)")}

# "Private" verdict: judged on the UPPER bound of the 95% t-interval over seeds (slsec.report.stats).
# The leakage is the gain over the attacker's own no-attack guess: `ssim_gain_mean` (attack
# SSIM minus the SSIM of the attacker's prior, per probe) when the rows hold it, else the attack
# SSIM minus the mean-image baseline SSIM of the same run. A point is private when
#     upper 95% bound of that gain <= PRIVATE_MARGIN
# and that bound exists (at least 2 seeds): one seed never earns the verdict.
PRIVATE_MARGIN = 0.05
PRIVACY_KEYS = ("ssim_gain_mean", "attack_ssim_mean")
CI = "_ci95"

DCS_TEXT = (
    "Defense Capability Score as VFLAIR defines it (Zou et al., ICLR 2024; FLAIR-THU/VFLAIR "
    "src/metrics/data_process.py): DCS = 1 / (1 + D), D = sqrt((1 - β)·max(AP - AP*, 0)² + "
    "β·max(MP* - MP, 0)²), β = 0.5, AP* = 0. MP is the test accuracy of the point and MP* the "
    "accuracy of the same configuration without any defense (the undefended run of the same "
    "seed, data and cut). AP is the attack's own success: 1 - MSE of the reconstructed inputs "
    "(pixels in [0, 1]) for inversion, the label accuracy for label inference (max(acc, 1 - acc) "
    "in a binary task), 1 when the protocol sends the labels to the server. Over seeds, MP and "
    "AP are averaged first and the DCS computed from the means, as VFLAIR does. DCS lies in "
    "[0.5, 1]; higher is better, 1 = ideal. It does not subtract the attacker's prior.")


def num(v: Any) -> float:
    """A row value as a float (NaN when empty or not a number)."""
    if v is None or isinstance(v, bool):
        return float("nan") if v is None else float(v)
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def _truthy(v: Any) -> bool:
    return str(v).strip().lower() in ("true", "1", "1.0", "yes")


def attack_performance(row: dict[str, Any]) -> float:
    """VFLAIR's attack performance AP in [0, 1] (see the module doc), NaN if no attack ran:
    1 - MSE for a reconstruction, the label accuracy (binary: max(acc, 1 - acc)) for labels."""
    mse = num(row.get("attack_mse_mean"))
    if not math.isnan(mse):
        return min(max(1.0 - mse, 0.0), 1.0)
    acc = num(row.get("label_accuracy"))
    if not math.isnan(acc):
        if num(row.get("chance_accuracy")) == 0.5:   # binary: a reversed labelling is turned round
            acc = max(acc, 1.0 - acc)
        return min(max(acc, 0.0), 1.0)
    if _truthy(row.get("labels_sent_to_server")) or num(row.get("label_leak")) == 1.0:
        return 1.0
    return float("nan")


def dcs(*, ap: float, mp: float, mp_ideal: float, ap_ideal: float = 0.0,
        beta: float = BETA) -> float:
    """VFLAIR's Defense Capability Score of one (AP, MP) point; NaN if an input is missing."""
    if any(math.isnan(x) for x in (ap, mp, mp_ideal, ap_ideal)):
        return float("nan")
    d_ap, d_mp = max(ap - ap_ideal, 0.0), max(mp_ideal - mp, 0.0)
    return 1.0 / (1.0 + math.sqrt((1 - beta) * d_ap ** 2 + beta * d_mp ** 2))


def row_dcs(row: dict[str, Any]) -> float:
    """DCS of a result row: MP* is `undefended_accuracy` (the row's own accuracy if undefended);
    AP the row's `attack_performance` where it holds one (a multi-seed row: the mean of its
    seeds' AP, as VFLAIR averages), else computed from the row."""
    mp = num(row.get("accuracy"))
    ideal = num(row.get("undefended_accuracy"))
    ap = num(row.get("attack_performance"))
    ap = attack_performance(row) if math.isnan(ap) else ap
    return dcs(ap=ap, mp=mp, mp_ideal=mp if math.isnan(ideal) else ideal)


def type_dcs(rows: Sequence[dict[str, Any]], setting: Sequence[str]
             ) -> dict[tuple, dict[str, float]]:
    """VFLAIR's type-level score per defense setting: T-DCS_t = the mean DCS over the rows of
    attack type t (`attack_kind`: inversion, label, gradient) at that setting (the values of
    the `setting` keys, e.g. the defense and its strength). NaN DCS rows are left out."""
    acc: dict[tuple, dict[str, list[float]]] = {}
    for r in rows:
        d, kind = num(r.get("dcs")), r.get("attack_kind")
        if math.isnan(d) or not kind:
            continue
        key = tuple(r.get(k) for k in setting)
        acc.setdefault(key, {}).setdefault(str(kind), []).append(d)
    return {k: {t: sum(v) / len(v) for t, v in kinds.items()} for k, kinds in acc.items()}


def comprehensive_dcs(t_dcs: dict[str, float], weights: dict[str, float] | None = None) -> float:
    """VFLAIR's comprehensive score: C-DCS = sum_t w_t T-DCS_t, equal weights by default."""
    if not t_dcs:
        return float("nan")
    w = weights or {t: 1.0 / len(t_dcs) for t in t_dcs}
    return sum(w[t] * v for t, v in t_dcs.items()) / sum(w[t] for t in t_dcs)


def leakage(metric: str, value: float) -> float:
    """The quantity minimised on the frontier: the metric itself, AUC as distance from 0.5."""
    return abs(value - 0.5) if metric == "label_auc" else value


def pareto_mask(utility: Sequence[float], leak: Sequence[float]) -> list[bool]:
    """True for points no other point beats (utility >= and leak <=, one strictly); NaN: False."""
    pts = [(u, l) for u, l in zip(utility, leak)]
    ok = [not (math.isnan(u) or math.isnan(l)) for u, l in pts]
    out = []
    for i, (u, l) in enumerate(pts):
        if not ok[i]:
            out.append(False)
            continue
        dominated = any(ok[j] and pts[j][0] >= u and pts[j][1] <= l and
                        (pts[j][0] > u or pts[j][1] < l) for j in range(len(pts)) if j != i)
        out.append(not dominated)
    return out


def privacy_key(rows: Sequence[dict[str, Any]], prefer: Sequence[str] = PRIVACY_KEYS) -> str | None:
    """The leakage key the private verdict uses: the first of `prefer` any row has."""
    return next((k for k in prefer if any(not math.isnan(num(r.get(k))) for r in rows)), None)


def private_threshold(row: dict[str, Any], key: str, margin: float = PRIVATE_MARGIN) -> float:
    """The largest allowed upper bound of `key`: the margin for a gain over the prior, the
    mean-image baseline SSIM plus the margin for raw attack SSIM (NaN when unknown)."""
    if key == "attack_ssim_mean":
        return num(row.get("baseline_ssim_mean")) + margin
    return margin


def upper_bound(row: dict[str, Any], key: str) -> float:
    """Mean + 95% half-width of `key` (NaN without an interval, i.e. one seed)."""
    return num(row.get(key)) + num(row.get(key + CI))


def is_private(row: dict[str, Any], key: str | None, margin: float = PRIVATE_MARGIN) -> bool:
    """True when the upper 95% bound of the row's leakage is at or under its threshold."""
    if key is None:
        return False
    ub, thr = upper_bound(row, key), private_threshold(row, key, margin)
    return not (math.isnan(ub) or math.isnan(thr)) and ub <= thr


def private_text(key: str | None, margin: float = PRIVATE_MARGIN) -> str:
    """The verdict rule in words."""
    if key is None:
        return "No inversion leakage in these rows: no privacy verdict."
    what = ("the attack's SSIM gain over the attacker's prior (ssim_gain_mean)"
            if key == "ssim_gain_mean" else
            "the attack SSIM above the mean-image baseline SSIM (no prior-aware gain in these rows)"
            if key == "attack_ssim_mean" else key)
    return (f"Private: the upper bound of the 95% Student-t interval over seeds of {what} is at "
            f"most {margin:g}. A single seed has no interval, so it is never marked private.")


def present_metrics(rows: Sequence[dict[str, Any]]) -> list[tuple[str, str]]:
    """The leakage metrics at least one row has a value for."""
    return [(k, label) for k, label in LEAK_METRICS
            if any(not math.isnan(num(r.get(k))) for r in rows)]


def point_label(row: dict[str, Any], axes: Sequence[str]) -> str:
    """Short text naming a point by its grid values (e.g. 'sigma=0.02 cut=pool2')."""
    return " ".join(f"{a}={show(row.get(a))}" for a in axes) or str(row.get("cell", ""))


def show(v: Any) -> str:
    """A grid value as text ('none' for an empty defense list)."""
    if v is None or (isinstance(v, float) and math.isnan(v)) or v == "":
        return "none"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def frontier_plot(rows: Sequence[dict[str, Any]], metric: str, label: str, path: str | Path, *,
                  axes: Sequence[str] = (), color_by: str | None = None,
                  title: str = "") -> list[bool]:
    """Scatter accuracy vs `metric`, Pareto points ringed and joined; returns the Pareto mask."""
    from slsec.report.plots import pyplot
    plt = pyplot()

    acc = [num(r.get("accuracy")) for r in rows]
    val = [num(r.get(metric)) for r in rows]
    mask = pareto_mask(acc, [leakage(metric, v) for v in val])
    pkey = privacy_key(rows)
    private = [is_private(r, pkey) for r in rows]
    acc_ci = [num(r.get("accuracy" + CI)) for r in rows]
    val_ci = [num(r.get(metric + CI)) for r in rows]
    with_ci = [i for i in range(len(rows)) if not (math.isnan(acc[i]) or math.isnan(val[i]))
               and not (math.isnan(acc_ci[i]) and math.isnan(val_ci[i]))]
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        groups.setdefault(show(r.get(color_by)) if color_by else "", []).append(i)
    fig, ax = plt.subplots(figsize=(7.5, 5.2), dpi=120)
    cmap = plt.get_cmap("tab10")
    for gi, (g, idx) in enumerate(groups.items()):
        idx = [i for i in idx if not (math.isnan(acc[i]) or math.isnan(val[i]))]
        ax.scatter([val[i] for i in idx], [acc[i] for i in idx], s=46, color=cmap(gi % 10),
                   label=f"{color_by}={g}" if color_by else None, zorder=3, alpha=0.9)
    if with_ci:   # 95% t-intervals over seeds, both directions
        ax.errorbar([val[i] for i in with_ci], [acc[i] for i in with_ci],
                    xerr=[0.0 if math.isnan(val_ci[i]) else val_ci[i] for i in with_ci],
                    yerr=[0.0 if math.isnan(acc_ci[i]) else acc_ci[i] for i in with_ci],
                    fmt="none", ecolor="#555", elinewidth=0.9, capsize=2.5, zorder=2,
                    label="95% CI over seeds")
    if any(private):
        idx = [i for i in range(len(rows)) if private[i]]
        ax.scatter([val[i] for i in idx], [acc[i] for i in idx], marker="s", s=300,
                   facecolors="none", edgecolors="green", linewidths=1.6, zorder=4,
                   label=f"private (upper 95% bound of {pkey} within threshold)")
    if pkey == metric:   # the private threshold on its own axis
        thr = _mean([private_threshold(r, pkey) for r in rows])
        if not math.isnan(thr):
            ax.axvline(thr, color="green", lw=1, ls="-.", zorder=1)
            ax.annotate("private threshold", (thr, ax.get_ylim()[0]), textcoords="offset points",
                        xytext=(3, 4), fontsize=7, color="green", rotation=90, va="bottom")
    note_axes = [a for a in axes if a != color_by]
    for i, r in enumerate(rows):
        if not (math.isnan(acc[i]) or math.isnan(val[i])) and note_axes:
            ax.annotate(point_label(r, note_axes), (val[i], acc[i]),
                        textcoords="offset points", xytext=(5, 4), fontsize=7, color="#444")
    front = sorted((val[i], acc[i]) for i in range(len(rows)) if mask[i])
    if front:
        if metric == "label_auc":
            front = sorted(front, key=lambda p: abs(p[0] - 0.5))
        ax.plot([p[0] for p in front], [p[1] for p in front], color="crimson", lw=1.2,
                ls="--", zorder=2)
        ax.scatter([p[0] for p in front], [p[1] for p in front], s=150, facecolors="none",
                   edgecolors="crimson", linewidths=1.6, zorder=4, label="Pareto (best trade-off)")
    base_key, base_name = BASELINES.get(metric, (None, ""))
    base = (0.5 if metric == "label_auc" else
            _mean([num(r.get(base_key)) for r in rows]) if base_key else float("nan"))
    if not math.isnan(base):
        # named in the legend, not beside the line, where a label could cover a point
        ax.axvline(base, color="gray", lw=1, ls=":", zorder=1, label=base_name)
    # the same configurations without defense (where the defenses started from), coloured
    # like their group (e.g. their cut): each cut's undefended run is its own training run
    colour = {g: cmap(gi % 10) for gi, g in enumerate(groups)}
    refs = sorted({(num(r.get(f"undefended_{metric}")), num(r.get("undefended_accuracy")),
                    show(r.get(color_by)) if color_by else "") for r in rows})
    refs = [p for p in refs if not (math.isnan(p[0]) or math.isnan(p[1]))]
    for k, (x, y, g) in enumerate(refs):
        ax.scatter([x], [y], marker="X", s=80, color=colour.get(g, "black"), edgecolors="black",
                   linewidths=0.8, zorder=3, label="undefended run (X)" if k == 0 else None)
    ax.set_xlabel(f"{label}  (lower = less leakage)" if metric != "label_auc"
                  else f"{label}  (0.5 = no leakage)")
    ax.set_ylabel("test accuracy  (higher = better)")
    ax.margins(x=0.08, y=0.12)
    ax.set_title(title or f"privacy/utility frontier: accuracy vs {label}", fontsize=10)
    ax.grid(alpha=0.3)
    legend_outside(ax, fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return mask


def _mean(xs: Sequence[float]) -> float:
    xs = [x for x in xs if not math.isnan(x)]
    return sum(xs) / len(xs) if xs else float("nan")
